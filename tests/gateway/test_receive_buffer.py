"""The gateway's h11 receive buffer (``_guard._ReceiveBuffer``) hands body bytes over without copying
them twice, and h11 parses exactly as it does with its own buffer.

The oracle is stock h11 (``h11.Connection`` with its own ``ReceiveBuffer``), fed the same bytes in
the same pieces: every event, body bytes included, must be the same.
"""

from __future__ import annotations

import itertools
from typing import Any

import h11
import pytest
from h11._receivebuffer import ReceiveBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from airlock.gateway._guard import _BoundedFraming, _ReceiveBuffer

BODY = bytes(range(256)) * 1200  # 307200 bytes


def _requests() -> dict[str, bytes]:
    length = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    chunks = b"".join(b"%x\r\n" % n + BODY[:n] + b"\r\n" for n in (5000, 70000, 1, 131072)) + b"0\r\n\r\n"
    chunked = b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    small = b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
    return {
        "content-length": length,
        "chunked": chunked,
        # the next request's head arrives with the end of a body: only part of the buffer is body
        "pipelined": length + small + chunked + small,
    }


def _events(conn: h11.Connection, pieces: list[bytes]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for piece in [*pieces, b""]:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Data):
                out.append(("data", bytes(event.data)))
            elif isinstance(event, h11.Request):
                out.append(("request", event.method, event.target, list(event.headers)))
            elif isinstance(event, h11.EndOfMessage):
                out.append(("end",))
                conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            else:
                out.append((type(event).__name__,))
                return out
    return out


def _joined(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Consecutive body pieces as one: how a body is cut into Data events depends on the reads."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        if event[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + event[1])
        else:
            out.append(event)
    return out


def _ours() -> h11.Connection:
    violations: list[str] = []
    conn = _BoundedFraming(16 * 1024, violations.append)
    assert isinstance(conn._receive_buffer, _ReceiveBuffer)
    return conn


def _split(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


@pytest.mark.parametrize("name", sorted(_requests()))
@pytest.mark.parametrize("size", [1, 7, 4095, 65536, 262144, 10**9])
def test_same_events_as_stock_h11(name: str, size: int) -> None:
    raw = _requests()[name]
    pieces = _split(raw, size) if size > 1 else [*_split(raw[:5000], 1), raw[5000:]]
    ours = _events(_ours(), pieces)
    stock = _events(h11.Connection(h11.SERVER), pieces)
    assert ours == stock
    assert not any(event[0] == "ConnectionClosed" for event in ours[:-1])
    bodies = [event[1] for event in _joined(ours) if event[0] == "data"]
    assert bodies[0] == (BODY if name != "chunked" else BODY[:5000] + BODY[:70000] + BODY[:1] + BODY[:131072])


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_requests()["pipelined"])), max_size=12))
def test_same_events_as_stock_h11_for_any_cuts(cuts: list[int]) -> None:
    raw = _requests()["pipelined"]
    points = sorted({0, *cuts, len(raw)})
    pieces = [raw[a:b] for a, b in itertools.pairwise(points)]
    assert _events(_ours(), pieces) == _events(h11.Connection(h11.SERVER), pieces)


def test_taking_everything_hands_the_buffer_over() -> None:
    buffer: ReceiveBuffer = _ReceiveBuffer()  # (h11's += returns its own type)
    buffer += b"x" * 100_000
    held = buffer._data
    out = buffer.maybe_extract_at_most(1 << 30)
    assert out is held and len(out) == 100_000  # no copy
    assert len(buffer) == 0 and buffer._data is not held
    assert buffer.maybe_extract_at_most(10) is None
    buffer += b"abcdef"
    assert buffer.maybe_extract_at_most(4) == bytearray(b"abcd")
    assert bytes(buffer) == b"ef"
    assert buffer.maybe_extract_at_most(2) == bytearray(b"ef")
    assert buffer.maybe_extract_at_most(0) is None
