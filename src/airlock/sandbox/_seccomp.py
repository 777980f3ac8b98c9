"""The two seccomp filters, compiled by airlock (trusted side) into BPF bytes.

* **launch** filter: handed to bubblewrap (``--seccomp FD``) and in force from the worker's first
  instruction. Allows exec and fork (the worker has to start and fork jobs) but refuses network
  sockets, ptrace, namespaces, mounts, kernel-attack-surface syscalls (bpf, io_uring, keyctl,
  perf_event_open, userfaultfd, module loading, ...), and every call that acts on another
  process by pid (prlimit64, setpriority, sched_set*, ioprio_set, migrate/move_pages, pidfd_open,
  ...) unless the pid is 0, i.e. the caller itself. Only ``unshare(CLONE_NEWNS)`` and ``mount``
  stay open: the worker gives each job its own mount namespace with a private /tmp.
* **job** filter: loaded by each job process after its imports and before it reads a single
  untrusted byte. Adds: no exec, no new processes (threads still work: ``clone`` with
  ``CLONE_THREAD``), no sockets at all (the inherited socket keeps working), no mounts or
  namespaces, no memory outside the address-space limit (memfd_create, SysV shm/msg/sem, POSIX
  message queues), no process groups or sessions, no chmod/chown/xattrs (ACLs): a read-only
  model file stays read-only; no inotify/fanotify (their instances, groups, watches and marks
  count against the host user's budget, which no limit of the job bounds), no pipe grown past its
  default size (pipe buffers too), no epoll in a CPU job (items multiply past the descriptors).
* **own-pid** guard (see :func:`own_pid_rules`): each job builds a tiny third program with its own
  pid, so that signals (kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo) reach only itself,
  and the calls that read a process by pid (getsid, getpgid, sched_get*, getpriority, ioprio_get)
  read only itself: another pid, alive or not, gets the same EPERM.

libseccomp adds the architecture check itself: a syscall made through another ABI (i386, x32)
kills the process, so the lists cannot be side-stepped that way. The action for a refused call is
an errno, so a payload sees a clean error and the worker reports it.
"""

from __future__ import annotations

import enum
import errno
import functools
import os
from typing import Any, Final

from airlock.errors import SandboxError

__all__ = ["FilterStage", "compile_filter", "own_pid_reader_rules", "own_pid_rules", "seccomp_available"]

_AF_UNIX: Final = 1
_CLONE_NEWNS: Final = 0x00020000
_PRIO_PROCESS: Final = 0
_IOPRIO_WHO_PROCESS: Final = 1
_CLONE_THREAD: Final = 0x00010000
_CLONE_NAMESPACES: Final = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)

#: refused in both stages: debugging other processes, namespaces and mounts, kernel attack surface
_ALWAYS_DENIED: Final = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "pidfd_open", "process_madvise", "process_mrelease",
    "setns", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl",
    "syslog", "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "vhangup", "uselib",
)  # fmt: skip

#: calls whose first argument names a process: refused unless it is 0 (the caller itself)
_OWN_PROCESS_ONLY: Final = (
    "prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
    "migrate_pages", "move_pages", "get_robust_list", "setpgid",
)  # fmt: skip

#: refused in the job stage only: running programs, new processes, any new socket or connection,
#: mounts and namespaces, memory that RLIMIT_AS does not count, process groups, mode changes
_JOB_DENIED: Final = (
    "execve", "execveat", "fork", "vfork",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "unshare", "mount", "setpgid", "setsid", "pidfd_send_signal",
    "memfd_create", "memfd_secret", "shmget", "shmat", "shmctl", "shmdt",
    "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "fchownat", "lchown",
    "setxattr", "lsetxattr", "fsetxattr", "setxattrat", "removexattr", "lremovexattr", "fremovexattr",
    "removexattrat",
    # kernel objects charged to a budget of the *host* user (ucounts of the initial user namespace:
    # 128 inotify instances, fanotify groups, their watches and marks), shared with the caller (or
    # every sandbox of uid 65534) and bounded by no limit of the job: a job holding all 128 made
    # inotify_init fail for every process of that uid on the host (outside review 26)
    "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init", "fanotify_mark",
)  # fmt: skip

#: fcntl F_SETOWN, F_SETSIG, F_SETOWN_EX and ioctl FIOSETOWN, SIOCSPGRP: who gets SIGIO for a file
_FCNTL_OWNER: Final = (8, 10, 15)
_IOCTL_OWNER: Final = (0x8901, 0x8902)
#: fcntl F_SETPIPE_SZ: pipe buffers are charged to the *host* user (one budget, 64 MiB by default,
#: shared with the caller or every sandbox of its uid); past it, that user's pipes cannot grow and
#: new ones get 2 pages. A job keeps the default size: at most ``open_files`` pipes of 16 pages
_FCNTL_PIPE_SIZE: Final = 1031

#: signals: allowed only to the job itself; (syscall, index of its pid argument)
_SIGNAL_CALLS: Final = (
    ("kill", 0),
    ("tkill", 0),
    ("tgkill", 0),
    ("rt_sigqueueinfo", 0),
    ("rt_tgsigqueueinfo", 0),
)


#: calls that read another process's state by pid (index of the pid argument): a job may ask
#: only about itself (0 or its own pid), enforced by the own-pid guard; else it could list the
#: worker and its sibling jobs and read what they set on themselves (nice value, affinity)
_PID_READERS: Final = (
    ("getsid", 0), ("getpgid", 0), ("sched_getaffinity", 0), ("sched_getparam", 0),
    ("sched_getscheduler", 0), ("sched_getattr", 0), ("sched_rr_get_interval", 0),
    ("getpriority", 1), ("ioprio_get", 1),
)  # fmt: skip


class FilterStage(enum.Enum):
    LAUNCH = "launch"
    JOB = "job"


def _import_pyseccomp() -> object:
    try:
        import pyseccomp  # type: ignore[import-untyped]
    except (ImportError, OSError, AttributeError) as exc:
        raise SandboxError(
            "seccomp: cannot load libseccomp through pyseccomp "
            f"({exc}); install model-airlock[sandbox] and the system libseccomp2"
        ) from exc
    return pyseccomp


def seccomp_available() -> tuple[bool, str]:
    """Whether filters can be compiled here, and why not."""
    try:
        compile_filter(FilterStage.JOB)
    except SandboxError as exc:
        return False, str(exc)
    return True, "libseccomp via pyseccomp"


#: epoll in a CPU job: an item is keyed by file *and descriptor number* and outlives the number while
#: the file stays open, so ``dup2`` onto spare numbers multiplies items far past ``open_files``
#: (460,000 items, 100 MB of kernel memory outside RLIMIT_AS, from 200 descriptors), each counted
#: against the host user's ``fs.epoll.max_user_watches`` (outside review 26). No loader needs an
#: event loop in a job (asyncio already has no socketpair there). A GPU job keeps epoll: whether
#: the driver needs it is unverified, and its memory is bounded by the cgroup a GPU policy requires.
_JOB_EPOLL: Final = ("epoll_create", "epoll_create1")


@functools.cache
def compile_filter(stage: FilterStage, *, gpu: bool = False) -> bytes:
    """The BPF program of ``stage`` for the native architecture, as raw ``sock_filter`` bytes;
    ``gpu``: the job filter of a GPU worker (it keeps epoll, see :data:`_JOB_EPOLL`)."""
    sc = _import_pyseccomp()
    native = sc.Arch.NATIVE  # type: ignore[attr-defined]
    deny = sc.ERRNO(errno.EPERM)  # type: ignore[attr-defined]
    flt = sc.SyscallFilter(sc.ALLOW)  # type: ignore[attr-defined]

    def rule(action: int, name: str, *args: object) -> None:
        if sc.resolve_syscall(native, name) < 0:  # type: ignore[attr-defined]
            return  # not a syscall on this architecture
        flt.add_rule(action, name, *args)

    for name in _ALWAYS_DENIED:
        rule(deny, name)
    arg = sc.Arg  # type: ignore[attr-defined]
    ne = sc.NE  # type: ignore[attr-defined]
    for name in _OWN_PROCESS_ONLY:
        rule(deny, name, arg(0, ne, 0))
    # setpriority(which, who) / ioprio_set(which, who): only "this process" (who 0); never a
    # process group or a user (all processes of the sandbox uid: the worker and every job)
    rule(deny, "setpriority", arg(0, ne, _PRIO_PROCESS))
    rule(deny, "setpriority", arg(1, ne, 0))
    rule(deny, "ioprio_set", arg(0, ne, _IOPRIO_WHO_PROCESS))
    rule(deny, "ioprio_set", arg(1, ne, 0))
    for flag in _CLONE_NAMESPACES:
        rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))  # type: ignore[attr-defined]
    # clone3 passes its flags in memory a filter cannot read: report "not implemented" so libc falls
    # back to clone(2), whose flags the rules above and below do see.
    rule(sc.ERRNO(errno.ENOSYS), "clone3")  # type: ignore[attr-defined]
    if stage is FilterStage.LAUNCH:
        # the worker's only use of unshare: a fresh mount namespace (private /tmp) per job
        rule(deny, "unshare", arg(0, ne, _CLONE_NEWNS))
        rule(
            sc.ERRNO(errno.EAFNOSUPPORT),  # type: ignore[attr-defined]
            "socket",
            sc.Arg(0, sc.NE, _AF_UNIX),  # type: ignore[attr-defined]
        )
    else:
        for name in (*_JOB_DENIED, *(() if gpu else _JOB_EPOLL)):
            rule(deny, name)
        # getpriority/ioprio_get of a process group or a user (every process of the sandbox uid);
        # a process by pid is left to the own-pid guard. capget names its pid inside a struct no
        # filter can read: refused (the job has dropped every capability; it has none to ask about)
        rule(deny, "getpriority", arg(0, ne, _PRIO_PROCESS))
        rule(deny, "ioprio_get", arg(0, ne, _IOPRIO_WHO_PROCESS))
        rule(deny, "capget")
        # a new process is a clone without CLONE_THREAD; threads stay allowed
        rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))  # type: ignore[attr-defined]
        # signals by way of a file's owner (SIGIO/F_SETSIG to any pid of the same uid when the fd
        # becomes ready): no job may set an owner or the signal; cmd is a 32-bit int to the kernel
        masked = sc.MASKED_EQ  # type: ignore[attr-defined]
        for cmd in (*_FCNTL_OWNER, _FCNTL_PIPE_SIZE):
            rule(deny, "fcntl", arg(1, masked, 0xFFFFFFFF, cmd))
        for cmd in _IOCTL_OWNER:
            rule(deny, "ioctl", arg(1, masked, 0xFFFFFFFF, cmd))
        # signals: not to pid 1 (the worker), not to process groups (pid <= 0), not to everyone (-1)
        for name in ("kill", "tkill", "tgkill"):
            rule(deny, name, sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, 1))  # type: ignore[attr-defined]
        rule(deny, "kill", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, 0))  # type: ignore[attr-defined]
        rule(deny, "kill", sc.Arg(0, sc.MASKED_EQ, 0x80000000, 0x80000000))  # type: ignore[attr-defined]
    fd = os.memfd_create("airlock-seccomp", os.MFD_CLOEXEC)  # trusted side: the host compiles
    try:
        with open(fd, "w+b", closefd=False) as handle:
            flt.export_bpf(handle)
        size = os.fstat(fd).st_size
        program = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if not program or len(program) % 8:
        raise SandboxError(f"seccomp: compiled filter has {len(program)} bytes, expected a multiple of 8")
    return program


def _resolved(calls: tuple[tuple[str, int], ...]) -> list[tuple[int, int]]:
    sc: Any = _import_pyseccomp()
    rules = []
    for name, index in calls:
        number = int(sc.resolve_syscall(sc.Arch.NATIVE, name))
        if number >= 0:
            rules.append((number, index))
    return rules


def own_pid_rules() -> list[tuple[int, int]]:
    """(syscall number, pid argument index) of the signal calls, for the job's own-pid guard.

    Numbers are resolved here (trusted side, libseccomp) because the job has no libseccomp.
    """
    return _resolved(_SIGNAL_CALLS)


def own_pid_reader_rules() -> list[tuple[int, int]]:
    """(syscall number, pid argument index) of the calls that read a process by pid, for the
    own-pid guard (where 0, the caller itself, passes too)."""
    return _resolved(_PID_READERS)
