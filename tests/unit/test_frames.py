"""The frame layer between airlock and a worker (``airlock.sandbox._frames``), on real socketpairs.

The host parses frames a hostile worker writes, so every path is pinned here: the caps at N-1, N,
N+1 (header, whole frame, descriptors per frame), exact error messages, descriptors attached at the
start of a frame, in its middle, or more than fit (``MSG_CTRUNC``), with none leaked either way,
partial writes through a small socket buffer and more buffers than one ``sendmsg`` takes, the
payload received into one buffer allocated once (an anonymous mapping when large, so a claim costs
no memory until bytes come), large frames at the cap, cut short or stalled, and the one deadline
per frame.
"""

from __future__ import annotations

import array
import mmap
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from airlock.errors import SandboxError
from airlock.sandbox import _frames
from airlock.sandbox._frames import MAX_FDS_PER_FRAME, FrameCaps, recv_frame, send_frame

CAPS = FrameCaps(max_header_bytes=64, max_frame_bytes=128)
BIG = FrameCaps(max_header_bytes=1 << 16, max_frame_bytes=1 << 24)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def prefix(header_len: int, payload_len: int, magic: bytes = b"ALF1") -> bytes:
    return struct.pack("<4sIQ", magic, header_len, payload_len)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def pipes(n: int) -> list[tuple[int, int]]:
    out = []
    for i in range(n):
        r, w = os.pipe()
        os.write(w, b"pipe%d" % i)
        out.append((r, w))
    return out


def close(fds: list[int] | tuple[int, ...]) -> None:
    for fd in fds:
        os.close(fd)


# -- the header, as bytes ------------------------------------------------------------------------------


def test_encode_header_is_compact_json() -> None:
    assert _frames.encode_header({"a": 1, "b": [1, 2], "c": "\u00e9"}) == b'{"a":1,"b":[1,2],"c":"\\u00e9"}'


def test_encode_header_refuses_nan() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        _frames.encode_header({"x": float("nan")})


def test_decode_header_round_trip() -> None:
    assert _frames.decode_header(memoryview(b'{"a":[1,{"b":null}]}')) == {"a": [1, {"b": None}]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[1]", "channel: frame header must be a JSON object, got list"),
        (b"7", "channel: frame header must be a JSON object, got int"),
        (b'"x"', "channel: frame header must be a JSON object, got str"),
        (b'{"a":1,"a":2}', "channel: frame header has duplicate JSON key 'a'"),
        (b'{"a":NaN}', "channel: frame header has JSON constant NaN is not allowed"),
        (b'{"a":', "channel: frame header is not valid JSON: Expecting value at char 5"),
        (b'{"a":"\xff"}', "channel: frame header is not valid UTF-8 at byte 6"),
    ],
)
def test_decode_header_errors(raw: bytes, message: str) -> None:
    with pytest.raises(SandboxError) as info:
        _frames.decode_header(raw)
    assert str(info.value).startswith(message)
    assert type(info.value) is SandboxError


# -- the deadline ---------------------------------------------------------------------------------------


def fixed_clock(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    monkeypatch.setattr(_frames, "time", SimpleNamespace(monotonic=lambda: now))


def test_settle_sets_the_time_left(
    monkeypatch: pytest.MonkeyPatch, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, _b = pair
    fixed_clock(monkeypatch, 100.0)
    _frames._settle(a, 107.5)
    assert a.gettimeout() == 7.5


def test_settle_without_a_deadline_leaves_the_socket_alone(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    a.settimeout(3.0)
    _frames._settle(a, None)
    assert a.gettimeout() == 3.0


@pytest.mark.parametrize("left", [0.0, -0.001, -50.0])
def test_settle_at_or_past_the_deadline(
    monkeypatch: pytest.MonkeyPatch, pair: tuple[socket.socket, socket.socket], left: float
) -> None:
    a, b = pair
    b.sendall(prefix(2, 0) + b"{}")  # data is there: only the deadline can fail the call
    fixed_clock(monkeypatch, 100.0)
    with pytest.raises(TimeoutError, match=r"^channel: deadline passed$"):
        recv_frame(a, CAPS, deadline=100.0 + left)
    with pytest.raises(TimeoutError, match=r"^channel: deadline passed$"):
        send_frame(a, {}, deadline=100.0 + left)


def test_send_to_a_peer_that_never_reads_hits_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        send_frame(a, {}, [memoryview(bytes(4 << 20))], deadline=start + 0.3)
    assert 0.25 < time.monotonic() - start < 3


# -- receiving: caps, magic, end of stream ----------------------------------------------------------


@pytest.mark.parametrize(("delta", "ok"), [(-1, True), (0, True), (1, False)])
def test_header_cap(pair: tuple[socket.socket, socket.socket], delta: int, ok: bool) -> None:
    a, b = pair
    size = CAPS.max_header_bytes + delta
    header = b'{"k":"' + b"x" * (size - 8) + b'"}'
    # a payload of 0 keeps the whole frame under its cap: only the header cap can refuse
    a.sendall(prefix(size, 0) + header)
    if ok:
        frame = recv_frame(b, FrameCaps(CAPS.max_header_bytes, 1000), deadline=soon())
        assert frame.header == {"k": "x" * (size - 8)}
        assert bytes(frame.payload) == b""
    else:
        with pytest.raises(SandboxError, match=r"^channel: frame header of 65 bytes exceeds the cap of 64$"):
            recv_frame(b, FrameCaps(CAPS.max_header_bytes, 1000), deadline=soon())


@pytest.mark.parametrize(("delta", "ok"), [(-1, True), (0, True), (1, False)])
def test_frame_cap_counts_header_and_payload(
    pair: tuple[socket.socket, socket.socket], delta: int, ok: bool
) -> None:
    a, b = pair
    header = b'{"n":12345}'
    payload_len = CAPS.max_frame_bytes - len(header) + delta
    payload = bytes(range(256))[:payload_len]
    a.sendall(prefix(len(header), payload_len) + header + payload)
    if ok:
        frame = recv_frame(b, CAPS, deadline=soon())
        assert (frame.header, bytes(frame.payload), frame.fds) == ({"n": 12345}, payload, ())
    else:
        with pytest.raises(SandboxError, match=r"^channel: frame of 129 bytes exceeds the cap of 128$"):
            recv_frame(b, CAPS, deadline=soon())


def test_huge_claims_are_refused_before_reading_on(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(prefix(2**32 - 1, 0))
    with pytest.raises(
        SandboxError, match=r"^channel: frame header of 4294967295 bytes exceeds the cap of 65536$"
    ):
        recv_frame(b, BIG, deadline=soon())
    a.sendall(prefix(2, 2**64 - 1))
    with pytest.raises(
        SandboxError, match=rf"^channel: frame of {2**64 + 1} bytes exceeds the cap of 16777216$"
    ):
        recv_frame(b, BIG, deadline=soon())


@pytest.mark.parametrize("magic", [b"ALF2", b"alf1", b"\x00LF1", b"ALF\x00"])
def test_bad_magic(pair: tuple[socket.socket, socket.socket], magic: bytes) -> None:
    a, b = pair
    a.sendall(prefix(2, 0, magic) + b"{}")
    with pytest.raises(SandboxError) as info:
        recv_frame(b, CAPS, deadline=soon())
    assert str(info.value) == f"channel: frame magic is {magic!r}, expected b'ALF1'"


def test_end_of_stream_before_a_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    with pytest.raises(SandboxError, match=r"^channel: peer closed the connection$"):
        recv_frame(b, CAPS, deadline=soon())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (prefix(2, 0)[:1], r"\(0 of 15 bytes\)"),  # in the prefix
        (prefix(2, 0)[:15], r"\(0 of 1 bytes\)"),
        (prefix(4, 0) + b"{}", r"\(2 of 4 bytes\)"),  # in the header
        (prefix(2, 9) + b"{}" + b"abc", r"\(3 of 9 bytes\)"),  # in the payload
        (prefix(2, 9) + b"{}", r"\(0 of 9 bytes\)"),
    ],
)
def test_end_of_stream_inside_a_frame(
    pair: tuple[socket.socket, socket.socket], data: bytes, message: str
) -> None:
    a, b = pair
    a.sendall(data)
    a.close()
    with pytest.raises(
        SandboxError, match=r"^channel: peer closed the connection in the middle of a frame " + message
    ):
        recv_frame(b, CAPS, deadline=soon())


def test_a_prefix_in_pieces_is_put_together(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    data = prefix(7, 3) + b'{"a":1}' + b"xyz"
    a.sendall(data[:5])

    def rest() -> None:
        time.sleep(0.1)
        for i in range(5, len(data), 3):
            a.sendall(data[i : i + 3])
            time.sleep(0.01)

    thread = threading.Thread(target=rest)
    thread.start()
    try:
        frame = recv_frame(b, CAPS, deadline=soon())
    finally:
        thread.join(5)
    assert (frame.header, bytes(frame.payload)) == ({"a": 1}, b"xyz")


def test_receive_error_is_a_sandbox_error(pair: tuple[socket.socket, socket.socket]) -> None:
    _a, b = pair
    b.close()
    with pytest.raises(
        SandboxError, match=r"^channel: receiving a frame failed: \[Errno 9\] Bad file descriptor$"
    ):
        recv_frame(b, CAPS)


def test_send_error_is_a_sandbox_error(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.close()
    with pytest.raises(SandboxError, match=r"^channel: sending a frame failed: \[Errno 32\] Broken pipe$"):
        send_frame(a, {"x": 1}, deadline=soon())


def test_credentials_are_not_descriptors(pair: tuple[socket.socket, socket.socket]) -> None:
    """SCM_CREDENTIALS (SO_PASSCRED) also arrives at level SOL_SOCKET: it is not taken for fds."""
    a, b = pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    send_frame(a, {"k": 1}, [memoryview(b"pq")], deadline=soon())
    frame = recv_frame(b, CAPS, deadline=soon())
    assert (frame.header, bytes(frame.payload), frame.fds) == ({"k": 1}, b"pq", ())


# -- the payload buffer: one allocation, sized by the checked announcement ----------------------------


class Recording(_frames._Receiver):
    """Notes the end of the buffer each read may fill (``got + len(view)``)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, accept_fds=False, deadline=soon())
        self.ends: list[int] = []
        self.got = 0

    def read_into(self, view: memoryview) -> int:
        self.ends.append(self.got + view.nbytes)
        n = super().read_into(view)
        self.got += n
        return n


def feed(sock: socket.socket, data: bytes, close_after: bool, refused: bool = False) -> threading.Thread:
    """Sends ``data`` from a thread; ``refused``: the receiver may close before taking it all."""

    def run() -> None:
        try:
            sock.sendall(data)
        except BrokenPipeError:
            if not refused:
                raise
            return
        if close_after:
            sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def pattern(size: int) -> bytes:
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


MAP_FROM = 1 << 18  # from this size on the payload is an anonymous mapping


@pytest.mark.parametrize("size", [1, MAP_FROM - 1, MAP_FROM, MAP_FROM + 1, 3 << 20])
def test_a_payload_is_received_into_one_buffer_allocated_once(
    pair: tuple[socket.socket, socket.socket], size: int
) -> None:
    a, b = pair
    data = pattern(size)
    thread = feed(a, data, close_after=False)
    receiver = Recording(b)
    try:
        got = receiver.take(size)
    finally:
        thread.join(5)
    assert bytes(got) == data
    # every read may fill the buffer up to its end: it never grows (nor is copied)
    assert set(receiver.ends) == {size}
    assert type(got.obj) is (bytearray if size < MAP_FROM else mmap.mmap)
    assert not got.readonly


def test_a_claimed_size_costs_no_memory_until_the_bytes_come(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    claim = 1 << 30
    thread = feed(a, prefix(2, claim) + b"{}" + b"z" * 100_000, close_after=True)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
    before = vm_kib("VmHWM")
    try:
        with pytest.raises(
            SandboxError,
            match=rf"^channel: peer closed the connection in the middle of a frame \(100000 of {claim} bytes\)$",
        ):
            recv_frame(b, FrameCaps(64, 1 << 31), deadline=soon())
    finally:
        thread.join(5)
    grown = vm_kib("VmHWM") - before
    assert grown < 32 << 10, f"a claim of 1 GiB with 100 kB sent cost {grown} KiB"


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_take_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    _a, b = pair
    receiver = Recording(b)
    assert bytes(receiver.take(0)) == b""
    assert receiver.ends == []


def test_an_announcement_the_host_cannot_map_is_a_sandbox_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Under the cap but beyond what the host can map (here more than the address space): a
    SandboxError before a payload byte is read, never a MemoryError or OSError."""
    a, b = pair
    claim = 1 << 62
    a.sendall(prefix(2, claim) + b"{}" + b"next")
    with pytest.raises(
        SandboxError, match=rf"^channel: out of memory for the {claim} bytes the peer announced$"
    ) as info:
        recv_frame(b, FrameCaps(64, 1 << 63), deadline=soon())
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert b.recv(16) == b"next"


LARGE = FrameCaps(max_header_bytes=1 << 16, max_frame_bytes=(1 << 20) + 7)


@pytest.mark.parametrize(("delta", "ok"), [(-1, True), (0, True), (1, False)])
def test_a_large_frame_at_the_cap(pair: tuple[socket.socket, socket.socket], delta: int, ok: bool) -> None:
    """N-1, N, N+1 bytes with the cap far above ``MAP_FROM``: the mapped path has the same bound."""
    a, b = pair
    header = b'{"type":"tensors"}'
    payload_len = LARGE.max_frame_bytes + delta - len(header)
    data = pattern(payload_len)
    thread = feed(a, prefix(len(header), payload_len) + header + data, close_after=True, refused=not ok)
    try:
        if ok:
            frame = recv_frame(b, LARGE, accept_fds=False, deadline=soon())
            assert frame.header == {"type": "tensors"}
            assert frame.payload.nbytes == payload_len and bytes(frame.payload) == data
        else:
            with pytest.raises(
                SandboxError,
                match=rf"^channel: frame of {(1 << 20) + 8} bytes exceeds the cap of {(1 << 20) + 7}$",
            ):
                recv_frame(b, LARGE, accept_fds=False, deadline=soon())
            # refused on the prefix alone: the header is still unread
            assert b.recv(len(header)) == header
    finally:
        b.close()  # the feeder may still be blocked on the refused payload
        thread.join(5)


@pytest.mark.parametrize("sent", [0, 1, MAP_FROM, (1 << 20) - 1])
def test_a_large_frame_cut_short(pair: tuple[socket.socket, socket.socket], sent: int) -> None:
    a, b = pair
    thread = feed(a, prefix(2, 1 << 20) + b"{}" + pattern(sent), close_after=True)
    try:
        with pytest.raises(
            SandboxError,
            match=rf"^channel: peer closed the connection in the middle of a frame \({sent} of {1 << 20} bytes\)$",
        ):
            recv_frame(b, LARGE, accept_fds=False, deadline=soon())
    finally:
        thread.join(5)


def test_a_large_frame_that_stalls_hits_the_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    """Half the payload, then silence with the connection open: the frame's one deadline ends it."""
    a, b = pair
    a.sendall(prefix(2, 1 << 20) + b"{}" + pattern(100_000))
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"^channel: deadline passed$|timed out"):
        recv_frame(b, LARGE, accept_fds=False, deadline=start + 0.4)
    assert 0.35 < time.monotonic() - start < 3


# -- sending: buffers, partial writes ---------------------------------------------------------------


def receive_in_thread(sock: socket.socket, caps: FrameCaps) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["frame"] = recv_frame(sock, caps, deadline=soon(20))
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.parametrize("count", [1, 511, 512, 513, 1100])
def test_many_buffers_through_a_small_socket_buffer(
    pair: tuple[socket.socket, socket.socket], count: int
) -> None:
    """More buffers than one sendmsg takes (IOV_MAX 1024), partial writes mid-buffer, empty buffers."""
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    buffers = [bytes([i % 256]) * (i % 7 * 97) for i in range(count)]
    thread, out = receive_in_thread(b, BIG)
    try:
        send_frame(a, {"n": count}, [memoryview(x) for x in buffers], deadline=soon(20))
    finally:
        thread.join(20)
    assert "error" not in out, out
    frame = out["frame"]
    assert isinstance(frame, _frames.Frame)
    assert frame.header == {"n": count}
    assert bytes(frame.payload) == b"".join(buffers)


def test_buffers_of_any_item_size_are_sent_as_bytes(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    floats = array.array("d", [1.5, -2.0])
    send_frame(a, {}, [memoryview(floats), memoryview(b"")], deadline=soon())
    frame = recv_frame(b, CAPS, deadline=soon())
    assert bytes(frame.payload) == floats.tobytes()


def test_only_empty_buffers(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    send_frame(a, {"e": []}, [memoryview(b""), memoryview(b"")], deadline=soon())
    frame = recv_frame(b, CAPS, deadline=soon())
    assert (frame.header, bytes(frame.payload)) == ({"e": []}, b"")


def test_the_wire_format(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    send_frame(a, {"t": "x"}, [memoryview(b"ab"), memoryview(b"c")], deadline=soon())
    assert b.recv(100) == b"ALF1" + struct.pack("<IQ", 9, 3) + b'{"t":"x"}abc'


# -- descriptors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", list(range(1, MAX_FDS_PER_FRAME + 1)))
def test_descriptors_ride_with_the_frame(pair: tuple[socket.socket, socket.socket], count: int) -> None:
    a, b = pair
    sent = pipes(count)
    try:
        send_frame(a, {"fds": count}, [memoryview(b"body")], [r for r, _ in sent], deadline=soon())
        frame = recv_frame(b, CAPS, deadline=soon())
    finally:
        close([fd for p in sent for fd in p])
    try:
        assert (frame.header, bytes(frame.payload), len(frame.fds)) == ({"fds": count}, b"body", count)
        for i, fd in enumerate(frame.fds):
            assert not os.get_inheritable(fd)  # MSG_CMSG_CLOEXEC
            assert os.read(fd, 16) == b"pipe%d" % i
    finally:
        close(frame.fds)


def test_descriptors_with_a_frame_sent_in_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    """The descriptors go with the first piece only; later pieces carry none (the receiver refuses those)."""
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = pipes(2)
    thread, out = receive_in_thread(b, BIG)
    try:
        send_frame(a, {}, [memoryview(bytes(300_000))], [r for r, _ in sent], deadline=soon(20))
    finally:
        thread.join(20)
        close([fd for p in sent for fd in p])
    assert "error" not in out, out
    frame = out["frame"]
    assert isinstance(frame, _frames.Frame)
    try:
        assert len(frame.fds) == 2 and frame.payload.nbytes == 300_000
    finally:
        close(frame.fds)


@pytest.mark.parametrize("count", [MAX_FDS_PER_FRAME + 1, 10])
def test_too_many_descriptors_are_refused_before_sending(
    pair: tuple[socket.socket, socket.socket], count: int
) -> None:
    a, b = pair
    sent = pipes(count)
    try:
        with pytest.raises(
            SandboxError, match=rf"^channel: {count} file descriptors in one frame, at most 4$"
        ):
            send_frame(a, {}, (), [r for r, _ in sent], deadline=soon())
    finally:
        close([fd for p in sent for fd in p])
    with pytest.raises(BlockingIOError):
        b.recv(1, socket.MSG_DONTWAIT)  # nothing was sent


@pytest.mark.parametrize("accept", [True, False])
@pytest.mark.parametrize("count", [MAX_FDS_PER_FRAME + 1, 9])
def test_more_descriptors_than_fit_are_closed_and_refused(
    pair: tuple[socket.socket, socket.socket], count: int, accept: bool
) -> None:
    a, b = pair
    sent = pipes(count)
    before = open_fds()
    socket.send_fds(a, [prefix(2, 0) + b"{}"], [r for r, _ in sent])
    try:
        with pytest.raises(SandboxError, match=r"^channel: more than 4 file descriptors in one frame$"):
            recv_frame(b, CAPS, accept_fds=accept, deadline=soon())
        assert open_fds() == before  # the ones that fitted were closed
    finally:
        close([fd for p in sent for fd in p])


@pytest.mark.parametrize("count", [1, 2, MAX_FDS_PER_FRAME])
def test_host_side_refuses_descriptors_at_the_start(
    pair: tuple[socket.socket, socket.socket], count: int
) -> None:
    a, b = pair
    sent = pipes(count)
    before = open_fds()
    socket.send_fds(a, [prefix(2, 0) + b"{}"], [r for r, _ in sent])
    try:
        with pytest.raises(SandboxError) as info:
            recv_frame(b, CAPS, accept_fds=False, deadline=soon())
        assert (
            str(info.value)
            == f"channel: the peer sent {count} file descriptor(s); none are accepted (closed)"
        )
        assert open_fds() == before
    finally:
        close([fd for p in sent for fd in p])


@pytest.mark.parametrize("accept", [True, False])
@pytest.mark.parametrize(("where", "count"), [("header", 1), ("header", 3), ("payload", 2)])
def test_descriptors_after_the_first_bytes_are_refused(
    pair: tuple[socket.socket, socket.socket], accept: bool, where: str, count: int
) -> None:
    a, b = pair
    header = b'{"h":1}'
    sent = pipes(count)
    before = open_fds()
    # the receiver's first read fills the 16-byte prefix only, so the descriptors come with a later read
    first, rest = (
        (prefix(len(header), 3), header + b"xyz")
        if where == "header"
        else (prefix(len(header), 3) + header, b"xyz")
    )
    a.sendall(first)
    socket.send_fds(a, [rest], [r for r, _ in sent])
    with pytest.raises(SandboxError) as info:
        recv_frame(b, CAPS, accept_fds=accept, deadline=soon())
    try:
        assert str(info.value) == (
            f"channel: the peer sent {count} file descriptor(s) after the first bytes of a frame; none are accepted (closed)"
        )
        assert open_fds() == before
    finally:
        close([fd for p in sent for fd in p])


def test_descriptors_are_closed_when_the_frame_is_refused_later(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Accepted at the start, but the header is bad: the frame fails and its descriptors are closed."""
    a, b = pair
    sent = pipes(3)
    before = open_fds()
    socket.send_fds(a, [prefix(3, 0) + b"[1]"], [r for r, _ in sent])
    try:
        with pytest.raises(SandboxError, match="must be a JSON object, got list"):
            recv_frame(b, CAPS, accept_fds=True, deadline=soon())
        assert open_fds() == before
    finally:
        close([fd for p in sent for fd in p])


def test_close_all_closes_every_descriptor_despite_errors() -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    os.close(w1)
    os.close(w2)
    _frames._close_all([r1, w1, r2])  # w1 is already closed: skipped, r2 still closed
    for fd in (r1, r2):
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_bad_descriptor_is_a_send_error(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    with pytest.raises(
        SandboxError, match=r"^channel: sending a frame failed: \[Errno 9\] Bad file descriptor$"
    ):
        send_frame(a, {}, (), [-1], deadline=soon())
    with pytest.raises(BlockingIOError):
        b.recv(1, socket.MSG_DONTWAIT)
