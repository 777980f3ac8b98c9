"""Jobs against jobs and against the worker (pid 1), inside one warm sandbox.

A job is hostile: it must not reach another pid's limits, priority, affinity, signals or memory,
must not outlive its request, must see a /tmp of its own, and must not hold memory outside its
address-space limit. Every test here holds with Landlock off too (``test_configurations.py``
re-runs this file with ``AIRLOCK_SANDBOX_UNSAFE_NO_LANDLOCK=1`` and as an unprivileged uid): these
protections come from seccomp, the worker's own hardening and the mount namespace of each job.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from airlock.errors import SandboxError
from airlock.sandbox import Sandbox, SandboxPolicy, _launcher
from airlock.sandbox._launcher import runtime_paths
from tests.sandbox._payloads import bytes_tensor, exec_checkpoint, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

pyseccomp = pytest.importorskip("pyseccomp", reason="the sandbox extra is part of airlock[dev]")


def _nr(name: str) -> int:
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


@pytest.fixture(scope="module")
def jobs() -> Iterator[Sandbox]:
    """A warm sandbox of its own: a test that fails on a weak sandbox may leave this one broken."""
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as sandbox:
        yield sandbox


def _probe(sandbox: Sandbox, path: Path, source: str) -> Any:
    """Run ``source`` (which defines ``probe() -> JSON-able``) in a job; return what it returned."""
    setup = (
        f"namespace = {{}}\nexec({source!r}, namespace)\nimport builtins\n"
        "builtins.airlock_probe = lambda ns=namespace: __import__('json').dumps(ns['probe']()).encode()\n"
    )
    model = exec_then_eval_checkpoint(path, setup, bytes_tensor("airlock_probe()"))
    with sandbox.open(model) as worker:
        evidence = worker.state_dict()["evidence"]
    return json.loads(evidence.tobytes())


def _serves(sandbox: Sandbox, tmp_path: Path) -> None:
    torch.save({"w": torch.arange(3.0)}, tmp_path / "benign.pt")
    with sandbox.open(tmp_path / "benign.pt") as worker:
        assert np.array_equal(worker.state_dict()["w"], np.arange(3.0, dtype=np.float32))


_CALLS = """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {nr!r}

def call(fn, *args):
    ctypes.set_errno(0)
    result = fn(*args)
    return 0 if result >= 0 else ctypes.get_errno()

def probe():
    out = {{}}
    pipe_r, pipe_w = os.pipe()
    for name, target in (("worker", os.getppid()), ("job", {other})):
        rlim = (ctypes.c_uint64 * 2)(1 << 20, 1 << 20)
        param = ctypes.c_int(0)
        mask = ctypes.c_uint64(1)
        info = (ctypes.c_int * 32)(signal.SIGWINCH, 0, -1)  # si_code SI_QUEUE
        nodes = ctypes.c_ulong(1)
        out[name] = {{
            "prlimit64": call(libc.syscall, NR["prlimit64"], target, 9, rlim, None),
            "setpriority": call(libc.setpriority, 0, target, 19),
            "setpriority-pgrp": call(libc.setpriority, 1, target, 19),
            "setpriority-user": call(libc.setpriority, 2, 0, 19),
            "sched_setaffinity": call(libc.sched_setaffinity, target, 8, ctypes.byref(mask)),
            "sched_setscheduler": call(libc.sched_setscheduler, target, 5, ctypes.byref(param)),
            "sched_setparam": call(libc.sched_setparam, target, ctypes.byref(param)),
            "ioprio_set": call(libc.syscall, NR["ioprio_set"], 1, target, 3 << 13),
            "ioprio_set-user": call(libc.syscall, NR["ioprio_set"], 3, 0, 3 << 13),
            "migrate_pages": call(libc.syscall, NR["migrate_pages"], target, 64, ctypes.byref(nodes), ctypes.byref(nodes)),
            "move_pages": call(libc.syscall, NR["move_pages"], target, 0, None, None, None, 0),
            "kill": call(libc.kill, target, signal.SIGWINCH),
            "tgkill": call(libc.syscall, NR["tgkill"], target, target, signal.SIGWINCH),
            "rt_sigqueueinfo": call(libc.syscall, NR["rt_sigqueueinfo"], target, signal.SIGWINCH, info),
            "rt_tgsigqueueinfo": call(libc.syscall, NR["rt_tgsigqueueinfo"], target, target, signal.SIGWINCH, info),
            "pidfd_open": call(libc.syscall, NR["pidfd_open"], target, 0),
            "fcntl-F_SETOWN": call(libc.fcntl, pipe_r, 8, target),
            "fcntl-F_SETOWN-high-bits": call(libc.syscall, NR["fcntl"], pipe_r, (1 << 32) | 8, target),
            "fcntl-F_SETSIG": call(libc.fcntl, pipe_r, 10, signal.SIGWINCH),
            "ioctl-FIOSETOWN": call(libc.ioctl, pipe_r, 0x8901, ctypes.byref(ctypes.c_int(target))),
            "get_robust_list": call(libc.syscall, NR["get_robust_list"], target, ctypes.byref(nodes), ctypes.byref(nodes)),
        }}
    own = ctypes.c_uint64(0)
    out["self"] = {{
        "prlimit64": call(libc.syscall, NR["prlimit64"], 0, 9, None, ctypes.byref((ctypes.c_uint64 * 2)())),
        "setrlimit": call(libc.setrlimit, 4, ctypes.byref((ctypes.c_uint64 * 2)(0, 0))),
        "sched_getaffinity": call(libc.sched_getaffinity, 0, 8, ctypes.byref(own)),
        "setpriority": call(libc.setpriority, 0, 0, 1),
        "raise": call(getattr(libc, "raise"), signal.SIGWINCH),
        "kill-self": call(libc.kill, os.getpid(), signal.SIGWINCH),
    }}
    return out
"""

_SYSCALLS = ("fcntl", "prlimit64", "ioprio_set", "migrate_pages", "move_pages", "tgkill", "rt_sigqueueinfo",
             "rt_tgsigqueueinfo", "pidfd_open", "get_robust_list")  # fmt: skip


def test_a_job_cannot_touch_the_worker_or_another_job(jobs: Sandbox, tmp_path: Path) -> None:
    """prlimit64 and the whole family on any pid but the job's own: EPERM, and nothing changed."""
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 2).eval()
    torch.save(module, tmp_path / "victim.pt")
    x = np.ones((1, 4), np.float32)
    with jobs.open(tmp_path / "victim.pt") as victim:
        before = victim.infer({"x": x})["output"]
        nr = {name: _nr(name) for name in _SYSCALLS}
        result = _probe(jobs, tmp_path / "hostile.pt", _CALLS.format(nr=nr, other=victim._pid))
        for target in ("worker", "job"):
            refused = {name: code for name, code in result[target].items() if code == errno.EPERM}
            assert refused == result[target], f"calls on the {target} that were not refused: {result[target]}"
        # the job's own calls still work (libc uses pid 0 for itself)
        assert result["self"] == dict.fromkeys(result["self"], 0), result["self"]
        # the victim is unharmed: same limits, still answers
        np.testing.assert_array_equal(victim.infer({"x": x})["output"], before)
    _serves(jobs, tmp_path)  # later jobs start: the worker's limits were not lowered


_HOG = """
import builtins, threading
hold = threading.Event()
made = 0
while made < 100000:
    try:
        threading.Thread(target=hold.wait, daemon=True).start()
    except RuntimeError:  # can't start new thread: the task budget is full
        break
    made += 1
builtins.airlock_threads = made
"""


def test_a_job_holding_every_task_stops_no_other_job_or_sandbox(jobs: Sandbox, tmp_path: Path) -> None:
    """RLIMIT_NPROC counts per uid: set before bubblewrap, it capped every task of the *host* uid
    (65534 for root callers, shared by all sandboxes and gateway tenants). A job that held its
    threads made the next fork of every worker fail, and the worker died: its sandbox was dead
    for good, in this sandbox and in every other one."""
    hog = exec_then_eval_checkpoint(
        tmp_path / "hog.pt", _HOG, "__import__('torch').tensor(__import__('builtins').airlock_threads)"
    )
    with jobs.open(hog) as holder:
        made = int(holder.state_dict()["evidence"])
        assert FAST_LIMITS.tasks - 16 <= made < FAST_LIMITS.tasks  # it really holds the whole budget
        _serves(jobs, tmp_path)  # the worker still forks (it has a reserve beyond the jobs' budget)
        with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=()) as other:
            _serves(other, tmp_path)  # another sandbox of the same uid has a budget of its own
        # past the reserve too: the request fails cleanly, the worker stays up
        opened = []
        try:
            with pytest.raises(SandboxError, match="could not start a job"):
                for _ in range(64):
                    opened.append(jobs.open(tmp_path / "benign.pt"))
        finally:
            for worker in opened:
                worker.close()
    _serves(jobs, tmp_path)


def test_a_job_cannot_open_pseudo_terminals(jobs: Sandbox, tmp_path: Path) -> None:
    """bubblewrap's devpts has ptmx mode 666: without Landlock a job opened hundreds of
    pseudo-terminals (kernel memory, the host-wide kernel.pty.max, the tty attack surface)."""
    source = (
        "import errno, os\n"
        "def probe():\n"
        "    out = {}\n"
        "    for path in ('/dev/pts/ptmx', '/dev/ptmx'):\n"
        "        try:\n"
        "            os.close(os.open(path, os.O_RDWR | os.O_NOCTTY))\n"
        "            out[path] = 'opened'\n"
        "        except OSError as exc:\n"
        "            out[path] = errno.errorcode.get(exc.errno, str(exc.errno))\n"
        "    out['pts'] = os.listdir('/dev/pts') if os.path.isdir('/dev/pts') else []\n"
        "    return out\n"
    )
    seen = _probe(jobs, tmp_path / "pty.pt", source)
    assert seen["/dev/pts/ptmx"] in ("ENOENT", "EACCES") and seen["/dev/ptmx"] in ("ENOENT", "EACCES"), seen
    assert seen["pts"] == [], seen


def test_a_job_is_killed_when_its_request_ends(jobs: Sandbox, tmp_path: Path) -> None:
    """A job that ignores "close" (and keeps a thread sleeping) is killed, not left running."""
    model = exec_checkpoint(
        tmp_path / "linger.pt",
        "import os, threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,)).start()\n"
        "os._exit = lambda code, sleep=time.sleep: sleep(3600)\n",
    )
    with jobs.open(model) as worker:
        pid = worker._pid
        worker.state_dict()
    assert jobs.exit_status(pid, wait=15) == "killed by SIGKILL"
    _serves(jobs, tmp_path)


def test_a_job_without_close_is_killed_when_the_socket_goes(jobs: Sandbox, tmp_path: Path) -> None:
    """Closing the job's channel (what a host deadline does) kills a job stuck in its payload."""
    model = exec_checkpoint(
        tmp_path / "stuck.pt", "import os, time\nos._exit = lambda code, sleep=time.sleep: sleep(3600)\n"
    )
    worker = jobs.open(model)
    pid = worker._pid
    assert worker._sock is not None
    worker._sock.close()  # no "close" frame: only the socket disappears
    worker._sock = None
    assert jobs.exit_status(pid, wait=15) == "killed by SIGKILL"


def test_each_job_has_its_own_tmp(jobs: Sandbox, tmp_path: Path) -> None:
    writer = exec_checkpoint(
        tmp_path / "writer.pt",
        "open('/tmp/airlock-shared', 'w').write('from job A')\nopen('airlock-cwd', 'w').write('A')",
    )
    reader = (
        "import os\n"
        "def probe():\n"
        "    return {'listing': sorted(os.listdir('/tmp')), 'cwd': os.getcwd(), 'cwd_listing': sorted(os.listdir('.'))}\n"
    )
    with jobs.open(writer):  # job A is still alive while B looks
        seen = _probe(jobs, tmp_path / "reader.pt", reader)
    # nothing of job A's, and no runtime directory either: inside, the runtime lives under /airlock
    # even when the host's checkout or venv is under /tmp (as CI clones may be)
    assert seen == {"listing": [], "cwd": "/tmp", "cwd_listing": []}
    assert _probe(jobs, tmp_path / "reader2.pt", reader)["listing"] == []


@pytest.fixture
def airlock_under_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Runtime paths of which at least one lives under the host's /tmp: this checkout's when it
    does (a CI clone may), else a copy of ``airlock`` placed there for the worker to import."""
    under_tmp = [p for p in runtime_paths() if p.startswith("/tmp/")]
    if under_tmp:
        yield under_tmp
        return
    top = tempfile.mkdtemp(prefix="airlock-runtime-", dir="/tmp")
    try:
        os.chmod(top, 0o755)  # noqa: S103 -- the sandbox's own uid (65534 for a root caller) must read it
        shutil.copytree(
            Path(_launcher._AIRLOCK_ROOT), Path(top, "airlock"), ignore=shutil.ignore_patterns("__pycache__")
        )
        monkeypatch.setattr(_launcher, "_AIRLOCK_ROOT", os.path.join(top, "airlock"))
        assert top in runtime_paths()
        yield [top]
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_runtime_under_the_hosts_tmp_is_imported_from_a_neutral_read_only_path(
    airlock_under_tmp: list[str], tmp_path: Path
) -> None:
    """A checkout or venv under the host's /tmp is bound into the sandbox at a neutral path below
    /airlock, which each job's fresh /tmp does not hide; the job cannot write it, and the host
    path does not exist inside."""
    source = (
        "import os, airlock\n"
        f"PATHS = {airlock_under_tmp!r}\n"
        "def probe():\n"
        "    where = list(airlock.__path__)[0]\n"
        "    out = {'airlock': where, 'host': [os.path.exists(p) for p in PATHS]}\n"
        "    try:\n"
        "        open(os.path.join(where, 'airlock-written'), 'w').close()\n"
        "        out['write'] = 'written'\n"
        "    except OSError as exc:\n"
        "        out['write'] = exc.strerror\n"
        "    return out\n"
    )
    # a sandbox of its own: the worker imports airlock from where ``_AIRLOCK_ROOT`` says
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as sandbox:
        seen = _probe(sandbox, tmp_path / "binds.pt", source)
    assert seen["airlock"] == "/airlock/src/airlock", seen
    assert seen["host"] == [False] * len(airlock_under_tmp), seen
    assert seen["write"] != "written", seen
    assert not any(Path(p, "airlock", "airlock-written").exists() for p in airlock_under_tmp)


_NAMES_FILL = """
import errno, os
def fill(make, limit):
    made = 0
    try:
        while made < limit:
            make(made)
            made += 1
    except OSError as exc:
        return [made, errno.errorcode.get(exc.errno, str(exc.errno))]
    return [made, None]

def probe():
    limit = {limit}
    name = "n" * 200  # long names: a dentry name past the inline bytes is one more allocation
    out = {{"dirs": fill(lambda i: os.mkdir(f"{{name}}{{i}}"), limit)}}
    for i in range(out["dirs"][0]):
        os.rmdir(f"{{name}}{{i}}")
    open("target", "w").close()
    out["links"] = fill(lambda i: os.link("target", f"{{name}}{{i}}"), limit)
    for i in range(out["links"][0]):
        os.unlink(f"{{name}}{{i}}")
    out["symlinks"] = fill(lambda i: os.symlink("target", f"{{name}}{{i}}"), limit)
    st = os.statvfs(".")
    out["files"] = st.f_files
    return out
"""


def test_tmp_names_cannot_hold_kernel_memory(jobs: Sandbox, tmp_path: Path) -> None:
    """tmpfs ``size=`` caps file contents only: empty directories, hard links and symlinks cost an
    inode and a dentry each but no block. The private /tmp had millions of inodes (a job made
    300 000 directories with 200-byte names in 6 s in a 16 MiB /tmp, ~1 KiB of kernel memory each,
    outside RLIMIT_AS and, without cgroups, outside every budget)."""
    from airlock.sandbox._kernel import tmp_inodes

    cap = tmp_inodes(FAST_LIMITS.tmpfs_bytes)
    limit = 4 * cap + 1000  # the old /tmp allowed all of these
    seen = _probe(jobs, tmp_path / "names.pt", _NAMES_FILL.format(limit=limit))
    assert seen["files"] == cap
    for kind in ("dirs", "links", "symlinks"):
        made, error = seen[kind]
        assert error == "ENOSPC", (kind, seen)
        assert made < cap, (kind, seen)  # the root directory and "target" hold inodes too
    _serves(jobs, tmp_path)


def test_the_worker_is_not_writable_or_readable_through_proc(jobs: Sandbox, tmp_path: Path) -> None:
    """Without Landlock the worker's memory was writable: a job replaced the next job's filter."""
    source = (
        "import os\n"
        "def probe():\n"
        "    out = {}\n"
        "    ppid = os.getppid()\n"
        "    for name, mode in (('mem', os.O_RDWR), ('mem-read', os.O_RDONLY), ('environ', os.O_RDONLY),\n"
        "                       ('fd', os.O_RDONLY | os.O_DIRECTORY), ('cwd', os.O_RDONLY | os.O_DIRECTORY)):\n"
        "        path = f'/proc/{ppid}/' + name.split('-')[0]\n"
        "        try:\n"
        "            os.close(os.open(path, mode))\n"
        "            out[name] = 'opened'\n"
        "        except OSError as exc:\n"
        "            out[name] = exc.errno\n"
        "    try:\n"
        "        out['cmdline'] = open(f'/proc/{ppid}/cmdline', 'rb').read().decode(errors='replace')\n"
        "    except OSError as exc:\n"
        "        out['cmdline'] = exc.errno\n"
        "    return out\n"
    )
    seen = _probe(jobs, tmp_path / "mem.pt", source)
    # the job's own /proc has no /proc/1 at all (ENOENT); the worker is non-dumpable besides (EACCES
    # or EPERM, had it been there), and its command line held no configuration and no host path
    assert seen == dict.fromkeys(("mem", "mem-read", "environ", "fd", "cwd", "cmdline"), errno.ENOENT), seen
    _serves(jobs, tmp_path)


_MEMORY = """
import ctypes, os, resource
LIMIT = 256 << 20
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
libc.shmdt.argtypes = (ctypes.c_void_p,)

def fill(write, total):
    chunk, held = b'x' * (1 << 20), 0
    try:
        while held < total:
            write(chunk)
            held += len(chunk)
    except OSError:
        pass
    return held

def probe():
    vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize'))
    resource.setrlimit(resource.RLIMIT_AS, (vm + LIMIT, vm + LIMIT))  # 256 MiB left, try 2x that
    out = {}
    try:
        fd = os.memfd_create('airlock-probe')
        out['memfd'] = fill(lambda b: os.write(fd, b), 2 * LIMIT)
        os.close(fd)
    except OSError as exc:
        out['memfd'] = -exc.errno
    try:
        with open('/dev/shm/airlock-probe', 'wb') as f:
            out['dev-shm'] = fill(f.write, 2 * LIMIT)
        os.unlink('/dev/shm/airlock-probe')
    except OSError as exc:
        out['dev-shm'] = -exc.errno
    held, ids = 0, []
    for _ in range(4):  # four 128 MiB SysV segments, each attached, filled and detached in turn
        ident = libc.shmget(0, LIMIT // 2, 0o1600)
        if ident < 0:
            held = -ctypes.get_errno()
            break
        ids.append(ident)
        addr = libc.shmat(ident, None, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            break
        ctypes.memset(addr, 1, LIMIT // 2)
        libc.shmdt(addr)
        held += LIMIT // 2
    for ident in ids:
        libc.shmctl(ident, 0, None)  # IPC_RMID
    out['sysv-shm'] = held
    ctypes.set_errno(0)
    out['msgget'] = -ctypes.get_errno() if libc.msgget(0, 0o1600) < 0 else 'created'
    return out
"""


def test_memory_outside_the_address_space_is_refused(jobs: Sandbox, tmp_path: Path) -> None:
    """memfd, /dev/shm and SysV IPC pages do not count against RLIMIT_AS: the job may not make any."""
    seen = _probe(jobs, tmp_path / "memory.pt", _MEMORY)
    assert seen["memfd"] == -errno.EPERM, seen
    assert seen["dev-shm"] in (-errno.EROFS, -errno.EACCES, -errno.ENOENT), seen
    assert seen["sysv-shm"] == -errno.EPERM, seen
    assert seen["msgget"] == -errno.EPERM, seen
    _serves(jobs, tmp_path)


def test_lowering_the_workers_limits_fails_cleanly(jobs: Sandbox, tmp_path: Path) -> None:
    """The attack as a payload would write it: the load fails with EPERM, later jobs still start."""
    model = exec_checkpoint(
        tmp_path / "lower.pt",
        "import resource, os\nresource.prlimit(os.getppid(), resource.RLIMIT_AS, (1 << 20, 1 << 20))",
    )
    with pytest.raises(
        SandboxError, match=r"sandboxed load failed: PermissionError: .*Operation not permitted"
    ):
        jobs.open(model)
    _serves(jobs, tmp_path)


_REOPEN = """
import os, stat

def probe():
    out = {}
    for fd in range(3, 64):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            continue
        for link in (f'/proc/self/fd/{fd}', f'/dev/fd/{fd}', f'/proc/thread-self/fd/{fd}'):
            try:
                out[link + ' readlink'] = os.readlink(link)
            except OSError as exc:
                out[link + ' readlink'] = exc.errno
            try:
                os.close(os.open(link, os.O_WRONLY | os.O_APPEND))
                out[link + ' write'] = 'opened'
            except OSError as exc:
                out[link + ' write'] = exc.errno
        try:
            os.fchmod(fd, 0o666)
            out[f'fchmod {fd}'] = 'changed'
        except OSError as exc:
            out[f'fchmod {fd}'] = exc.errno
    return out
"""


def test_the_model_descriptor_cannot_be_reopened_or_located(jobs: Sandbox, tmp_path: Path) -> None:
    """Through /proc/self/fd a job could reopen the model for writing and read its host path."""
    seen = _probe(jobs, tmp_path / "reopen.pt", _REOPEN)
    assert seen, "the probe found no regular file descriptor (the model's) to try"
    assert all(value in (errno.ENOENT, errno.EACCES, errno.EPERM) for value in seen.values()), seen
    assert str(tmp_path) not in json.dumps(seen)
    assert os.stat(tmp_path / "reopen.pt").st_mode & 0o777 != 0o666


# --- memory shared through the warm worker (outside review 11) -------------------------------------

#: every shared mapping of the job (an ``s`` in its permissions), as [start, end, perms]
_SHARED = """
def shared():
    found = []
    for line in open('/proc/self/maps').read().splitlines():
        span, perms = line.split()[:2]
        if perms[3] == 's':
            start, end = (int(x, 16) for x in span.split('-'))
            found.append([start, end, perms])
    return found
"""


def test_jobs_share_no_memory_with_the_worker_or_each_other(tmp_path: Path) -> None:
    """onnxruntime's import in the warm worker started Microsoft's telemetry, whose SQLite
    shared-memory index was mapped MAP_SHARED and writable: every job inherited it, so one job
    wrote what the next job (another model) read, and what the worker's own telemetry thread read.
    Now a job holds no shared mapping at all: nothing it writes reaches another process."""
    marker = "airlock-review-eleven-marker"
    writer = _SHARED + (
        "def probe():\n"
        "    import ctypes\n"
        "    written = []\n"
        "    for start, end, perms in shared():\n"
        "        if perms[1] == 'w':\n"
        f"            ctypes.memmove(start + 64, {marker.encode()!r}, {len(marker)})\n"
        "            written.append(perms)\n"
        "    return [written, shared()]\n"
    )
    reader = _SHARED + (
        "def probe():\n"
        "    import ctypes\n"
        f"    return [ctypes.string_at(s + 64, {len(marker)}).decode('latin-1') for s, e, p in shared() if p[0] == 'r']\n"
    )
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch", "onnx")) as sandbox:
        written, mappings = _probe(sandbox, tmp_path / "writer.pt", writer)
        seen = _probe(sandbox, tmp_path / "reader.pt", reader)
    assert marker not in seen, "a job read what an earlier job wrote into memory shared through the worker"
    assert written == [] and mappings == [], mappings


def test_a_private_copy_replaces_each_shared_mapping() -> None:
    """The mechanism on its own, with real shared mappings in a real fork (a subprocess): an
    anonymous MAP_SHARED page and a shared file mapping longer than its file. The child's copy
    keeps every byte (zeros past the file's end, where a read would be a SIGBUS) and its
    protection; what the child writes no longer reaches the parent."""
    import subprocess
    import sys

    script = (
        "import ctypes, mmap, os, tempfile\n"
        "from airlock.sandbox._kernel import privatise_shared_mappings\n"
        "anon = mmap.mmap(-1, 8192, flags=mmap.MAP_SHARED); anon[:4] = b'AAAA'\n"
        "f = tempfile.TemporaryFile(); f.write(b'F' * 100); f.flush()\n"
        "libc = ctypes.CDLL(None); libc.mmap.restype = ctypes.c_void_p\n"
        "libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)\n"
        "ro = libc.mmap(None, 3 * 4096, 1, 1, f.fileno(), 0)  # PROT_READ, MAP_SHARED: 2 pages past EOF\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    n = privatise_shared_mappings()\n"
        "    maps = open('/proc/self/maps').read().splitlines()\n"
        "    left = [l for l in maps if l.split()[1][3] == 's']\n"
        "    line = [l for l in maps if int(l.split('-')[0], 16) == ro][0]\n"
        "    print('child', n >= 2, left, anon[:4], ctypes.string_at(ro, 3), ctypes.string_at(ro + 5000, 2), line.split()[1], flush=True)\n"
        "    anon[:4] = b'BBBB'\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('parent', anon[:4])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "child True [] b'AAAA' b'FFF' b'\\x00\\x00' r--p" in out, out + done.stderr.decode()[-2000:]
    assert "parent b'AAAA'" in out, out
