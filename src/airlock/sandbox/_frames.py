"""Length-prefixed frames over a Unix socket, used in both directions between airlock and a worker.

A frame is ``magic (4) | header length u32 | payload length u64 | JSON header | payload``, little
endian. File descriptors ride along with the first bytes of a frame (SCM_RIGHTS). Both lengths are
checked against the caps before anything is allocated; the header must be one JSON object with no
duplicate keys and no NaN/Infinity. What the header *means* is checked by :mod:`._messages`.

This module runs inside the sandbox too, so it imports only the standard library and
:mod:`airlock.errors`. Never pickle: the peer may be hostile.
"""

from __future__ import annotations

import array
import contextlib
import json
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError, LimitError, SandboxError

__all__ = ["MAX_FDS_PER_FRAME", "Frame", "FrameCaps", "recv_frame", "send_frame"]

_MAGIC: Final = b"ALF1"
_PREFIX: Final = struct.Struct("<4sIQ")
MAX_FDS_PER_FRAME: Final = 4


@dataclass(frozen=True)
class FrameCaps:
    """Upper bounds a receiver enforces before allocating."""

    max_header_bytes: int
    max_frame_bytes: int


@dataclass(frozen=True)
class Frame:
    header: dict[str, object]
    payload: memoryview
    fds: tuple[int, ...]


def encode_header(header: dict[str, object]) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode_header(raw: bytes | bytearray | memoryview) -> dict[str, object]:
    try:
        value = parse_json_strict(raw, "channel: frame header")
    except FormatError as exc:
        raise SandboxError(str(exc)) from exc
    if not isinstance(value, dict):
        raise SandboxError(f"channel: frame header must be a JSON object, got {type(value).__name__}")
    return value


def _sendmsg_all(sock: socket.socket, buffers: list[memoryview], fds: Sequence[int]) -> None:
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    pending = [b for b in buffers if b.nbytes]
    while pending:
        # sendmsg takes a bounded number of buffers (IOV_MAX); send in batches and handle partial writes
        sent = sock.sendmsg(pending[:512], ancillary)
        ancillary = []
        while sent and pending:
            head = pending[0]
            if sent >= head.nbytes:
                sent -= head.nbytes
                pending.pop(0)
            else:
                pending[0] = head[sent:]
                sent = 0


def send_frame(
    sock: socket.socket,
    header: dict[str, object],
    buffers: Sequence[memoryview] = (),
    fds: Sequence[int] = (),
) -> None:
    """Send one frame. ``buffers`` are written back to back as the payload, without copying."""
    if len(fds) > MAX_FDS_PER_FRAME:
        raise SandboxError(f"channel: {len(fds)} file descriptors in one frame, at most {MAX_FDS_PER_FRAME}")
    raw = encode_header(header)
    views = [memoryview(b).cast("B") for b in buffers]
    payload_len = sum(v.nbytes for v in views)
    prefix = _PREFIX.pack(_MAGIC, len(raw), payload_len)
    try:
        _sendmsg_all(sock, [memoryview(prefix), memoryview(raw), *views], fds)
    except OSError as exc:
        raise SandboxError(f"channel: sending a frame failed: {exc}") from exc


def _recv_exact_into(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < view.nbytes:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise SandboxError(
                f"channel: peer closed the connection in the middle of a frame ({got} of {view.nbytes} bytes)"
            )
        got += n


def _close_all(fds: Sequence[int]) -> None:
    import os

    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def recv_frame(sock: socket.socket, caps: FrameCaps) -> Frame:
    """Receive one frame, enforcing ``caps`` before allocating. EOF before a frame starts is an error."""
    prefix = bytearray(_PREFIX.size)
    fds: list[int] = []
    try:
        n, ancdata, flags, _ = sock.recvmsg_into(
            [prefix], socket.CMSG_SPACE(MAX_FDS_PER_FRAME * 4), socket.MSG_CMSG_CLOEXEC
        )
    except TimeoutError:
        raise
    except OSError as exc:
        raise SandboxError(f"channel: receiving a frame failed: {exc}") from exc
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[: len(data) - len(data) % 4]))
    try:
        if flags & socket.MSG_CTRUNC:
            raise SandboxError(f"channel: more than {MAX_FDS_PER_FRAME} file descriptors in one frame")
        if n == 0:
            raise SandboxError("channel: peer closed the connection")
        if n < len(prefix):
            _recv_exact_into(sock, memoryview(prefix)[n:])
        magic, header_len, payload_len = _PREFIX.unpack(prefix)
        if magic != _MAGIC:
            raise SandboxError(f"channel: frame magic is {bytes(magic)!r}, expected {_MAGIC!r}")
        if header_len > caps.max_header_bytes:
            raise LimitError(
                f"channel: frame header of {header_len} bytes exceeds the cap of {caps.max_header_bytes}"
            )
        if header_len + payload_len > caps.max_frame_bytes:
            raise LimitError(
                f"channel: frame of {header_len + payload_len} bytes exceeds the cap of {caps.max_frame_bytes}"
            )
        raw = bytearray(header_len)
        _recv_exact_into(sock, memoryview(raw))
        header = decode_header(raw)
        payload = bytearray(payload_len)
        _recv_exact_into(sock, memoryview(payload))
    except BaseException:
        _close_all(fds)
        raise
    return Frame(header=header, payload=memoryview(payload), fds=tuple(fds))
