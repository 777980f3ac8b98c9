"""The host side of the channel treats the job as hostile (issue 11).

Each case is a real torch file whose payload runs in a real job and speaks the frame protocol to
the host itself, as a compromised job would: it finds its socket and writes raw frames. The host
must bound memory by bytes received (never by bytes claimed), enforce one deadline per call and
kill the worker tree past it, refuse (and close) any file descriptor, refuse absurd tensor tables
with SandboxError only, and never print job text raw. ``test_unprivileged.py`` re-runs this file as
uid 65534.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from airlock.errors import SandboxError
from airlock.sandbox import Sandbox, SandboxPolicy
from airlock.sandbox._policy import SandboxLimits
from tests.sandbox._payloads import exec_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

#: stdlib only: runs inside the job. ``S`` is the job's own channel socket; ``frame`` builds raw frames.
PRELUDE = """
import os, stat, socket, struct, json, time, array
def _find():
    for fd in range(3, 256):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            pass
S = socket.socket(fileno=os.dup(_find()))
def frame(header, payload=b'', header_len=None, payload_len=None):
    raw = json.dumps(header).encode()
    return struct.pack('<4sIQ', b'ALF1', len(raw) if header_len is None else header_len,
                       len(payload) if payload_len is None else payload_len) + raw + payload
def tensors_frame(specs, payload=b''):
    return frame({'type': 'tensors', 'tensors': specs}, payload)
LOADED = frame({'type': 'loaded', 'kind': 'checkpoint', 'summary': 'hostile'})
"""


def hostile(path: Path, source: str) -> Path:
    # one fresh globals dict, so the prelude's names are visible inside its functions
    return exec_checkpoint(path, f"exec({PRELUDE + source!r}, {{}})")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat_line.rsplit(")", 1)[1].split()[1])
    found = {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                changed = True
    return found - {root}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def _pool() -> Iterator[dict[str, Sandbox]]:
    holder: dict[str, Sandbox] = {}
    yield holder
    if "warm" in holder:
        holder["warm"].close()


@pytest.fixture
def warm(_pool: dict[str, Sandbox]) -> Sandbox:
    """conftest's warm worker, but started again if an earlier test's failure killed it, so one
    failure (a deadline kill) does not hide the others."""
    sandbox = _pool.get("warm")
    if sandbox is None or sandbox._launched is None:
        sandbox = _pool["warm"] = Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",))
    return sandbox


@pytest.fixture
def short() -> Iterator[Sandbox]:
    """A worker of its own with a 3 s wall-clock limit (the deadline tests kill it)."""
    limits = FAST_LIMITS.replace(wall_seconds=3.0)
    with Sandbox(SandboxPolicy(limits=limits), runtimes=("torch",)) as sandbox:
        yield sandbox


def _still_serves(sandbox: Sandbox, tmp_path: Path) -> None:
    import torch

    torch.save({"w": torch.arange(3.0)}, tmp_path / "benign.pt")
    with sandbox.open(tmp_path / "benign.pt") as worker:
        assert np.array_equal(worker.state_dict()["w"], np.arange(3.0, dtype=np.float32))


# --- memory: the claim costs nothing, the cap comes from the job's memory limit ---------------


def test_frame_cap_is_derived_from_the_job_memory_limit() -> None:
    limits = SandboxLimits()
    assert limits.frame_bytes == limits.memory_bytes
    assert limits.frame_bytes <= limits.max_frame_bytes
    assert SandboxLimits(memory_bytes=1 << 30).frame_bytes == 1 << 30
    assert SandboxLimits(max_frame_bytes=1 << 20).frame_bytes == 1 << 20


def test_a_claim_above_the_job_memory_limit_is_refused_at_once(warm: Sandbox, tmp_path: Path) -> None:
    claim = FAST_LIMITS.memory_bytes + 1  # the old default cap (16 GiB) let this allocate
    model = hostile(
        tmp_path / "claim.pt",
        f"S.sendall(frame({{'type': 'loaded', 'kind': 'k', 'summary': 's'}}, payload_len={claim}))\n"
        "time.sleep(30)",
    )
    started = time.monotonic()
    with pytest.raises(
        SandboxError, match=rf"frame of \d+ bytes exceeds the cap of {FAST_LIMITS.memory_bytes}\b"
    ):
        warm.open(model)
    assert time.monotonic() - started < 10


def test_a_huge_claim_allocates_nothing_before_bytes_arrive(short: Sandbox, tmp_path: Path) -> None:
    claim = 2 << 30  # under the cap: the host must wait for the bytes, not reserve them
    # a ``tensors`` message: the only one a job may attach a payload to (any other is refused at once)
    model = hostile(
        tmp_path / "claim.pt",
        f"S.sendall(frame({{'type': 'tensors', 'tensors': []}}, payload_len={claim}) + b'x' * 1000)\n"
        "time.sleep(30)",
    )
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
    before = _status("VmRSS")
    with pytest.raises(SandboxError, match=r"wall-clock limit of 3.0 s"):
        short.open(model)
    grown = _status("VmHWM") - before
    assert grown < 256 << 20, f"the host grew by {grown >> 20} MiB for a claim of {claim >> 20} MiB"


def test_out_of_memory_while_receiving_is_a_sandbox_error() -> None:
    """A reply that really is too big for the host: SandboxError, never a bare MemoryError. The
    buffer for an announced size is mapped at once (address space, not memory): here the mapping
    itself is refused by the address-space limit."""
    script = (
        "import resource, socket, struct, threading\n"
        "from airlock.errors import SandboxError\n"
        "from airlock.sandbox._frames import FrameCaps, recv_frame\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "a, b = socket.socketpair()\n"
        "n = 1 << 31\n"
        "def feed():\n"
        "    b.sendall(struct.pack('<4sIQ', b'ALF1', 2, n) + b'{}')\n"
        "    chunk = b'x' * (1 << 20)\n"
        "    try:\n"
        "        while True: b.sendall(chunk)\n"
        "    except OSError: pass\n"
        "threading.Thread(target=feed, daemon=True).start()\n"
        "try:\n"
        "    recv_frame(a, FrameCaps(1 << 16, 1 << 40))\n"
        "except SandboxError as exc:\n"
        "    print('SandboxError', exc)\n"
        "a.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, check=False)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out[-2000:]
    assert f"SandboxError channel: out of memory for the {1 << 31} bytes the peer announced" in out, out[
        -2000:
    ]


#: a reply cap far above the size from which the host maps a reply's buffer (256 KiB)
CAP = (3 << 20) + 5
#: the job pads every reply header to this many bytes (JSON allows the spaces), so the payload
#: that makes a frame of N bytes is N - HEADER whatever the digits in the header
HEADER = 200

_AT_SIZE = f"""
def sized(total, cut=None, then=''):
    n = total - {HEADER}
    raw = json.dumps({{'type': 'tensors', 'tensors': [
        {{'name': 'a', 'dtype': 'uint8', 'shape': [n], 'offset': 0, 'nbytes': n}}]}}).encode()
    raw = raw + b' ' * ({HEADER} - len(raw))
    body = (bytes(range(251)) * (n // 251 + 1))[:n]
    data = struct.pack('<4sIQ', b'ALF1', len(raw), n) + raw + body
    S.sendall(LOADED)
    S.sendall(data if cut is None else data[:cut])
    if then == 'exit':
        S.recv(1 << 16)  # the host's request: exiting with it unread would be a reset, not an end
        os._exit(0)
    time.sleep(30)
"""


@pytest.fixture
def capped() -> Iterator[Sandbox]:
    """A worker of its own whose replies are capped at CAP bytes, with a 3 s wall-clock limit."""
    limits = FAST_LIMITS.replace(max_frame_bytes=CAP, wall_seconds=3.0)
    with Sandbox(SandboxPolicy(limits=limits), runtimes=("torch",)) as sandbox:
        yield sandbox


@pytest.mark.parametrize(("delta", "ok"), [(-1, True), (0, True), (1, False)])
def test_a_large_reply_at_the_cap(capped: Sandbox, tmp_path: Path, delta: int, ok: bool) -> None:
    """A job's reply of N-1, N and N+1 bytes at a cap of several MiB (the host maps the buffer
    for such a reply at once, sized by the announcement it has just checked)."""
    assert capped.policy.limits.frame_bytes == CAP
    model = hostile(tmp_path / "sized.pt", _AT_SIZE + f"sized({CAP + delta})")
    with capped.open(model) as worker:
        if ok:
            got = worker.state_dict()
            n = CAP + delta - HEADER
            assert list(got) == ["a"] and got["a"].dtype == np.uint8 and got["a"].shape == (n,)
            assert np.array_equal(got["a"], np.arange(n) % 251)
        else:
            with pytest.raises(
                SandboxError, match=rf"channel: frame of {CAP + 1} bytes exceeds the cap of {CAP}$"
            ):
                worker.state_dict()


def test_a_reply_of_empty_strings_cannot_make_the_host_hold_ten_times_the_cap(
    capped: Sandbox, tmp_path: Path
) -> None:
    """A ``bytes`` tensor of empty elements costs 8 bytes each on the wire and about a hundred on
    the host once decoded (a ``bytes`` object, its end as an int, three pointers): under the cap
    on the wire, ten times it in the host (outside review 11). Each element is charged
    HOST_BYTES_PER_ELEMENT against the cap before any object is made."""
    from airlock.sandbox._messages import HOST_BYTES_PER_ELEMENT

    count = (CAP - HEADER) // 8  # the whole reply is under the cap
    assert count * HOST_BYTES_PER_ELEMENT > CAP
    model = hostile(
        tmp_path / "strings.pt",
        f"n = {count}\n"
        "S.sendall(LOADED)\n"
        "S.sendall(tensors_frame([{'name': 's', 'dtype': 'bytes', 'shape': [n], 'offset': 0, "
        "'nbytes': 8 * n}], bytes(8 * n)))\n"
        "time.sleep(30)",
    )
    with (
        capped.open(model) as worker,
        pytest.raises(
            SandboxError,
            match=rf"bad tensor table: channel: bytes tensor 's' of {count} elements would hold "
            rf"{count * HOST_BYTES_PER_ELEMENT} bytes of Python objects on the host .* above the cap of {CAP}$",
        ),
    ):
        worker.state_dict()


def test_a_large_reply_cut_short_by_the_job_exiting(capped: Sandbox, tmp_path: Path) -> None:
    sent = 1 << 20  # of a reply's payload of CAP - HEADER bytes
    model = hostile(tmp_path / "cut.pt", _AT_SIZE + f"sized({CAP}, cut={16 + HEADER + sent}, then='exit')")
    started = time.monotonic()
    with (
        capped.open(model) as worker,
        pytest.raises(
            SandboxError,
            match=rf"the job died \(.*\): channel: peer closed the connection in the middle of a frame "
            rf"\({sent} of {CAP - HEADER} bytes\)$",
        ),
    ):
        worker.state_dict()
    assert time.monotonic() - started < 3  # at once, not at the deadline


def test_a_large_reply_that_stalls_is_killed_at_the_deadline(capped: Sandbox, tmp_path: Path) -> None:
    model = hostile(tmp_path / "stall.pt", _AT_SIZE + f"sized({CAP}, cut={16 + HEADER + (1 << 20)})")
    with capped.open(model) as worker:
        started = time.monotonic()
        with pytest.raises(
            SandboxError,
            match=r"sandboxed state_dict exceeded the wall-clock limit of 3.0 s; the worker tree was killed",
        ):
            worker.state_dict()
    assert 2.5 < time.monotonic() - started < 8


# --- time: one deadline per call, then the whole tree dies --------------------------------------


def test_a_trickling_job_is_killed_at_the_deadline(short: Sandbox, tmp_path: Path) -> None:
    # a byte every 2.5 s never trips a 3 s per-read timeout; the header is 8 bytes (20 s in all)
    model = hostile(
        tmp_path / "trickle.pt",
        "S.sendall(struct.pack('<4sIQ', b'ALF1', 8, 0))\n"
        "for _ in range(8):\n"
        "    time.sleep(2.5)\n"
        "    S.sendall(b' ')\n"
        "time.sleep(30)",
    )
    assert short._launched is not None
    bwrap = short._launched.process.pid
    seen: set[int] = set()

    def watch() -> None:
        time.sleep(1.5)
        seen.update(_descendants(bwrap))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    with pytest.raises(
        SandboxError,
        match=r"sandboxed load exceeded the wall-clock limit of 3.0 s; the worker tree was killed",
    ):
        short.open(model)
    elapsed = time.monotonic() - started
    watcher.join()
    assert elapsed < 6, f"the host waited {elapsed:.1f} s under a 3 s limit"
    assert len(seen) >= 2, seen  # the worker (pid 1) and the job were running
    time.sleep(0.5)
    assert [pid for pid in seen if _alive(pid)] == [], "processes of the worker tree survived the deadline"
    with pytest.raises(SandboxError, match="already closed"):
        short.open(model)


def test_without_a_pid_namespace_the_deadline_still_kills_the_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--unsafe-weaker-sandbox without bubblewrap: jobs run in sessions of their own, so killing
    the worker's process group alone would leave them running; the host kills each by pidfd."""
    from airlock.sandbox import _layers

    monkeypatch.setattr(_layers, "bwrap_path", lambda: None)
    # and no cgroup either (as for an unprivileged caller here): its tree kill would hide the gap
    monkeypatch.setattr(_layers, "cgroup_support", lambda: (None, "disabled by the test"))
    policy = SandboxPolicy(limits=FAST_LIMITS.replace(wall_seconds=3.0), unsafe_weaker_sandbox=True)
    model = hostile(tmp_path / "sleep.pt", "time.sleep(60)")
    with Sandbox(policy, runtimes=("torch",)) as sandbox:
        assert sandbox._launched is not None and "namespaces" not in sandbox.layers
        assert sandbox._launched.cgroups is None
        root = sandbox._launched.process.pid
        seen: set[int] = set()

        def watch() -> None:
            time.sleep(1.5)
            seen.update(_descendants(root))

        watcher = threading.Thread(target=watch)
        watcher.start()
        with pytest.raises(SandboxError, match=r"exceeded the wall-clock limit of 3\.0 s"):
            sandbox.open(model)
        watcher.join()
    assert seen, "the job was not seen running"
    time.sleep(0.5)
    assert [pid for pid in seen if _alive(pid)] == [], "the job outlived the deadline"


def test_a_job_that_stops_reading_cannot_block_the_host_past_the_deadline(
    short: Sandbox, tmp_path: Path
) -> None:
    """The deadline covers sending too: 64 MiB of inputs to a job (and worker) that never read."""
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    worker = short.open(tmp_path / "w.pt")
    assert short._launched is not None
    for pid in _descendants(short._launched.process.pid):
        os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(SandboxError, match=r"sandboxed infer exceeded the wall-clock limit of 3.0 s"):
        worker.infer({"x": np.zeros(16 << 20, dtype=np.float32)})
    assert time.monotonic() - started < 6


# --- file descriptors: never accepted -----------------------------------------------------------

_SEND_FDS = """
fds = []
for i in range(4):
    try:
        fd = os.memfd_create('leak%d' % i)
        os.ftruncate(fd, 64 << 20)
    except OSError:
        fd = os.dup(0)
    fds.append(fd)
anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds).tobytes())]
"""


def test_fds_attached_to_a_reply_are_closed_and_refused(warm: Sandbox, tmp_path: Path) -> None:
    model = hostile(tmp_path / "fds.pt", _SEND_FDS + "S.sendmsg([LOADED], anc)\ntime.sleep(30)")
    before = _open_fds()
    with pytest.raises(SandboxError, match=r"sent 4 file descriptor\(s\); none are accepted"):
        warm.open(model)
    assert _open_fds() <= before, "descriptors from the job stayed open in the host"
    _still_serves(warm, tmp_path)


def test_fds_attached_after_the_first_bytes_are_refused(warm: Sandbox, tmp_path: Path) -> None:
    model = hostile(
        tmp_path / "fds_late.pt",
        _SEND_FDS + "S.sendall(LOADED[:20])\ntime.sleep(0.3)\nS.sendmsg([LOADED[20:]], anc)\ntime.sleep(30)",
    )
    before = _open_fds()
    with pytest.raises(SandboxError, match=r"file descriptor.* after the first bytes of a frame"):
        warm.open(model)
    assert _open_fds() <= before


# --- absurd tensor tables: SandboxError, before any arithmetic can overflow -----------------------


def _absurd(specs: str, payload: str = "b''") -> str:
    return f"S.sendall(LOADED)\nS.sendall(tensors_frame({specs}, {payload}))\ntime.sleep(30)"


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            "[{'name': 'a', 'dtype': 'float32', 'shape': [0, 10**4000], 'offset': 0, 'nbytes': 0}]",
            "spans more than",
        ),
        (
            "[{'name': 'a', 'dtype': 'float32', 'shape': [2**40] * 30 + [0], 'offset': 0, 'nbytes': 0}]",
            "spans more than",
        ),
        ("[{'name': 'a', 'dtype': 'float32', 'shape': [-1], 'offset': 0, 'nbytes': 0}]", "non-negative"),
        ("[{'name': 'a', 'dtype': 'float32', 'shape': [True], 'offset': 0, 'nbytes': 4}]", "non-negative"),
        ("[{'name': 'a', 'dtype': 'float32', 'shape': [1.0], 'offset': 0, 'nbytes': 4}]", "non-negative"),
        ("[{'name': 'a', 'dtype': 'float32', 'shape': [1], 'offset': 0, 'nbytes': 10**4000}]", "nbytes"),
        ("[{'name': '\\x1b[2Jwiped', 'dtype': 'uint8', 'shape': [1], 'offset': 0, 'nbytes': 1}]", "control"),
    ],
)
def test_absurd_tensor_tables_are_sandbox_errors(
    warm: Sandbox, tmp_path: Path, specs: str, message: str
) -> None:
    model = hostile(tmp_path / "shape.pt", _absurd(specs, "b'\\0' * 4"))
    with warm.open(model) as worker, pytest.raises(SandboxError, match=message) as caught:
        worker.state_dict()
    assert "\x1b" not in str(caught.value)


def test_a_pid_the_worker_claims_is_checked_before_use(warm: Sandbox) -> None:
    """Without a pid namespace the host keeps a pidfd of each job the worker says it spawned; a
    worker taken over could claim any number: 2**40 raised OverflowError out of pidfd_open
    (outside review 11), a pid that is not the worker's child must not be tracked either."""
    before = dict(warm._job_pidfds)
    for claimed in (2**40, 2**70, 1 << 22, 0, -1, os.getpid()):
        warm._track_job(claimed)
    assert warm._job_pidfds == before


# --- special files: refused before any blocking open --------------------------------------------


def test_a_fifo_model_is_refused_without_blocking(warm: Sandbox, tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    from airlock.errors import UsageError

    result: list[BaseException] = []

    def attempt() -> None:
        try:
            warm.open(fifo)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # unblock the open so the thread can end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("opening a FIFO as the model blocked the host")
    assert len(result) == 1 and isinstance(result[0], UsageError), result
    assert re.search("not a regular file", str(result[0]))
