"""Raw kernel calls the worker makes on itself: re-root the runtime binds on overlays, load a BPF
seccomp program, apply Landlock rules, build the job's own-pid guard, give a job its own /tmp and
/proc, drop capabilities, hide the command line.

Runs inside the sandbox, so it uses only ctypes and the standard library (no libseccomp there:
the BPF bytes were compiled by airlock before the worker started). Numbers are the Linux UAPI
values; the Landlock syscall numbers are the same on every architecture.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from collections.abc import Sequence
from typing import Final

from airlock.errors import SandboxError

__all__ = [
    "UNSAFE_NO_LANDLOCK_ENV",
    "apply_landlock",
    "drop_capabilities",
    "hide_command_line",
    "landlock_abi",
    "load_bpf",
    "mask_own_fds",
    "own_pid_guard",
    "private_proc",
    "private_tmp",
    "privatise_shared_mappings",
    "runtime_view",
    "set_dumpable",
    "set_no_new_privs",
    "tmp_inodes",
]

#: test/diagnosis only: pretend the kernel has no Landlock, to prove the other layers hold alone
UNSAFE_NO_LANDLOCK_ENV: Final = "AIRLOCK_SANDBOX_UNSAFE_NO_LANDLOCK"

_LIBC: Final = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long

_PR_SET_DUMPABLE: Final = 4
_PR_SET_SECCOMP: Final = 22
_PR_SET_NO_NEW_PRIVS: Final = 38
_SECCOMP_MODE_FILTER: Final = 2
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522
_CLONE_NEWNS: Final = 0x00020000
_MS_RDONLY: Final = 0x1
_MS_NOSUID: Final = 0x2
_MS_NODEV: Final = 0x4
_MS_NOEXEC: Final = 0x8
_MS_BIND: Final = 0x1000
_MS_MOVE: Final = 0x2000
_MS_REC: Final = 0x4000
_MS_PRIVATE: Final = 0x40000
_MNT_DETACH: Final = 2
_MS_REMOUNT: Final = 0x20
#: pivot_root(2) has no libc wrapper; its number differs per architecture (asm/unistd.h)
_SYS_PIVOT_ROOT: Final = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203,
                          "s390x": 217, "i686": 217, "armv7l": 218}.get(os.uname().machine)  # fmt: skip

# classic BPF, as seccomp runs it (linux/filter.h, linux/seccomp.h)
_BPF_LD_W_ABS: Final = 0x20
_BPF_JEQ_K: Final = 0x15
_BPF_RET_K: Final = 0x06
_SECCOMP_RET_ALLOW: Final = 0x7FFF0000
_SECCOMP_RET_ERRNO: Final = 0x00050000
_SECCOMP_DATA_ARGS: Final = 16

_SYS_LANDLOCK_CREATE_RULESET: Final = 444
_SYS_LANDLOCK_ADD_RULE: Final = 445
_SYS_LANDLOCK_RESTRICT_SELF: Final = 446
_LANDLOCK_CREATE_RULESET_VERSION: Final = 1
_LANDLOCK_RULE_PATH_BENEATH: Final = 1

# filesystem rights (ABI 1..5)
FS_EXECUTE: Final = 1 << 0
FS_WRITE_FILE: Final = 1 << 1
FS_READ_FILE: Final = 1 << 2
FS_READ_DIR: Final = 1 << 3
FS_REMOVE_DIR: Final = 1 << 4
FS_REMOVE_FILE: Final = 1 << 5
FS_MAKE_CHAR: Final = 1 << 6
FS_MAKE_DIR: Final = 1 << 7
FS_MAKE_REG: Final = 1 << 8
FS_MAKE_SOCK: Final = 1 << 9
FS_MAKE_FIFO: Final = 1 << 10
FS_MAKE_BLOCK: Final = 1 << 11
FS_MAKE_SYM: Final = 1 << 12
FS_REFER: Final = 1 << 13
FS_TRUNCATE: Final = 1 << 14
FS_IOCTL_DEV: Final = 1 << 15
_FS_BY_ABI: Final = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_RIGHTS: Final = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

READ_ONLY: Final = FS_READ_FILE | FS_READ_DIR
READ_WRITE: Final = (
    READ_ONLY | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG | FS_MAKE_SYM
    | FS_TRUNCATE | FS_REFER
)  # fmt: skip
_NET_BIND_TCP: Final = 1
_NET_CONNECT_TCP: Final = 2
_SCOPE_ABSTRACT_UNIX: Final = 1
_SCOPE_SIGNAL: Final = 2


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64))


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _fail(what: str) -> SandboxError:
    err = ctypes.get_errno()
    return SandboxError(f"{what} failed: {os.strerror(err)} (errno {err})")


_PROT_READ: Final = 1
_PROT_WRITE: Final = 2
_PROT_EXEC: Final = 4
_MAP_PRIVATE: Final = 0x02
_MAP_FIXED: Final = 0x10
_MAP_ANONYMOUS: Final = 0x20
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_LIBC.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def _read_own(start: int, end: int) -> bytes:
    """The bytes of ``[start, end)`` of this process, page by page through a pipe: the kernel
    copies each page, and a page it cannot read (a shared file mapping past the file's end) is
    EFAULT there, read as zeros, instead of a SIGBUS in Python. (``/proc/self/mem`` is not an
    option: a non-dumpable process cannot open it inside the sandbox's user namespace.)"""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pages = []
        for at in range(start, end, _PAGE):
            view = memoryview((ctypes.c_char * _PAGE).from_address(at)).cast("B")
            try:
                written = os.write(write_end, view)
            except OSError:
                written = 0
            page = os.read(read_end, written) if written else b""
            pages.append(page.ljust(_PAGE, b"\0"))
        return b"".join(pages)
    finally:
        os.close(read_end)
        os.close(write_end)


def privatise_shared_mappings() -> int:
    """Replace every shared mapping (``MAP_SHARED``, an ``s`` in ``/proc/self/maps``) of the
    calling process with a private anonymous copy of its bytes, same address and protection.

    A job is forked from the warm worker and inherits its mappings: a shared one is the *same
    memory* in the worker and in every job, so one job could write what the next job (another
    model) reads, or change what the worker itself reads there (onnxruntime's telemetry kept its
    SQLite shared-memory index in the worker that way). A job calls this before anything else;
    afterwards no page it can write is seen by any other process. Returns how many it replaced.
    """
    regions = []
    with open("/proc/self/maps", "rb") as handle:
        for line in handle:
            fields = line.split()
            perms = fields[1].decode()
            if perms[3] == "s":
                start, end = (int(x, 16) for x in fields[0].split(b"-"))
                regions.append((start, end, perms))
    if not regions:
        return 0
    for start, end, perms in regions:
        data = _read_own(start, end) if perms[0] == "r" else b""
        flags = _MAP_FIXED | _MAP_PRIVATE | _MAP_ANONYMOUS
        if _LIBC.mmap(start, end - start, _PROT_READ | _PROT_WRITE, flags, -1, 0) != start:
            raise _fail(f"mmap over the shared mapping at {start:#x}")
        ctypes.memmove(start, data, len(data))
        prot = (_PROT_READ if perms[0] == "r" else 0) | (_PROT_WRITE if perms[1] == "w" else 0)
        prot |= _PROT_EXEC if perms[2] == "x" else 0
        if _LIBC.mprotect(start, end - start, prot) != 0:
            raise _fail(f"mprotect of the private copy at {start:#x}")
    return len(regions)


def set_no_new_privs() -> None:
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_NO_NEW_PRIVS)")


def set_dumpable(value: bool) -> None:
    """Non-dumpable processes cannot be ptraced or have /proc/PID/mem opened by same-uid peers."""
    if _LIBC.prctl(_PR_SET_DUMPABLE, int(value), 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_DUMPABLE)")


def drop_capabilities() -> None:
    """Empty the effective, permitted, inheritable and ambient sets (capabilities of the sandbox's
    user namespace: the worker keeps CAP_SYS_ADMIN there only to mount each job's /tmp)."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if _LIBC.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
        raise _fail("prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    if _LIBC.capset(header, data) != 0:
        raise _fail("capset")


#: tmpfs bytes per inode a job's /tmp may use. ``size=`` caps only file *contents*: empty files,
#: directories, hard links and short symlinks cost no block but an inode, a dentry and a name
#: (about 1 KiB of kernel memory each, outside RLIMIT_AS and every cgroup-less budget), and a
#: tmpfs defaults to millions of inodes. One inode per 16 KiB keeps that below 1/16 of the size.
TMP_BYTES_PER_INODE: Final = 16 << 10
#: enough inodes for a runtime's own scratch files even under a tiny ``tmpfs_bytes``
TMP_MIN_INODES: Final = 256


def tmp_inodes(size_bytes: int) -> int:
    """The inode cap (``nr_inodes``) of a job's private /tmp of ``size_bytes``: links count too."""
    return max(TMP_MIN_INODES, int(size_bytes) // TMP_BYTES_PER_INODE)


def _mount(source: bytes | None, target: str, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    if _LIBC.mount(source, target.encode(), fstype, flags, data) != 0:
        raise _fail(f"mount {target}")


def runtime_view(views: Sequence[str], empty: str, new_root: str) -> bool:
    """Give the worker a root in which every neutral runtime directory is an overlay, not a bind.

    ``/proc/PID/mountinfo`` prints, for every mount, its root *within its filesystem*: a bind of
    ``/root/.pyenv/versions/3.11.7`` shows that path wherever it is mounted, to every process of the
    namespace and of every namespace copied from it (each job's). An overlay's root is its own
    ``/``, and its options show only the ``lowerdir`` strings given here (the neutral path itself).

    bubblewrap leaves the worker in a user namespace nested below the one that owns its mounts
    (``--disable-userns``), where they are locked: none can be unmounted. So, as containers do:
    a new mount namespace (owned by the worker's user namespace), a fresh tmpfs on ``new_root``,
    every top-level entry of ``/`` bound again into it (recursively; symlinks copied) except
    ``/airlock``, under which each runtime directory (``views``) is a read-only overlay of the old
    bind (and ``empty``: one lower layer alone is refused); the tmpfs made read-only; then
    ``pivot_root`` into it and the old root detached with every bind of a host runtime path. Files
    already open or mapped from an old bind stay valid (their paths then read relative to it:
    ``/bin/python3.11``). Runs in the worker before its launch filter, which refuses
    ``pivot_root`` and ``umount2``. Returns False, changing nothing, where the kernel does not let
    a user namespace mount an overlay (before Linux 5.11).
    """
    if not views:
        return False
    if _LIBC.unshare(_CLONE_NEWNS) != 0:
        raise _fail("unshare(CLONE_NEWNS)")
    _mount(b"none", "/", None, _MS_REC | _MS_PRIVATE, None)
    _mount(b"tmpfs", new_root, b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755,size=64k")
    top = os.path.dirname(views[0])  # "/airlock"
    for box in views:
        os.makedirs(new_root + box, mode=0o755)
        options = f"lowerdir={box}:{empty}".encode()
        flags = _MS_RDONLY | _MS_NOSUID | _MS_NODEV
        if _LIBC.mount(b"overlay", (new_root + box).encode(), b"overlay", flags, options) != 0:
            if _LIBC.umount2(new_root.encode(), _MNT_DETACH) != 0:
                raise _fail(f"umount2({new_root})")
            return False
    for name in sorted(os.listdir("/")):
        old, new = "/" + name, new_root + "/" + name
        if old == top:
            continue
        if os.path.islink(old):
            os.symlink(os.readlink(old), new)
            continue
        if os.path.isdir(old):
            os.mkdir(new, 0o755)
        else:
            os.close(os.open(new, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        _mount(old.encode(), new, None, _MS_BIND | _MS_REC, None)
    if _SYS_PIVOT_ROOT is None:
        raise SandboxError(f"pivot_root: syscall number unknown on {os.uname().machine}")
    old_root = new_root + top + "/.old"
    os.mkdir(old_root, 0o700)
    _mount(None, new_root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    if _LIBC.syscall(_SYS_PIVOT_ROOT, new_root.encode(), old_root.encode()) != 0:
        raise _fail("pivot_root")
    os.chdir("/")
    if _LIBC.umount2((top + "/.old").encode(), _MNT_DETACH) != 0:
        raise _fail("umount2(old root)")
    return True


def private_tmp(path: str, size_bytes: int) -> None:
    """A mount namespace of the caller's own with a fresh tmpfs on ``path`` (cwd too), capped in
    bytes (``size``) and in inodes (:func:`tmp_inodes`), so names cannot hold kernel memory.

    No runtime directory lives below ``path`` inside the sandbox (they are all under ``/airlock``,
    wherever they are on the host), so the fresh tmpfs hides nothing the job needs.
    """
    if _LIBC.unshare(_CLONE_NEWNS) != 0:
        raise _fail("unshare(CLONE_NEWNS)")
    if _LIBC.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise _fail("mount --make-rprivate /")
    options = f"size={int(size_bytes)},nr_inodes={tmp_inodes(size_bytes)},mode=0700".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _LIBC.mount(b"tmpfs", path.encode(), b"tmpfs", flags, options) != 0:
        raise _fail(f"mount tmpfs on {path}")
    os.chdir(path)  # the old cwd is the worker's /tmp, which this job must not reach


def private_proc(proc: str, staging: str) -> None:
    """Give the calling process a ``proc`` of its own: the system-wide entries, and no pid but its own.

    ``/proc/PID`` of the worker (pid 1), of every sibling job and of each of the caller's own
    threads (``/proc/TID`` resolves although ``readdir`` does not list it) would otherwise stay
    readable: their ``stat``, ``status``, mount tables, and a thread's ``fd`` directory, which
    :func:`mask_own_fds` cannot cover for threads that do not exist yet. So, in the caller's
    mount namespace (:func:`private_tmp`): a tmpfs on ``staging`` holding a bind of every entry of
    ``proc`` that is not a pid (``cpuinfo``, ``meminfo``, ``sys``: an allowlist by rule, not by
    name, so runtimes keep what they read), a bind of the caller's own ``/proc/PID``, ``self`` as a
    link to it and ``thread-self`` as a link into its (masked) ``task``; made read-only, moved over
    ``proc``. Any other pid, later ones included, is not there (ENOENT). The files that name other
    pids say nothing of them: ``loadavg`` is a copy whose last field (the pid namespace's newest
    pid) is the job's own, ``sys/kernel/ns_last_pid`` is covered with ``/dev/null`` and ``locks``
    (every lock of the system with its holder's pid) is empty.
    """
    pid = str(os.getpid())
    os.mkdir(staging, 0o700)
    _mount(b"tmpfs", staging, b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, b"mode=0755,size=64k")
    for name in [pid, *(n for n in os.listdir(proc) if not n.isdigit())]:
        old, new = f"{proc}/{name}", f"{staging}/{name}"
        if name == "self":
            os.symlink(pid, new)
        elif name == "locks":  # every lock of the system with its holder's pid (siblings' too): none
            os.close(os.open(new, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))
        elif name == "loadavg":  # its last field is the pid namespace's newest pid: say the job's own
            with open(old, "rb") as handle:
                fields = handle.read().split()
            fd = os.open(new, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444)
            with os.fdopen(fd, "wb") as handle:
                handle.write(b" ".join([*fields[:-1], pid.encode()]) + b"\n")
        elif name == "thread-self":
            os.symlink(f"{pid}/task/{pid}", new)
        elif os.path.islink(old):
            os.symlink(os.readlink(old), new)
        else:
            if os.path.isdir(old):
                os.mkdir(new, 0o555)
            else:
                os.close(os.open(new, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))
            _mount(old.encode(), new, None, _MS_BIND | _MS_REC, None)
    # the namespace's newest pid (a sibling job, a thread of one, as it starts): nothing to read
    last_pid = f"{staging}/sys/kernel/ns_last_pid"
    if os.path.exists(last_pid):
        _mount(b"/dev/null", last_pid, None, _MS_BIND, None)
        _mount(None, last_pid, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NOEXEC, None)
    _mount(None, staging, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    _mount(staging.encode(), proc, None, _MS_MOVE, None)
    os.rmdir(staging)


#: directories a job never needs, covered with an empty read-only tmpfs in its mount namespace
_HIDDEN_DIRS: Final = ("/dev/pts",)


def mask_own_fds(names: Sequence[str] = ("fd", "task", "map_files")) -> None:
    """Cover ``/proc/PID/{fd,task,map_files}`` of the calling process with empty read-only tmpfs.

    Then ``/proc/self/fd/N``, ``/dev/fd/N`` and ``/proc/thread-self/fd/N`` no longer resolve:
    the job can neither reopen a descriptor it was given (the model) with other access modes nor
    read where it points on the host. Needs the private mount namespace of :func:`private_tmp`.
    Known gap: a thread's own ``/proc/TID/fd`` (TID not the pid) is not covered, so the model's
    descriptor must not be writable in the first place (airlock passes a read-only one).

    ``/dev/pts`` is covered too: bubblewrap's devpts lets anyone open ``ptmx`` (mode 666), and a
    job has no use for terminals: without Landlock a job opened hundreds of pseudo-terminals
    (kernel memory, the host-wide ``kernel.pty.max``, and the tty line-discipline attack surface).

    A GPU job passes ``names`` without ``task``: the NVIDIA driver names its threads through
    ``/proc/self/task/<tid>/comm`` and fails without it (airlock.sandbox._gpu).
    """
    pid = os.getpid()
    flags = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    targets = [f"/proc/{pid}/{name}" for name in names]
    targets += [path for path in _HIDDEN_DIRS if os.path.isdir(path)]
    for target in targets:
        if _LIBC.mount(b"tmpfs", target.encode(), b"tmpfs", flags, b"size=4k,mode=0555") != 0:
            raise _fail(f"mount tmpfs on {target}")


def hide_command_line(title: bytes) -> None:
    """Overwrite this process's argv area so /proc/PID/cmdline shows ``title`` only."""
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[48 - 3]), int(fields[49 - 3])  # arg_start, arg_end: fields 48 and 49
    if end <= start:
        return
    text = title[: end - start - 1]
    ctypes.memset(start, 0, end - start)
    ctypes.memmove(start, text, len(text))


def own_pid_guard(
    rules: Sequence[tuple[int, int]], pid: int, readers: Sequence[tuple[int, int]] = ()
) -> bytes:
    """A seccomp program that refuses each (syscall, pid argument) unless the pid is ``pid``.

    ``rules`` are the signal calls, where 0 means the caller's process group: only ``pid`` passes.
    ``readers`` are the calls that read a process's state (``getsid``, ``sched_getaffinity`` ...),
    where 0 means the caller: ``pid`` and 0 pass; for any other pid, alive or not, the same EPERM,
    so a job can neither read another process nor learn that it exists.
    Only the low 32 bits of the argument are compared: the kernel reads a pid as a 32-bit int.
    Architecture checks are left to the filters compiled by libseccomp, which kill other ABIs.
    """
    low = 0 if sys.byteorder == "little" else 4
    entries = [(number, index, False) for number, index in rules]
    entries += [(number, index, True) for number, index in readers]
    count = len(entries)
    starts, at = [], 1 + count + 1
    for _, _, zero in entries:
        starts.append(at)
        at += 3 if zero else 2
    allow, deny = at, at + 1
    code = [(_BPF_LD_W_ABS, 0, 0, 0)]
    for i, (number, _, _) in enumerate(entries):
        code.append((_BPF_JEQ_K, starts[i] - (1 + i) - 1, 0, number))
    code.append((_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW))
    for start, (_, index, zero) in zip(starts, entries, strict=True):
        code.append((_BPF_LD_W_ABS, 0, 0, _SECCOMP_DATA_ARGS + 8 * index + low))
        code.append((_BPF_JEQ_K, allow - (start + 1) - 1, 0 if zero else deny - (start + 1) - 1, pid))
        if zero:
            code.append((_BPF_JEQ_K, allow - (start + 2) - 1, deny - (start + 2) - 1, 0))
    code.append((_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW))
    code.append((_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | errno.EPERM))
    if len(code) != deny + 1 or any(not 0 <= jump <= 255 for _, jt, jf, _ in code for jump in (jt, jf)):
        raise SandboxError("seccomp: own-pid guard has too many rules for 8-bit jumps")
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in code)


def load_bpf(program: bytes) -> None:
    """Install a compiled seccomp program on the calling thread (and its future threads)."""
    if not program or len(program) % 8 or len(program) // 8 > 0xFFFF:
        raise SandboxError(f"seccomp: program of {len(program)} bytes is not a valid BPF program")
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    set_no_new_privs()
    if _LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise _fail("prctl(PR_SET_SECCOMP)")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled.

    ``AIRLOCK_SANDBOX_UNSAFE_NO_LANDLOCK=1`` makes it 0 on purpose (tests and diagnosis only):
    the escape suite runs that way to prove every other protection holds without Landlock.
    """
    if os.environ.get(UNSAFE_NO_LANDLOCK_ENV) == "1":
        return 0
    version = _LIBC.syscall(
        _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION
    )
    return int(version) if version > 0 else 0


def apply_landlock(rules: Sequence[tuple[str, int]]) -> int:
    """Restrict the calling process to ``rules`` (path, rights); everything else is refused.

    Also refuses every TCP bind/connect (ABI >= 4) and scopes signals and abstract Unix sockets to
    the process's own domain (ABI >= 6). Returns the ABI used. Paths that do not exist are skipped.
    """
    abi = landlock_abi()
    if abi <= 0:
        raise SandboxError("landlock: not supported by this kernel")
    handled_fs = _FS_BY_ABI.get(abi, _FS_BY_ABI[5])
    attr = _RulesetAttr(handled_fs, 0, 0)
    size = 8
    if abi >= 4:
        attr.net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
        size = 24
    ruleset = _LIBC.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        raise _fail("landlock_create_ruleset")
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = rights & handled_fs
                if not os.path.isdir(path):
                    allowed &= _FILE_RIGHTS
                beneath = _PathBeneath(allowed, fd)
                if _LIBC.syscall(
                    _SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(beneath), 0
                ):
                    raise _fail(f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        set_no_new_privs()
        if _LIBC.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise _fail("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi
