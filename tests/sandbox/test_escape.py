"""The escape suite: each case is a real torch file whose payload tries one thing.

Every attempt must be blocked, the host and the parent unharmed, and a clear error returned. Runs
as the caller (root in CI); ``test_unprivileged.py`` re-runs this file as uid 65534.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import numpy as np
import pytest
import torch

from airlock.errors import SandboxError
from airlock.sandbox import Sandbox, SandboxPolicy, load_state_dict
from tests.sandbox._payloads import bytes_tensor, eval_checkpoint, exec_checkpoint, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

SECRET = f"airlock-fake-secret-{uuid.uuid4().hex}"
BLOCKED = (
    r"Operation not permitted|Permission denied|No such file|Address family not supported|No such process"
)


def _load(sandbox: Sandbox, path: Path) -> dict[str, np.ndarray]:
    with sandbox.open(path) as worker:
        return worker.state_dict()


def _still_serves(sandbox: Sandbox, tmp_path: Path) -> None:
    torch.save({"w": torch.arange(3.0)}, tmp_path / "benign.pt")
    assert np.array_equal(_load(sandbox, tmp_path / "benign.pt")["w"], np.arange(3.0, dtype=np.float32))


def test_tcp_to_host_listener_is_blocked(warm: Sandbox, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        model = exec_checkpoint(
            tmp_path / "tcp.pt",
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'escaped')",
        )
        with pytest.raises(
            SandboxError, match=r"sandboxed load failed: .*(Operation not permitted|Address family)"
        ):
            _load(warm, model)
        ready, _, _ = select.select([server], [], [], 0.3)
        assert ready == [], "the host listener saw a connection"
    _still_serves(warm, tmp_path)


def test_udp_to_host_listener_is_blocked(warm: Sandbox, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        model = exec_checkpoint(
            tmp_path / "udp.pt",
            f"import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'escaped', ('127.0.0.1', {port}))",
        )
        with pytest.raises(SandboxError, match=r"(Operation not permitted|Address family)"):
            _load(warm, model)
        ready, _, _ = select.select([listener], [], [], 0.3)
        assert ready == [], "the host listener received a datagram"


def test_owner_only_file_is_unreadable(warm: Sandbox, tmp_path: Path) -> None:
    secret_file = tmp_path / "owner-only.txt"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    model = eval_checkpoint(tmp_path / "read.pt", bytes_tensor(f"open({str(secret_file)!r}, 'rb').read()"))
    with pytest.raises(SandboxError, match=BLOCKED) as caught:
        _load(warm, model)
    assert SECRET not in str(caught.value)
    shadow = eval_checkpoint(tmp_path / "shadow.pt", bytes_tensor("open('/etc/shadow', 'rb').read()"))
    with pytest.raises(SandboxError, match=BLOCKED):
        _load(warm, shadow)


@pytest.fixture
def home_file() -> Iterator[Path]:
    home = Path.home()
    path = home / f".airlock-escape-test-{uuid.uuid4().hex}"
    path.write_text(SECRET)
    try:
        yield path
    finally:
        path.unlink()


def test_file_under_callers_home_is_unreadable(warm: Sandbox, tmp_path: Path, home_file: Path) -> None:
    model = eval_checkpoint(tmp_path / "home.pt", bytes_tensor(f"open({str(home_file)!r}, 'rb').read()"))
    with pytest.raises(SandboxError, match=BLOCKED) as caught:
        _load(warm, model)
    assert SECRET not in str(caught.value)
    listing = eval_checkpoint(
        tmp_path / "ls.pt",
        bytes_tensor(f"'\\n'.join(__import__('os').listdir({str(home_file.parent)!r})).encode()"),
    )
    if "landlock" in warm.layers:
        with pytest.raises(SandboxError, match=BLOCKED):
            _load(warm, listing)
    elif str(home_file.parent) in ("/", "/tmp") or str(home_file.parent).startswith("/usr/"):
        names = _load(warm, listing)["evidence"].tobytes().decode().split("\n")
        assert home_file.name not in names  # the job's own /tmp, or the distribution's /usr
    else:  # nothing of the host's is mounted at a host path (the runtime lives under /airlock)
        with pytest.raises(SandboxError, match=r"No such file"):
            _load(warm, listing)


def test_write_outside_tmpfs_is_blocked(warm: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    for destination in (str(target), "/usr/airlock-escaped.txt", "/airlock-escaped.txt"):
        model = exec_checkpoint(tmp_path / "write.pt", f"open({destination!r}, 'w').write('escaped')")
        with pytest.raises(SandboxError, match=r"Read-only file system|No such file|Permission denied"):
            _load(warm, model)
    assert not target.exists()
    assert not Path("/usr/airlock-escaped.txt").exists()
    assert not Path("/airlock-escaped.txt").exists()


def test_exec_bin_sh_is_blocked(warm: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = exec_checkpoint(
        tmp_path / "exec.pt", f"import os\nos.execv('/bin/sh', ['sh', '-c', 'echo pwned > {marker}'])"
    )
    with pytest.raises(SandboxError, match=r"PermissionError: .*Operation not permitted"):
        _load(warm, model)
    subprocess_model = exec_checkpoint(
        tmp_path / "subprocess.pt", "import subprocess\nsubprocess.run(['/bin/sh', '-c', 'true'], check=True)"
    )
    with pytest.raises(SandboxError, match=r"Operation not permitted"):
        _load(warm, subprocess_model)
    assert not marker.exists()
    _still_serves(warm, tmp_path)


def test_fork_bomb_is_blocked(warm: Sandbox, tmp_path: Path) -> None:
    model = exec_checkpoint(tmp_path / "fork.pt", "import os\nwhile True:\n    os.fork()")
    with pytest.raises(SandboxError, match=r"PermissionError: .*Operation not permitted"):
        _load(warm, model)
    _still_serves(warm, tmp_path)


def test_thread_bomb_is_bounded(warm: Sandbox, tmp_path: Path) -> None:
    source = (
        "import threading, time\n"
        "for _ in range(100000):\n"
        "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()"
    )
    model = exec_checkpoint(tmp_path / "threads.pt", source)
    with pytest.raises(SandboxError, match=r"can't start new thread|Resource temporarily unavailable"):
        _load(warm, model)


def test_allocating_30_gb_fails_cleanly(warm: Sandbox, tmp_path: Path) -> None:
    model = exec_checkpoint(tmp_path / "alloc.pt", "blob = bytearray(30 * 2**30)")
    started = time.monotonic()
    with pytest.raises(SandboxError, match=r"MemoryError"):
        _load(warm, model)
    assert time.monotonic() - started < 15


def test_filling_the_disk_stops_at_the_limits(warm: Sandbox, tmp_path: Path) -> None:
    free_before = shutil.disk_usage("/").free
    model = exec_checkpoint(
        tmp_path / "fill.pt",
        "f = open('/tmp/fill', 'wb')\nwhile True:\n    f.write(b'x' * (1 << 20))\n    f.flush()",
    )
    with pytest.raises(SandboxError, match=r"File too large|No space left on device"):
        _load(warm, model)
    assert free_before - shutil.disk_usage("/").free < 100 << 20


@pytest.mark.parametrize("ignore_sigxcpu", [False, True])
def test_spinning_the_cpu_is_killed(tmp_path: Path, ignore_sigxcpu: bool) -> None:
    prelude = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n" if ignore_sigxcpu else ""
    model = exec_checkpoint(tmp_path / "spin.pt", prelude + "while True:\n    pass")
    started = time.monotonic()
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS)) as sandbox:
        with pytest.raises(SandboxError, match=r"the job died \(killed by (SIGXCPU|SIGKILL)\)"):
            _load(sandbox, model)
        assert time.monotonic() - started < FAST_LIMITS.wall_seconds
        _still_serves(sandbox, tmp_path)


def test_wall_clock_limit_kills_the_whole_tree(tmp_path: Path) -> None:
    model = exec_checkpoint(tmp_path / "sleep.pt", "import time\ntime.sleep(3600)")
    sandbox = Sandbox(SandboxPolicy(limits=FAST_LIMITS.replace(wall_seconds=3)))
    launched = sandbox._launched
    assert launched is not None
    started = time.monotonic()
    with pytest.raises(SandboxError, match=r"wall-clock limit of 3 s"):
        _load(sandbox, model)
    assert time.monotonic() - started < 10
    assert launched.process.poll() is not None, "the worker outlived its timeout"
    if launched.cgroups is not None:
        assert launched.cgroups.pids() == []
    sandbox.close()


def _ctypes_call(call: str) -> str:
    return (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"if libc.{call} != 0:\n    e = ctypes.get_errno()\n    raise OSError(e, os.strerror(e))"
    )


def test_ptrace_of_parent_and_worker_is_blocked(warm: Sandbox, tmp_path: Path) -> None:
    for target in (os.getpid(), 1):
        model = exec_checkpoint(tmp_path / "ptrace.pt", _ctypes_call(f"ptrace(16, {target}, 0, 0)"))
        with pytest.raises(
            SandboxError,
            match=r"(PermissionError|ProcessLookupError): .*(Operation not permitted|No such process)",
        ):
            _load(warm, model)
    assert "TracerPid:\t0" in Path("/proc/self/status").read_text()


def test_signalling_the_parent_is_blocked(warm: Sandbox, tmp_path: Path) -> None:
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGUSR1, record)
    try:
        for target in (os.getpid(), 1, -1, 0):
            model = exec_checkpoint(
                tmp_path / "kill.pt", f"import os, signal\nos.kill({target}, signal.SIGUSR1)"
            )
            with pytest.raises(
                SandboxError,
                match=r"(PermissionError|ProcessLookupError): .*(Operation not permitted|No such process)",
            ):
                _load(warm, model)
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []
    _still_serves(warm, tmp_path)


def test_parent_environment_is_invisible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_TEST_FAKE_SECRET", SECRET)
    direct = eval_checkpoint(
        tmp_path / "env.pt", bytes_tensor(f"open('/proc/{os.getpid()}/environ', 'rb').read()")
    )
    grab = (
        "import builtins, os\n"
        "def grab():\n"
        "    found = b''\n"
        "    for name in ['self', *os.listdir('/proc')]:\n"
        "        try:\n"
        "            found += open(f'/proc/{name}/environ', 'rb').read()\n"
        "        except OSError:\n"
        "            pass\n"
        "    return found\n"
        "builtins.airlock_grab = grab\n"
    )
    every = exec_then_eval_checkpoint(tmp_path / "envs.pt", grab, bytes_tensor("airlock_grab()"))
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS)) as sandbox:
        with pytest.raises(SandboxError, match=BLOCKED) as caught:
            _load(sandbox, direct)
        assert SECRET not in str(caught.value)
        evidence = _load(sandbox, every)["evidence"].tobytes()
    assert SECRET.encode() not in evidence
    assert b"AIRLOCK_TEST_FAKE_SECRET" not in evidence
    # jobs are non-dumpable and Landlock-scoped: not even their own or the worker's environ is readable
    assert evidence == b""


def test_host_processes_are_invisible(warm: Sandbox, tmp_path: Path) -> None:
    model = eval_checkpoint(
        tmp_path / "ps.pt",
        "__import__('torch').tensor([int(p) for p in __import__('os').listdir('/proc') if p.isdigit()])",
    )
    pids = set(_load(warm, model)["evidence"].tolist())
    assert os.getpid() not in pids
    # a job's /proc holds no pid but its own: not the worker (pid 1 of the sandbox), not a sibling
    assert len(pids) == 1 and 1 not in pids, f"the job sees the processes {sorted(pids)}"
    by_pid = eval_checkpoint(tmp_path / "pid.pt", f"__import__('os').kill({os.getpid()}, 0)")
    with pytest.raises(SandboxError, match=r"No such process|Operation not permitted"):
        _load(warm, by_pid)


def test_nested_user_namespace_is_blocked(warm: Sandbox, tmp_path: Path) -> None:
    model = exec_checkpoint(tmp_path / "userns.pt", _ctypes_call("unshare(0x10000000)"))
    with pytest.raises(SandboxError, match=r"PermissionError: .*Operation not permitted"):
        _load(warm, model)


def test_load_state_dict_refuses_the_same_payload(tmp_path: Path) -> None:
    """The public one-shot API goes through the same walls (cold start, own worker)."""
    model = exec_checkpoint(
        tmp_path / "system.pt", f"import os\nassert os.system('touch {tmp_path}/pwned') == 0"
    )
    with pytest.raises(SandboxError, match=r"sandboxed load failed: AssertionError"):
        load_state_dict(model, policy=SandboxPolicy(limits=FAST_LIMITS), unsafe_skip_scan=True)
    assert not (tmp_path / "pwned").exists()


#: a job's attempt on the kernel budgets of its host user (stdlib only: it runs inside the sandbox):
#: inotify instances until refused, one fanotify group (FAN_REPORT_FID: allowed unprivileged), then
#: queued real-time signals to itself until EAGAIN, all held while the job lives
_HOST_BUDGETS = """
import builtins, ctypes, errno, os, resource, signal
libc = ctypes.CDLL(None, use_errno=True)
def err():
    return errno.errorcode.get(ctypes.get_errno(), '?')
held = []
inotify = 'none'
for _ in range(4096):
    fd = libc.inotify_init1(0)
    if fd < 0:
        inotify = err()
        break
    held.append(fd)
fan = libc.fanotify_init(0x200, 0)
fanotify = err() if fan < 0 else 'ok'
held.append(fan)
class Value(ctypes.Union):
    _fields_ = [('i', ctypes.c_int), ('p', ctypes.c_void_p)]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
cap = resource.getrlimit(resource.RLIMIT_SIGPENDING)[0]
queued = 0
while queued <= (cap if cap >= 0 else 1 << 20):
    if libc.sigqueue(os.getpid(), int(signal.SIGRTMIN), Value(0)) != 0:
        break
    queued += 1
builtins.airlock_held = held
builtins.airlock_seen = f'{len(held) - 1} {inotify} {fanotify} {queued}'.encode()
"""


def _as_sandbox_user(probe: str) -> str:
    """Run ``probe`` (it sets ``result``) in a forked child as the sandbox's host uid: 65534 for a
    root caller, the caller itself otherwise; its ``result`` comes back."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(SandboxPolicy().sandbox_gid)
                os.setuid(SandboxPolicy().sandbox_uid)
            scope: dict[str, object] = {}
            exec(probe, scope)  # noqa: S102 - the test's own probe, not model bytes
            os.write(write, str(scope["result"]).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as answer:
        return answer.read().decode()


_HOST_USER_PROBE = """
import ctypes, errno, os, signal
libc = ctypes.CDLL(None, use_errno=True)
def status(rc):
    return 'ok' if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), '?')
class Value(ctypes.Union):
    _fields_ = [('i', ctypes.c_int), ('p', ctypes.c_void_p)]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
timer = ctypes.c_void_p()
result = ' '.join((
    status(libc.inotify_init1(0)),
    status(libc.sigqueue(os.getpid(), int(signal.SIGRTMIN), Value(0))),
    status(libc.timer_create(1, None, ctypes.byref(timer))),
))
"""


def test_a_job_takes_nothing_from_its_host_users_kernel_budgets(warm: Sandbox, tmp_path: Path) -> None:
    """inotify instances (128 per user on the host), fanotify groups and queued signals are counted
    per *host* user, across every user namespace: a job that held them all made inotify_init,
    sigqueue and timer_create fail for every process of the sandbox's host uid (the caller itself
    when it is not root) for as long as it lived (outside review 26)."""
    assert _as_sandbox_user(_HOST_USER_PROBE) == "ok ok ok"
    model = exec_then_eval_checkpoint(
        tmp_path / "budgets.pt",
        f"exec({_HOST_BUDGETS!r}, {{}})",
        bytes_tensor("__import__('builtins').airlock_seen"),
    )
    with warm.open(model) as worker:  # the job lives, holding what it got, while the host looks
        seen = worker.state_dict()["evidence"].tobytes().decode()
        on_the_host = _as_sandbox_user(_HOST_USER_PROBE)
    assert on_the_host == "ok ok ok"
    # refused by the job filter (EPERM), not by the per-user limit (EMFILE); queued signals stop at
    # the job's own RLIMIT_SIGPENDING, one per task it may have
    assert seen == f"0 EPERM EPERM {FAST_LIMITS.tasks}"
    _still_serves(warm, tmp_path)


#: pipes grown to 1 MiB until refused, then default pipes until the descriptors run out, all held
_PIPE_BUDGET = """
import builtins, fcntl, os
held = []
grown = 0
refused = ''
try:
    while True:
        read, write = os.pipe()
        held += [read, write]
        fcntl.fcntl(write, 1031, 1 << 20)
        grown += 1
except OSError as exc:
    refused = exc.strerror
try:
    while True:
        held += os.pipe()
except OSError:
    pass
builtins.airlock_held = held
builtins.airlock_seen = f'{grown} {refused}'.encode()
"""

_HOST_PIPE_PROBE = """
import fcntl, os
read, write = os.pipe()
size = fcntl.fcntl(write, 1032)
try:
    fcntl.fcntl(write, 1031, 1 << 20)
    grow = 'ok'
except OSError as exc:
    grow = exc.strerror
result = f'{size} {grow}'
"""


def test_a_job_cannot_grow_pipes_into_its_host_users_budget(warm: Sandbox, tmp_path: Path) -> None:
    """Pipe buffers are charged to one budget per host user (fs.pipe-user-pages-soft, 64 MiB): a job
    that grew its pipes to 1 MiB filled it, and while it lived every process of the sandbox's host
    uid (the caller itself when it is not root) got pipes of 2 pages and could not grow one
    (EPERM) (outside review 26). A job's pipes keep the default size now."""
    assert _as_sandbox_user(_HOST_PIPE_PROBE) == "65536 ok"
    model = exec_then_eval_checkpoint(
        tmp_path / "pipes.pt",
        f"exec({_PIPE_BUDGET!r}, {{}})",
        bytes_tensor("__import__('builtins').airlock_seen"),
    )
    with warm.open(model) as worker:
        seen = worker.state_dict()["evidence"].tobytes().decode()
        on_the_host = _as_sandbox_user(_HOST_PIPE_PROBE)
    assert on_the_host == "65536 ok"
    assert seen == "0 Operation not permitted"  # the job filter, at the first pipe
    _still_serves(warm, tmp_path)


#: epoll items multiplied past the descriptors: each (epoll, file, descriptor number) is one item,
#: and it stays when the number is re-used for the next file (the file is still open elsewhere)
_EPOLL_ITEMS = """
import builtins, os, select
items = 0
refused = ''
try:
    files = [os.eventfd(0) for _ in range(20)]
    polls = [select.epoll() for _ in range(20)]
    for poll in polls:
        for file in files:
            for number in range(100, 150):
                os.dup2(file, number, inheritable=False)
                poll.register(number, select.EPOLLIN)
                items += 1
    builtins.airlock_held = (files, polls)
except OSError as exc:
    refused = exc.strerror
builtins.airlock_seen = f'{items} {refused}'.encode()
"""


def test_a_job_cannot_multiply_epoll_items_past_its_descriptors(warm: Sandbox, tmp_path: Path) -> None:
    """A job with 90 descriptors held 20,000 epoll items (kernel memory outside RLIMIT_AS, counted
    against the host user's fs.epoll.max_user_watches; 460,000 items took 100 MB from 200
    descriptors): epoll is refused in a CPU job (outside review 26)."""
    model = exec_then_eval_checkpoint(
        tmp_path / "epoll.pt",
        f"exec({_EPOLL_ITEMS!r}, {{}})",
        bytes_tensor("__import__('builtins').airlock_seen"),
    )
    seen = _load(warm, model)["evidence"].tobytes().decode()
    assert seen == "0 Operation not permitted"  # the job filter, at the first epoll_create1
    _still_serves(warm, tmp_path)
