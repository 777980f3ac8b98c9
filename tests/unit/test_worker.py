"""The trusted side of the sandbox (``airlock.sandbox._worker``) against a worker played by the test.

No sandbox is started: a real child process stands in for the worker (so that killing it is real),
and the test speaks the worker's and the job's side of the protocol on socketpairs. Pinned: the
spawn exchange (a job, an exit report first, a refused spawn, out-of-protocol replies that kill the
worker), exit reports (bounded and escaped), job tracking by pidfd only for the worker's own
children, every error path of a job exchange with its exact message, deadlines, closing, and the
definition file's size cap at N-1, N, N+1.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

np = pytest.importorskip("numpy")

from airlock.errors import ModelError, SandboxError, UsageError  # noqa: E402
from airlock.sandbox import _worker  # noqa: E402
from airlock.sandbox._frames import FrameCaps, recv_frame, send_frame  # noqa: E402
from airlock.sandbox._messages import TensorCaps, encode_tensors  # noqa: E402
from airlock.sandbox._policy import SandboxPolicy  # noqa: E402


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


class Fake:
    """A Sandbox without a sandbox: ``peer`` is the worker's end of the control socket."""

    def __init__(self, cmd: list[str] | None = None, layers: tuple[str, ...] = ("namespaces",)) -> None:
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = subprocess.Popen(
            cmd or ["sleep", "60"], start_new_session=True, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self.sandbox = _worker.Sandbox.__new__(_worker.Sandbox)
        self.sandbox.policy = SandboxPolicy()
        self.sandbox._exits = {}
        self.sandbox._job_pidfds = {}
        self.sandbox._launched = SimpleNamespace(  # type: ignore[assignment]
            control=ours, process=self.process, cgroups=None, layers=layers
        )

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.sandbox.kill()
        self.peer.close()


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = Fake()
    yield f
    f.close()


def play(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


CAPS = FrameCaps(1 << 16, 1 << 16)


def test_control_caps_and_limits() -> None:
    # no control message carries a payload (only a job's tensors reply may)
    assert (
        FrameCaps(max_header_bytes=65536, max_frame_bytes=65536, payload_types=frozenset())
        == _worker._CONTROL_CAPS
    )
    assert _worker._MAX_EXITS == 4096
    assert _worker._MAX_DEFINITION == 1 << 20


# -- the sandbox's control exchange ------------------------------------------------------------------


def test_spawn_returns_the_job_socket_and_pid(fake: Fake) -> None:
    got: dict[str, Any] = {}

    def worker() -> None:
        frame = recv_frame(fake.peer, CAPS, deadline=soon())
        got["header"], got["fds"] = frame.header, frame.fds
        job = socket.socket(fileno=frame.fds[0])
        send_frame(fake.peer, {"type": "exited", "pid": 7, "status": "exit \x1b[31m3"}, deadline=soon())
        send_frame(fake.peer, {"type": "spawned", "pid": 1}, deadline=soon())
        job.sendall(b"hi")
        job.close()

    thread = play(worker)
    sock, pid = fake.sandbox._spawn(soon())
    thread.join(5)
    try:
        assert (got["header"], len(got["fds"]), pid) == ({"type": "spawn"}, 1, 1)
        assert sock.recv(2) == b"hi"  # the socket whose other end went to the worker
        assert fake.sandbox._exits == {7: "exit \\x1b[31m3"}
        assert fake.sandbox._job_pidfds == {}
    finally:
        sock.close()


def test_spawn_refused_by_the_worker(fake: Fake) -> None:
    def worker() -> None:
        frame = recv_frame(fake.peer, CAPS, deadline=soon())
        os.close(frame.fds[0])
        send_frame(fake.peer, {"type": "spawn_failed", "error": "EAGAIN\x07" + "x" * 300}, deadline=soon())

    thread = play(worker)
    with pytest.raises(SandboxError) as info:
        fake.sandbox._spawn(soon())
    thread.join(5)
    assert str(info.value) == (
        "sandbox: the worker could not start a job: EAGAIN\\x07" + "x" * 193 + "... "
        "(the other jobs of this sandbox hold its 256 tasks)"
    )
    assert fake.sandbox._launched is not None  # the worker stays up


def test_spawn_reply_out_of_protocol(fake: Fake) -> None:
    def worker() -> None:
        frame = recv_frame(fake.peer, CAPS, deadline=soon())
        os.close(frame.fds[0])
        send_frame(fake.peer, {"type": "loaded", "pid": 3}, deadline=soon())

    thread = play(worker)
    with pytest.raises(SandboxError) as info:
        fake.sandbox._spawn(soon())
    thread.join(5)
    assert str(info.value) == "channel: message type 'loaded' is not one of spawned, exited, spawn_failed"
    # a worker out of protocol is no longer trusted to run jobs: killed, as for a bad frame
    assert fake.sandbox._launched is None
    assert fake.process.wait(timeout=5) == -9


def test_spawn_reply_over_the_control_cap_kills_the_worker(fake: Fake) -> None:
    def worker() -> None:
        frame = recv_frame(fake.peer, CAPS, deadline=soon())
        os.close(frame.fds[0])
        fake.peer.sendall(b"ALF1" + (65537).to_bytes(4, "little") + bytes(8))

    thread = play(worker)
    with pytest.raises(
        SandboxError, match=r"^channel: frame header of 65537 bytes exceeds the cap of 65536$"
    ):
        fake.sandbox._spawn(soon())
    thread.join(5)
    assert fake.sandbox._launched is None
    assert fake.process.wait(timeout=5) == -9


def test_spawn_default_deadline_is_the_wall_clock_limit(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float | None] = []

    def spy(
        sock: socket.socket, caps: FrameCaps, *, accept_fds: bool = True, deadline: float | None = None
    ) -> Any:
        seen.append(deadline)
        assert accept_fds is False and caps == _worker._CONTROL_CAPS
        return SimpleNamespace(header={"type": "spawned", "pid": 1})

    monkeypatch.setattr(_worker, "recv_frame", spy)
    start = time.monotonic()
    sock, _ = fake.sandbox._spawn()
    sock.close()
    assert seen[0] is not None and start + 299 < seen[0] < time.monotonic() + 301


def test_spawn_request_not_taken_in_time_kills_the_worker(fake: Fake) -> None:
    control = fake.sandbox.control
    control.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    control.setblocking(False)
    with pytest.raises(BlockingIOError):
        while True:  # the worker never reads: fill its socket
            control.send(bytes(65536))
    start = time.monotonic()
    with pytest.raises(
        SandboxError, match=r"^sandbox: the worker did not take a spawn request in time; worker killed$"
    ):
        fake.sandbox._spawn(start + 0.3)
    assert time.monotonic() - start < 4
    assert fake.sandbox._launched is None


def test_exit_reports_are_bounded_and_escaped(fake: Fake) -> None:
    sandbox = fake.sandbox
    for pid in range(4096):
        sandbox._record_exit(pid, "exit 0")
    assert len(sandbox._exits) == 4096
    sandbox._record_exit(5000, "\n" + "y" * 200)
    assert len(sandbox._exits) == 4096 and 0 not in sandbox._exits and 1 in sandbox._exits
    assert sandbox._exits[5000] == "\\n" + "y" * 99 + "..."
    sandbox._record_exit(1, "again")  # an old pid reported again: still bounded
    assert len(sandbox._exits) == 4096 and sandbox._exits[1] == "again"


def test_exit_status_waits_for_the_report(fake: Fake) -> None:
    def worker() -> None:
        time.sleep(0.05)
        send_frame(fake.peer, {"type": "exited", "pid": 4, "status": "exit 1"}, deadline=soon())
        send_frame(fake.peer, {"type": "exited", "pid": 9, "status": "killed by SIGXCPU"}, deadline=soon())

    thread = play(worker)
    assert fake.sandbox.exit_status(9, wait=5) == "killed by SIGXCPU"
    thread.join(5)
    assert fake.sandbox._exits == {4: "exit 1", 9: "killed by SIGXCPU"}
    start = time.monotonic()
    assert fake.sandbox.exit_status(4, wait=3) == "exit 1"  # already known: no wait
    assert time.monotonic() - start < 1


def test_exit_status_gives_up(fake: Fake) -> None:
    start = time.monotonic()
    assert fake.sandbox.exit_status(9, wait=0.3) == "unknown (worker did not report)"
    assert 0.25 < time.monotonic() - start < 3
    send_frame(fake.peer, {"type": "hello", "pid": 1}, deadline=soon())
    start = time.monotonic()
    assert fake.sandbox.exit_status(9, wait=3) == "unknown (worker did not report)"  # out of protocol: stop
    assert time.monotonic() - start < 2
    fake.sandbox.kill()
    assert fake.sandbox.exit_status(9, wait=3) == "unknown (worker did not report)"


def test_default_wait_for_an_exit_report(fake: Fake) -> None:
    start = time.monotonic()
    assert fake.sandbox.exit_status(9) == "unknown (worker did not report)"
    assert 1.9 < time.monotonic() - start < 5


def test_recv_control_passes_frames_through(fake: Fake) -> None:
    send_frame(fake.peer, {"type": "hello", "pid": 1}, deadline=soon())
    assert fake.sandbox._recv_control(soon()).header == {"type": "hello", "pid": 1}


def test_a_closed_sandbox(fake: Fake) -> None:
    sandbox = fake.sandbox
    assert sandbox.layers == ("namespaces",)
    sandbox.kill()
    layers: tuple[str, ...] = sandbox.layers
    assert layers == ()
    with pytest.raises(SandboxError, match=r"^sandbox: already closed$"):
        _ = fake.sandbox.control
    fake.sandbox.kill()  # twice is fine
    fake.sandbox.close()


def test_kill_ends_the_worker_and_closes_the_control_socket(fake: Fake) -> None:
    control = fake.sandbox.control
    fake.sandbox.kill()
    assert fake.process.wait(timeout=5) == -9
    assert control.fileno() == -1
    assert fake.process.stderr is not None and fake.process.stderr.closed
    assert fake.peer.recv(1) == b""


def test_kill_runs_the_cgroup_cleanup(fake: Fake) -> None:
    calls: list[str] = []
    assert fake.sandbox._launched is not None
    fake.sandbox._launched.cgroups = SimpleNamespace(kill_and_remove=lambda: calls.append("k"))  # type: ignore[assignment]
    fake.sandbox.kill()
    assert calls == ["k"]


def test_close_lets_the_worker_exit_on_its_own() -> None:
    # this worker exits when its control socket closes, as pid 1 does
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        ["sh", "-c", "read line; exit 5"],
        stdin=theirs.fileno(),
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    theirs.close()
    sandbox = _worker.Sandbox.__new__(_worker.Sandbox)
    sandbox.policy = SandboxPolicy()
    sandbox._exits, sandbox._job_pidfds = {}, {}
    sandbox._launched = SimpleNamespace(control=ours, process=process, cgroups=None, layers=())  # type: ignore[assignment]
    start = time.monotonic()
    with sandbox:
        pass
    assert process.wait(timeout=5) == 5  # exited by itself, not killed
    assert time.monotonic() - start < 4
    assert sandbox._launched is None


def test_stderr_of_a_worker_that_did_not_start() -> None:
    f = Fake(["sh", "-c", "printf '  boom: no seccomp\\n\\n' >&2; exit 1"])
    try:
        assert f.sandbox._stderr() == "boom: no seccomp"
    finally:
        f.close()
    quiet = Fake(["true"])
    try:
        assert quiet.sandbox._stderr() == "(no output)"
    finally:
        quiet.close()


def test_stderr_of_a_worker_that_hangs(fake: Fake) -> None:
    start = time.monotonic()
    assert fake.sandbox._stderr() == "(no output)"
    assert 1.9 < time.monotonic() - start < 5


def test_jobs_are_tracked_only_when_they_are_the_workers_children() -> None:
    f = Fake(["sh", "-c", "sleep 60 & wait"], layers=())
    try:
        deadline = time.monotonic() + 5
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            path = Path(f"/proc/{f.process.pid}/task/{f.process.pid}/children")
            children = [int(x) for x in path.read_text().split()]
            time.sleep(0.02)
        assert children
        child = children[0]
        f.sandbox._track_job(os.getpid())  # not the worker's child
        f.sandbox._track_job(2**22 + 12345)  # no such process
        assert f.sandbox._job_pidfds == {}
        f.sandbox._track_job(child)
        assert list(f.sandbox._job_pidfds) == [child]
        pidfd = f.sandbox._job_pidfds[child]
        f.sandbox.kill()
        assert f.sandbox._job_pidfds == {}
        with pytest.raises(OSError):
            os.fstat(pidfd)  # closed
    finally:
        f.close()


def test_spawned_job_without_a_pid_namespace_is_tracked() -> None:
    f = Fake(["sh", "-c", "sleep 60 & wait"], layers=("seccomp",))
    try:
        deadline = time.monotonic() + 5
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            children = [
                int(x)
                for x in Path(f"/proc/{f.process.pid}/task/{f.process.pid}/children").read_text().split()
            ]
            time.sleep(0.02)

        def worker(pid: int) -> None:
            frame = recv_frame(f.peer, CAPS, deadline=soon())
            os.close(frame.fds[0])
            send_frame(f.peer, {"type": "spawned", "pid": pid}, deadline=soon())

        for pid, tracked in ((1, False), (children[0], True)):
            thread = play(lambda pid=pid: worker(pid))  # type: ignore[misc]
            sock, got = f.sandbox._spawn(soon())
            thread.join(5)
            sock.close()
            assert got == pid and (pid in f.sandbox._job_pidfds) is tracked
    finally:
        f.close()


def test_spawned_job_in_a_pid_namespace_is_not_tracked(fake: Fake) -> None:
    def worker() -> None:
        frame = recv_frame(fake.peer, CAPS, deadline=soon())
        os.close(frame.fds[0])
        send_frame(fake.peer, {"type": "spawned", "pid": os.getpid()}, deadline=soon())

    thread = play(worker)
    sock, _ = fake.sandbox._spawn(soon())
    thread.join(5)
    sock.close()
    assert fake.sandbox._job_pidfds == {}


# -- a job exchange ------------------------------------------------------------------------------------


class Job:
    """A Worker without a job process: ``peer`` is the job's end of its socket."""

    def __init__(self, fake: Fake) -> None:
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        w = _worker.Worker.__new__(_worker.Worker)
        w._sock, w._owned, w.sandbox, w._pid = ours, None, fake.sandbox, 42
        limits = fake.sandbox.policy.limits
        w._caps = FrameCaps(limits.max_header_bytes, limits.frame_bytes, _worker._JOB_PAYLOADS)
        w._tensor_caps = TensorCaps(limits.max_tensors, limits.max_rank, limits.frame_bytes)
        self.worker = w
        fake.sandbox._exits[42] = "exit 9"  # so that a failure does not wait for the report


@pytest.fixture
def job(fake: Fake) -> Iterator[Job]:
    j = Job(fake)
    yield j
    j.worker.close()
    j.peer.close()


def test_state_dict_round_trip(job: Job) -> None:
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}

    def peer() -> None:
        frame = recv_frame(job.peer, CAPS, deadline=soon())
        assert frame.header == {"type": "state_dict"}
        specs, buffers = encode_tensors(list(arrays.items()))
        send_frame(job.peer, {"type": "tensors", "tensors": specs}, buffers, deadline=soon())

    thread = play(peer)
    out = job.worker.state_dict()
    thread.join(5)
    assert set(out) == {"w", "b"}
    assert out["w"].tolist() == arrays["w"].tolist() and out["b"].tolist() == [1, 2]


def test_infer_sends_the_inputs(job: Job) -> None:
    got: dict[str, Any] = {}

    def peer() -> None:
        frame = recv_frame(job.peer, CAPS, deadline=soon())
        got["header"], got["payload"] = frame.header, bytes(frame.payload)
        specs, buffers = encode_tensors([("y", np.array([3.0], dtype=np.float64))])
        send_frame(job.peer, {"type": "tensors", "tensors": specs}, buffers, deadline=soon())

    thread = play(peer)
    out = job.worker.infer({"x": np.array([1, 2], dtype=np.int16)})
    thread.join(5)
    assert got["header"]["type"] == "infer" and got["payload"] == np.array([1, 2], dtype=np.int16).tobytes()
    assert out["y"].tolist() == [3.0]


@pytest.mark.parametrize(
    ("stage", "error"),
    [("infer", ModelError), ("state_dict", ModelError), ("load", SandboxError), ("start", SandboxError)],
)
def test_an_error_reported_by_the_job(job: Job, stage: str, error: type[Exception]) -> None:
    send_frame(
        job.peer,
        {"type": "error", "stage": stage, "error": "ValueError\x1b", "message": "bad\x00input"},
        deadline=soon(),
    )
    with pytest.raises(error) as info:
        job.worker._expect(stage, ("tensors",), soon())
    assert type(info.value) is error
    assert str(info.value) == f"sandboxed {stage} failed: ValueError\\x1b: bad\\x00input"
    assert job.worker._sock is not None  # the job caught it: it is still spoken to


def test_error_report_fields_are_bounded(job: Job) -> None:
    send_frame(
        job.peer,
        {"type": "error", "stage": "s" * 50, "error": "E" * 300, "message": "m" * 5000},
        deadline=soon(),
    )
    with pytest.raises(SandboxError) as info:
        job.worker._expect("infer", ("tensors",), soon())
    assert str(info.value) == f"sandboxed {'s' * 40}... failed: {'E' * 200}...: {'m' * 4000}..."


def test_a_reply_out_of_protocol_drops_the_job(job: Job) -> None:
    send_frame(job.peer, {"type": "loaded", "kind": "k", "summary": "s"}, deadline=soon())
    with pytest.raises(SandboxError) as info:
        job.worker._expect("infer", ("tensors",), soon())
    assert str(info.value) == (
        "sandboxed infer failed: the job died (exit 9): channel: message type 'loaded' is not one of tensors, error"
    )
    assert job.worker._sock is None
    with pytest.raises(SandboxError, match=r"^worker: already closed \(or failed\)$"):
        job.worker._expect("infer", ("tensors",), soon())
    with pytest.raises(SandboxError, match=r"^worker: already closed \(or failed\)$"):
        job.worker._send("infer", {"type": "infer"}, (), [], soon())


def test_a_dead_job_after_the_worker_was_killed(job: Job, fake: Fake) -> None:
    job.peer.close()
    fake.sandbox.kill()
    with pytest.raises(SandboxError) as info:
        job.worker._expect("load", ("loaded",), soon())
    assert (
        str(info.value)
        == "sandboxed load failed: the job died (worker killed): channel: peer closed the connection"
    )


def test_a_silent_job_hits_the_deadline(job: Job, fake: Fake) -> None:
    start = time.monotonic()
    with pytest.raises(SandboxError) as info:
        job.worker._expect("infer", ("tensors",), start + 0.3)
    assert (
        str(info.value)
        == "sandboxed infer exceeded the wall-clock limit of 300.0 s; the worker tree was killed"
    )
    assert time.monotonic() - start < 4
    assert job.worker._sock is None and fake.sandbox._launched is None
    assert fake.process.wait(timeout=5) == -9


def test_a_send_to_a_dead_job(job: Job) -> None:
    job.peer.close()
    with pytest.raises(SandboxError) as info:
        job.worker._send("load", {"type": "state_dict"}, (), [], soon())
    assert str(info.value) == (
        "sandboxed load failed: the job died (exit 9): channel: sending a frame failed: [Errno 32] Broken pipe"
    )
    assert job.worker._sock is None


def test_a_send_to_a_dead_job_after_the_worker_was_killed(job: Job, fake: Fake) -> None:
    job.peer.close()
    fake.sandbox.kill()
    with pytest.raises(SandboxError, match=r"^sandboxed infer failed: the job died \(worker killed\): "):
        job.worker._send("infer", {"type": "state_dict"}, (), [], soon())


def test_a_send_past_the_deadline(job: Job, fake: Fake) -> None:
    start = time.monotonic()
    with pytest.raises(SandboxError) as info:
        job.worker._send("infer", {"type": "infer"}, [memoryview(bytes(8 << 20))], [], start + 0.3)
    assert (
        str(info.value)
        == "sandboxed infer exceeded the wall-clock limit of 300.0 s; the worker tree was killed"
    )
    assert time.monotonic() - start < 4
    assert fake.sandbox._launched is None and job.worker._sock is None


def test_a_bad_tensor_table_drops_the_job(job: Job) -> None:
    send_frame(job.peer, {"type": "tensors", "tensors": [5]}, deadline=soon())
    with pytest.raises(SandboxError) as info:
        job.worker._tensors("infer", soon())
    assert str(info.value) == (
        "sandboxed infer failed: the job sent a bad tensor table: channel: tensor 0 must have exactly name, "
        "dtype, shape, offset, nbytes"
    )
    assert job.worker._sock is None


def test_reply_caps_come_from_the_policy(job: Job) -> None:
    # the caps themselves are what Worker.__init__ builds (test_worker_takes_its_limits_from_a_shared_sandbox);
    # here: the header cap they carry is enforced on a reply
    limits = SandboxPolicy().limits
    job.peer.sendall(b"ALF1" + (limits.max_header_bytes + 1).to_bytes(4, "little") + bytes(8))
    with pytest.raises(SandboxError, match="frame header of 4194305 bytes exceeds the cap of 4194304"):
        job.worker._expect("infer", ("tensors",), soon())


def test_deadline_is_the_wall_clock_limit(job: Job) -> None:
    before = time.monotonic()
    deadline = job.worker._deadline()
    assert before + 300 <= deadline <= time.monotonic() + 300


def test_close_says_goodbye_once(job: Job) -> None:
    job.worker.close()
    frame = recv_frame(job.peer, CAPS, deadline=soon())
    assert frame.header == {"type": "close"}
    assert job.peer.recv(1) == b""
    job.worker.close()  # twice is fine
    assert job.worker._sock is None


def test_close_of_a_job_that_is_gone(job: Job) -> None:
    job.peer.close()
    with job.worker:
        pass
    assert job.worker._sock is None


def test_close_stops_an_owned_sandbox(job: Job) -> None:
    owned = Fake(["true"])  # a worker that has already exited: close() does not wait for it
    try:
        owned.process.wait(timeout=5)
        job.worker._owned = owned.sandbox
        job.worker.close()
        assert owned.sandbox._launched is None and job.worker._owned is None
    finally:
        owned.close()


# -- the definition file ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "ok"), [((1 << 20) - 1, True), (1 << 20, True), ((1 << 20) + 1, False)])
def test_definition_size_cap(tmp_path: Path, size: int, ok: bool) -> None:
    path = tmp_path / "model_def.py"
    path.write_bytes(b"#" * size)
    if ok:
        assert _worker._read_definition(path) == "#" * size
    else:
        with pytest.raises(UsageError) as info:
            _worker._read_definition(path)
        assert str(info.value) == f"definition {str(path)!r} is larger than 1048576 bytes"


def test_definition_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.py"
    path.write_bytes(b"x = '\xff'\n")
    with pytest.raises(UsageError) as info:
        _worker._read_definition(path)
    assert str(info.value) == (
        f"definition {str(path)!r} is not UTF-8 text: 'utf-8' codec can't decode byte 0xff in position 5: "
        "invalid start byte"
    )
    path.write_text("s = 'é'\n", encoding="utf-8")
    assert _worker._read_definition(path) == "s = 'é'\n"


def test_definition_must_be_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="is not a regular file"):
        _worker._read_definition(fifo)


# -- starting a sandbox and a job, with the worker played by the test ---------------------------------
#
# `launch` (bubblewrap, seccomp, Landlock: tests/sandbox starts the real one) is replaced by a real
# child process and a thread that speaks the worker's and then each job's side of the protocol.


class Played:
    """What the played worker saw, and how it behaves."""

    def __init__(
        self, hello: dict[str, object] | None = None, job_error: dict[str, object] | None = None
    ) -> None:
        self.hello = hello if hello is not None else {"type": "hello", "pid": 1}
        self.job_error = job_error
        #: "silent-start": no ready; "silent-load": no reply to load; "gone": closes after ready
        self.job_mode = ""
        self.kind, self.layers = "checkpoint", "seccomp landlock\x1b"
        self.launched: list[tuple[object, tuple[str, ...]]] = []
        self.loads: list[tuple[dict[str, object], bytes]] = []
        self.requests: list[dict[str, object]] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        #: the played jobs' threads: they record what they receive after the host has moved on
        self.jobs: list[threading.Thread] = []

    def launch(self, policy: object, runtimes: tuple[str, ...]) -> Any:
        self.launched.append((policy, runtimes))
        ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process = subprocess.Popen(
            ["sh", "-c", "printf 'worker says hi' >&2; exec sleep 60"],
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.processes.append(process)
        play(lambda: self._worker(peer, process))
        return SimpleNamespace(control=ours, process=process, cgroups=None, layers=("namespaces", "seccomp"))

    def _worker(self, peer: socket.socket, process: subprocess.Popen[bytes]) -> None:
        """Like pid 1 in the sandbox: when its control socket closes, the worker exits."""
        try:
            if self.hello:
                send_frame(peer, self.hello, deadline=soon())
            while True:
                frame = recv_frame(peer, CAPS, deadline=soon(30))
                job = socket.socket(fileno=frame.fds[0])
                self.jobs.append(play(lambda job=job: self._job(job)))  # type: ignore[misc]
                send_frame(peer, {"type": "spawned", "pid": 1}, deadline=soon())
        except (SandboxError, TimeoutError, OSError):
            peer.close()
            process.terminate()

    def _job(self, sock: socket.socket) -> None:
        with sock:
            try:
                if self.job_mode == "silent-start":
                    time.sleep(5)
                    return
                send_frame(sock, {"type": "ready", "pid": 1, "layers": self.layers}, deadline=soon())
                if self.job_mode == "gone":
                    return
                frame = recv_frame(sock, CAPS, deadline=soon())
                with os.fdopen(frame.fds[0], "rb") as model:
                    self.loads.append((frame.header, model.read()))
                if self.job_error is not None:
                    send_frame(sock, self.job_error, deadline=soon())
                    return
                if self.job_mode == "silent-load":
                    time.sleep(5)
                    return
                send_frame(
                    sock, {"type": "loaded", "kind": self.kind, "summary": "1 tensor\n"}, deadline=soon()
                )
                while True:
                    request = recv_frame(sock, CAPS, deadline=soon(30)).header
                    self.requests.append(request)
                    if request["type"] == "close":
                        return
                    specs, buffers = encode_tensors([("w", np.ones(2, np.float32))])
                    send_frame(sock, {"type": "tensors", "tensors": specs}, buffers, deadline=soon())
            except (SandboxError, TimeoutError, OSError):
                return

    def settle(self) -> None:
        """Wait until every played job has returned: the host's last message (``close``) is sent
        before the host returns, but recorded by the job's thread whenever it next runs."""
        for thread in self.jobs:
            thread.join(30)
            assert not thread.is_alive(), "a played job did not end"

    def reap(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def played(monkeypatch: pytest.MonkeyPatch) -> Iterator[Played]:
    p = Played()
    monkeypatch.setattr(_worker, "launch", p.launch)
    yield p
    p.reap()


def _model(tmp_path: Path) -> Path:
    path = tmp_path / "m.pt"
    path.write_bytes(b"\x80\x02}q\x00.")  # a pickle: runtime torch
    return path


def test_worker_with_its_own_sandbox(played: Played, tmp_path: Path) -> None:
    policy = SandboxPolicy()
    with _worker.Worker(_model(tmp_path), policy=policy) as worker:
        assert played.launched == [(policy, ("torch",))]
        assert worker.info == _worker.LoadInfo(
            "torch", "checkpoint", "1 tensor\\n", "seccomp landlock\\x1b", ("namespaces", "seccomp")
        )
        assert worker.state_dict()["w"].tolist() == [1.0, 1.0]
        owned = worker._owned
        assert owned is not None and worker.sandbox is owned
    played.settle()
    assert played.loads == [
        (
            {"type": "load", "runtime": "torch", "definition": None, "threads": policy.limits.threads},
            b"\x80\x02}q\x00.",
        )
    ]
    assert played.requests == [{"type": "state_dict"}, {"type": "close"}]
    assert owned._launched is None and worker._owned is None


def test_worker_in_a_shared_sandbox_with_a_definition(played: Played, tmp_path: Path) -> None:
    definition = tmp_path / "d.py"
    definition.write_text("def build_model():\n    return None\n", encoding="utf-8")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not read here")
    with _worker.Sandbox(runtimes=("torch", "definition")) as sandbox:
        assert played.launched == [(sandbox.policy, ("torch", "definition"))]
        assert sandbox.runtimes == ("torch", "definition")
        with sandbox.open(weights, definition=definition) as worker:
            assert worker._owned is None and worker.sandbox is sandbox
            assert worker.info.runtime == "definition"
        with sandbox.open(weights, definition=definition, runtime="torch") as worker:
            assert worker.info.runtime == "torch"
        assert sandbox._launched is not None  # a shared sandbox outlives its workers
    assert [h["runtime"] for h, _ in played.loads] == ["definition", "torch"]
    assert played.loads[0][0]["definition"] == "def build_model():\n    return None\n"
    assert played.loads[0][1] == b"not read here"


def test_worker_from_a_gated_model(played: Played, tmp_path: Path) -> None:
    from airlock.sandbox import gate

    gated = gate(_model(tmp_path), unsafe_skip_scan=True)
    try:
        with _worker.Worker(gated, runtime="torch"):
            pass
        assert gated.fd >= 0  # the caller's gated model stays open
    finally:
        gated.close()
    assert played.loads[0][1] == b"\x80\x02}q\x00."


def test_worker_refuses_an_unknown_runtime_before_starting(played: Played, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        _worker.Worker(_model(tmp_path), runtime="tensorflow")
    with pytest.raises(UsageError):
        _worker.Sandbox(runtimes=("torch", "tensorflow"))
    assert played.launched == []


def test_a_job_that_fails_to_load(played: Played, tmp_path: Path) -> None:
    played.job_error = {"type": "error", "stage": "load", "error": "UnpicklingError", "message": "bad"}
    with pytest.raises(SandboxError, match=r"^sandboxed load failed: UnpicklingError: bad$"):
        _worker.Worker(_model(tmp_path))
    assert all(p.poll() is not None for p in played.processes)  # its own sandbox was closed


def test_load_state_dict_gates_and_loads(played: Played, tmp_path: Path) -> None:
    policy = SandboxPolicy()
    assert _worker.load_state_dict(_model(tmp_path), policy=policy)["w"].tolist() == [1.0, 1.0]
    assert played.launched[0][0] is policy
    from airlock.sandbox import gate

    gated = gate(_model(tmp_path), unsafe_skip_scan=True)
    try:
        assert _worker.load_state_dict(gated)["w"].tolist() == [1.0, 1.0]
        assert gated.fd >= 0  # not closed: the caller owns it
    finally:
        gated.close()


def test_load_state_dict_passes_the_gate_options(played: Played, tmp_path: Path) -> None:
    from airlock.errors import IntegrityError

    with pytest.raises(IntegrityError, match="digest mismatch"):
        _worker.load_state_dict(_model(tmp_path), expect="sha256:" + "0" * 64)
    big = tmp_path / "big.pt"
    big.write_bytes(b"\x80\x02" + b"N0" * 600_000 + b"N.")
    from airlock.sandbox._policy import SandboxLimits

    small = SandboxPolicy(limits=SandboxLimits(memory_bytes=1 << 20))
    with pytest.raises(Exception, match="1048576"):
        _worker.load_state_dict(big, policy=small, unsafe_skip_scan=True)
    assert played.launched == []


@pytest.mark.parametrize(
    ("hello", "message"),
    [
        ({"type": "spawned", "pid": 1}, r"channel: message type 'spawned' is not one of hello"),
        (None, r"sandbox: the worker did not start \(.*\); worker said: (worker says hi|\(no output\))"),
    ],
)
def test_a_worker_that_does_not_start(
    monkeypatch: pytest.MonkeyPatch, hello: dict[str, object] | None, message: str
) -> None:
    p = Played(hello=hello if hello is not None else {})
    monkeypatch.setattr(_worker, "launch", p.launch)
    from airlock.sandbox._policy import SandboxLimits

    policy = SandboxPolicy(limits=SandboxLimits(start_seconds=0.5))
    try:
        start = time.monotonic()
        with pytest.raises(SandboxError, match=f"^{message}$"):
            _worker.Sandbox(policy)
        assert time.monotonic() - start < 8
        assert all(process.poll() is not None for process in p.processes)  # killed
    finally:
        p.reap()


# -- more edges -----------------------------------------------------------------------------------------


def test_a_job_named_with_parentheses_and_in_its_own_session_is_tracked(tmp_path: Path) -> None:
    """/proc/PID/stat is parsed from the last ')' (a command name may hold ') 1 2'), and the parent
    is field 4, not the process group (the job here has its own session)."""
    odd = tmp_path / "x) 1 2 3"
    odd.symlink_to("/bin/sleep")
    f = Fake(["sh", "-c", f"setsid '{odd}' 60 & wait"], layers=())
    try:
        deadline = time.monotonic() + 5
        child = 0
        while not child and time.monotonic() < deadline:
            path = Path(f"/proc/{f.process.pid}/task/{f.process.pid}/children")
            for pid in (int(x) for x in path.read_text().split()):
                if Path(f"/proc/{pid}/comm").read_text().startswith("x) 1"):
                    child = pid
            time.sleep(0.02)
        assert child
        f.sandbox._track_job(child)
        assert list(f.sandbox._job_pidfds) == [child]
    finally:
        f.close()


def _short(fake: Fake, seconds: float) -> None:
    from airlock.sandbox._policy import SandboxLimits

    fake.sandbox.policy = SandboxPolicy(limits=SandboxLimits(wall_seconds=seconds))


@pytest.mark.parametrize("stage", ["infer", "state_dict"])
def test_a_request_to_a_silent_job_hits_the_wall_clock_limit(job: Job, fake: Fake, stage: str) -> None:
    _short(fake, 0.4)
    start = time.monotonic()
    with pytest.raises(SandboxError) as info:
        if stage == "infer":
            job.worker.infer({"x": np.zeros(2, np.float32)})
        else:
            job.worker.state_dict()
    assert (
        str(info.value)
        == f"sandboxed {stage} exceeded the wall-clock limit of 0.4 s; the worker tree was killed"
    )
    assert time.monotonic() - start < 4


def test_inputs_to_a_job_that_never_reads_hit_the_wall_clock_limit(job: Job, fake: Fake) -> None:
    _short(fake, 0.4)
    start = time.monotonic()
    with pytest.raises(SandboxError) as info:
        job.worker.infer({"x": np.zeros(4 << 20, np.float32)})
    assert (
        str(info.value)
        == "sandboxed infer exceeded the wall-clock limit of 0.4 s; the worker tree was killed"
    )
    assert time.monotonic() - start < 4


def test_infer_request_header(job: Job) -> None:
    got: dict[str, Any] = {}

    def peer() -> None:
        got["header"] = recv_frame(job.peer, CAPS, deadline=soon()).header
        send_frame(job.peer, {"type": "tensors", "tensors": []}, deadline=soon())

    thread = play(peer)
    assert job.worker.infer({"x": np.zeros(3, np.uint8)}) == {}
    thread.join(5)
    specs, _ = encode_tensors([("x", np.zeros(3, np.uint8))])
    assert got["header"] == {"type": "infer", "tensors": specs}


def test_definition_must_be_a_regular_file_message(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo2"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as info:
        _worker._read_definition(fifo)
    assert (
        str(info.value) == f"definition {str(fifo)!r} is not a regular file (FIFO, device, socket or folder)"
    )


SUSPICIOUS = b"\x80\x02cipaddress\nip_address\n(X\x07\x00\x00\x001.2.3.4tR."  # an unknown callable
MALICIOUS = b"\x80\x02cos\nsystem\n(X\x04\x00\x00\x00truetR."  # never run: the gate refuses it first


def test_load_state_dict_refuses_what_the_scan_refuses(played: Played, tmp_path: Path) -> None:
    from airlock.errors import PolicyError

    bad, odd = tmp_path / "bad.pkl", tmp_path / "odd.pkl"
    bad.write_bytes(MALICIOUS)
    odd.write_bytes(SUSPICIOUS)
    with pytest.raises(PolicyError, match="refused"):
        _worker.load_state_dict(bad)
    with pytest.raises(PolicyError, match="refused"):
        _worker.load_state_dict(odd)
    assert played.launched == []
    # each unsafe option, and a scan policy that allows the callable, lets the file through
    assert "w" in _worker.load_state_dict(odd, unsafe_allow_suspicious=True)
    assert "w" in _worker.load_state_dict(bad, unsafe_skip_scan=True)
    from airlock.policy import Policy

    assert "w" in _worker.load_state_dict(odd, scan_policy=Policy(allow=frozenset({"ipaddress.ip_address"})))
    assert [blob for _, blob in played.loads] == [SUSPICIOUS, MALICIOUS, SUSPICIOUS]


def test_load_state_dict_names_the_runtime(played: Played, tmp_path: Path) -> None:
    _worker.load_state_dict(_model(tmp_path), runtime="torchscript", unsafe_skip_scan=True)
    assert played.launched[0][1] == ("torchscript",)
    assert played.loads[0][0]["runtime"] == "torchscript"


def test_worker_takes_its_limits_from_a_shared_sandbox(played: Played, tmp_path: Path) -> None:
    from airlock.sandbox._policy import SandboxLimits

    limits = SandboxLimits(max_tensors=7, max_rank=3, max_header_bytes=1000, max_frame_bytes=5000)
    with _worker.Sandbox(SandboxPolicy(limits=limits)) as sandbox, sandbox.open(_model(tmp_path)) as worker:
        assert worker._caps == FrameCaps(1000, 5000, frozenset({"tensors"}))
        assert worker._tensor_caps == TensorCaps(7, 3, 5000)


def test_worker_starts_its_own_sandbox_for_its_runtime(played: Played, tmp_path: Path) -> None:
    definition = tmp_path / "d.py"
    definition.write_text("def build_model():\n    return None\n", encoding="utf-8")
    with _worker.Worker(_model(tmp_path), definition=definition) as worker:
        assert played.launched[0][1] == ("definition",)
        limits = SandboxPolicy().limits
        assert worker._tensor_caps == TensorCaps(limits.max_tensors, limits.max_rank, limits.frame_bytes)


def test_what_a_job_reports_at_start_is_bounded(played: Played, tmp_path: Path) -> None:
    played.kind, played.layers = "k" * 300, "l" * 300
    with _worker.Worker(_model(tmp_path)) as worker:
        assert worker.info.kind == "k" * 200 + "..."
        assert worker.info.job_layers == "l" * 200 + "..."


@pytest.mark.parametrize(("mode", "stage"), [("silent-start", "start"), ("silent-load", "load")])
def test_a_job_silent_at_start_or_load_hits_the_wall_clock_limit(
    played: Played, tmp_path: Path, mode: str, stage: str
) -> None:
    from airlock.sandbox._policy import SandboxLimits

    played.job_mode = mode
    start = time.monotonic()
    with pytest.raises(SandboxError) as info:
        _worker.Worker(_model(tmp_path), policy=SandboxPolicy(limits=SandboxLimits(wall_seconds=0.5)))
    assert str(info.value) == (
        f"sandboxed {stage} exceeded the wall-clock limit of 0.5 s; the worker tree was killed"
    )
    assert time.monotonic() - start < 4


def test_a_job_gone_before_its_load_request(played: Played, tmp_path: Path) -> None:
    played.job_mode = "gone"
    with pytest.raises(SandboxError, match=r"^sandboxed load failed: the job died \("):
        _worker.Worker(_model(tmp_path))


def test_a_state_dict_request_to_a_job_that_is_gone(job: Job) -> None:
    job.peer.close()
    with pytest.raises(SandboxError, match=r"^sandboxed state_dict failed: the job died \(exit 9\): "):
        job.worker.state_dict()


@pytest.mark.parametrize("stage", ["infer", "state_dict"])
def test_a_trickling_reply_hits_the_deadline_of_the_whole_request(job: Job, fake: Fake, stage: str) -> None:
    """The deadline bounds the whole exchange: a job that sends its reply a byte at a time, each
    byte well within the time left, is still cut off when the request's time is up."""
    _short(fake, 0.6)
    specs, buffers = encode_tensors([("y", np.zeros(64, np.float32))])
    stop = threading.Event()

    def peer() -> None:
        recv_frame(job.peer, CAPS, deadline=soon())
        out = socket.socketpair()
        send_frame(out[0], {"type": "tensors", "tensors": specs}, buffers, deadline=soon())
        out[0].close()
        data = out[1].recv(1 << 20)
        out[1].close()
        for byte in data:
            if stop.wait(0.05):
                return
            try:
                job.peer.send(bytes([byte]))
            except OSError:
                return

    thread = play(peer)
    start = time.monotonic()
    try:
        with pytest.raises(
            SandboxError, match=rf"^sandboxed {stage} exceeded the wall-clock limit of 0\.6 s"
        ):
            if stage == "infer":
                job.worker.infer({"x": np.zeros(1, np.float32)})
            else:
                job.worker.state_dict()
        assert time.monotonic() - start < 4
    finally:
        stop.set()
        thread.join(5)


def test_close_kills_a_worker_that_does_not_exit(fake: Fake) -> None:
    start = time.monotonic()
    fake.sandbox.close()  # sleep(1) ignores its control socket: waited for, then killed
    assert 4.5 < time.monotonic() - start < 10
    assert fake.process.wait(timeout=5) == -9


def test_a_worker_that_sends_descriptors_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    p = Played(hello={})
    monkeypatch.setattr(_worker, "launch", p.launch)
    real = p._worker

    def with_fd(peer: socket.socket, process: subprocess.Popen[bytes]) -> None:
        r, w = os.pipe()
        socket.send_fds(
            peer, [b"ALF1" + (24).to_bytes(4, "little") + bytes(8) + b'{"type":"hello","pid":1}'], [r]
        )
        os.close(r)
        os.close(w)
        real(peer, process)

    monkeypatch.setattr(p, "_worker", with_fd)
    try:
        with pytest.raises(SandboxError) as info:
            _worker.Sandbox()
        # the worker is killed at once: it may not have written its line yet
        assert re.fullmatch(
            r"sandbox: the worker did not start \(channel: the peer sent 1 file descriptor\(s\); none are accepted "
            r"\(closed\)\); worker said: (worker says hi|\(no output\))",
            str(info.value),
        ), str(info.value)
    finally:
        p.reap()


def test_an_exit_report_with_descriptors_is_not_taken(fake: Fake) -> None:
    r, w = os.pipe()
    frame = b'{"type":"exited","pid":9,"status":"exit 0"}'
    socket.send_fds(fake.peer, [b"ALF1" + len(frame).to_bytes(4, "little") + bytes(8) + frame], [r])
    os.close(r)
    os.close(w)
    start = time.monotonic()
    assert fake.sandbox.exit_status(9, wait=3) == "unknown (worker did not report)"
    assert time.monotonic() - start < 2


def test_stderr_is_bounded_and_decoded_leniently() -> None:
    f = Fake(["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' x >&2; exit 1"])
    try:
        assert f.sandbox._stderr() == "x" * 8192
    finally:
        f.close()
    g = Fake(["sh", "-c", "printf 'bad \\377 byte' >&2; exit 1"])
    try:
        assert g.sandbox._stderr() == "bad \ufffd byte"
    finally:
        g.close()


def test_jobs_in_a_pid_namespace_are_never_tracked() -> None:
    f = Fake(["sh", "-c", "sleep 60 & wait"], layers=("namespaces",))
    try:
        deadline = time.monotonic() + 5
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            children = [
                int(x)
                for x in Path(f"/proc/{f.process.pid}/task/{f.process.pid}/children").read_text().split()
            ]
            time.sleep(0.02)

        def worker() -> None:
            frame = recv_frame(f.peer, CAPS, deadline=soon())
            os.close(frame.fds[0])
            send_frame(f.peer, {"type": "spawned", "pid": children[0]}, deadline=soon())

        thread = play(worker)
        sock, _ = f.sandbox._spawn(soon())
        thread.join(5)
        sock.close()
        assert f.sandbox._job_pidfds == {}  # a pid inside the namespace names nothing on the host
    finally:
        f.close()
