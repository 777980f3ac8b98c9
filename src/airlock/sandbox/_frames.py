"""Length-prefixed frames over a Unix socket, used in both directions between airlock and a worker.

A frame is ``magic (4) | header length u32 | payload length u64 | JSON header | payload``, little
endian. File descriptors ride along with the first bytes of a frame (SCM_RIGHTS), towards a job
only: the host receives with ``accept_fds=False`` and closes (then refuses) any a job attaches. Both
lengths are checked against the caps first; a payload is then received straight into one buffer
allocated once for the announced (and checked) size: a large one is an anonymous mapping, so a
claimed size costs address space but no memory until the bytes come, and the bytes are copied
once, by the kernel, with the GIL released (no zeroing, growing or copying in Python, which held
up every other thread of the host). A ``deadline`` bounds a whole
frame, not each read. The header must be one JSON object with no duplicate keys and no
NaN/Infinity. What the header *means* is checked by :mod:`._messages`. Every failure is
:class:`SandboxError` (or :class:`TimeoutError` past a deadline).

This module runs inside the sandbox too, so it imports only the standard library and
:mod:`airlock.errors`. Never pickle: the peer may be hostile.
"""

from __future__ import annotations

import array
import contextlib
import json
import mmap
import os
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError, SandboxError

__all__ = ["MAX_FDS_PER_FRAME", "Frame", "FrameCaps", "recv_frame", "send_frame"]

_MAGIC: Final = b"ALF1"
_PREFIX: Final = struct.Struct("<4sIQ")
MAX_FDS_PER_FRAME: Final = 4


@dataclass(frozen=True)
class FrameCaps:
    """Upper bounds a receiver enforces before allocating."""

    max_header_bytes: int
    max_frame_bytes: int
    #: the message types that may carry a payload (None: any). Checked once the header is read and
    #: before a payload byte is, so a message that has none (a token of text, ``done``, ``error``)
    #: cannot make the receiver hold ``max_frame_bytes`` or wait for bytes that never come.
    payload_types: frozenset[str] | None = None


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


#: payloads from this size on are received into an anonymous mapping (:func:`_allocate`), smaller
#: ones into a ``bytearray`` (zeroed, which costs next to nothing at that size)
_MAP_FROM: Final = 1 << 18


def _settle(sock: socket.socket, deadline: float | None) -> None:
    """Before each blocking call: the socket waits at most until ``deadline`` (a monotonic time)."""
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("channel: deadline passed")
    sock.settimeout(left)


def _sendmsg_all(
    sock: socket.socket, buffers: list[memoryview], fds: Sequence[int], deadline: float | None
) -> None:
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    pending = [b for b in buffers if b.nbytes]
    while pending:
        _settle(sock, deadline)
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
    *,
    deadline: float | None = None,
) -> None:
    """Send one frame. ``buffers`` are written back to back as the payload, without copying.

    ``deadline`` (a :func:`time.monotonic` time) bounds the whole send; past it :class:`TimeoutError`.
    """
    if len(fds) > MAX_FDS_PER_FRAME:
        raise SandboxError(f"channel: {len(fds)} file descriptors in one frame, at most {MAX_FDS_PER_FRAME}")
    raw = encode_header(header)
    views = [memoryview(b).cast("B") for b in buffers]
    payload_len = sum(v.nbytes for v in views)
    prefix = _PREFIX.pack(_MAGIC, len(raw), payload_len)
    try:
        _sendmsg_all(sock, [memoryview(prefix), memoryview(raw), *views], fds, deadline)
    except TimeoutError:
        raise
    except OSError as exc:
        raise SandboxError(f"channel: sending a frame failed: {exc}") from exc


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class _Receiver:
    """Reads from ``sock`` with one deadline for the whole frame and an fd policy for every read."""

    def __init__(self, sock: socket.socket, accept_fds: bool, deadline: float | None) -> None:
        self.sock = sock
        self.accept_fds = accept_fds
        self.deadline = deadline
        self.fds: list[int] = []
        self.first = True

    def read_into(self, view: memoryview) -> int:
        _settle(self.sock, self.deadline)
        # Every read asks for control data: a peer may attach descriptors to any byte of a frame,
        # and the only way to refuse them is to receive (then close) them.
        space = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * 4)
        try:
            n, ancdata, flags, _ = self.sock.recvmsg_into([view], space, socket.MSG_CMSG_CLOEXEC)
        except TimeoutError:
            raise
        except OSError as exc:
            raise SandboxError(f"channel: receiving a frame failed: {exc}") from exc
        got: list[int] = []
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got.extend(array.array("i", data[: len(data) - len(data) % 4]))
        self.fds.extend(got)
        if flags & socket.MSG_CTRUNC:
            raise SandboxError(f"channel: more than {MAX_FDS_PER_FRAME} file descriptors in one frame")
        if got and not (self.accept_fds and self.first):
            where = "" if self.first else " after the first bytes of a frame"
            raise SandboxError(
                f"channel: the peer sent {len(got)} file descriptor(s){where}; none are accepted (closed)"
            )
        self.first = False
        return n

    def exact_into(self, view: memoryview) -> None:
        got = 0
        while got < view.nbytes:
            with view[got:] as rest:
                n = self.read_into(rest)
            if n == 0:
                raise SandboxError(
                    f"channel: peer closed the connection in the middle of a frame ({got} of {view.nbytes} bytes)"
                )
            got += n

    def take(self, size: int) -> memoryview:
        """``size`` bytes, received straight into one buffer allocated once for them.

        The caller has checked ``size`` against its cap. A large buffer is an anonymous mapping:
        its pages are zero-filled by the kernel, with the GIL released, while the bytes are copied
        into them, so an announced size costs address space but no memory until the bytes come,
        and there is no zeroing or copying in Python."""
        buffer = _allocate(size)
        view = memoryview(buffer)
        try:
            self.exact_into(view)
        except BaseException:
            view.release()
            raise
        return view


def _allocate(size: int) -> bytearray | mmap.mmap:
    try:
        if size < _MAP_FROM:
            return bytearray(size)
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, MemoryError, OverflowError):
        raise SandboxError(f"channel: out of memory for the {size} bytes the peer announced") from None


def recv_frame(
    sock: socket.socket, caps: FrameCaps, *, accept_fds: bool = True, deadline: float | None = None
) -> Frame:
    """Receive one frame, enforcing ``caps`` before allocating. EOF before a frame starts is an error.

    ``accept_fds=False`` (the host side): descriptors the peer attaches anywhere are closed and the
    call fails. ``deadline`` (a :func:`time.monotonic` time) bounds the whole frame, however slowly
    its bytes arrive; past it :class:`TimeoutError`. Every other failure is :class:`SandboxError`.
    """
    receiver = _Receiver(sock, accept_fds, deadline)
    prefix = bytearray(_PREFIX.size)
    try:
        with memoryview(prefix) as view:
            n = receiver.read_into(view)
            if n == 0:
                raise SandboxError("channel: peer closed the connection")
            if n < len(prefix):
                receiver.exact_into(view[n:])
        magic, header_len, payload_len = _PREFIX.unpack(prefix)
        if magic != _MAGIC:
            raise SandboxError(f"channel: frame magic is {bytes(magic)!r}, expected {_MAGIC!r}")
        if header_len > caps.max_header_bytes:
            raise SandboxError(
                f"channel: frame header of {header_len} bytes exceeds the cap of {caps.max_header_bytes}"
            )
        if header_len + payload_len > caps.max_frame_bytes:
            raise SandboxError(
                f"channel: frame of {header_len + payload_len} bytes exceeds the cap of {caps.max_frame_bytes}"
            )
        raw = bytearray(header_len)  # at most max_header_bytes
        receiver.exact_into(memoryview(raw))
        header = decode_header(raw)
        kind = header.get("type")
        if payload_len and caps.payload_types is not None and kind not in caps.payload_types:
            raise SandboxError(
                f"channel: a {str(kind)[:40]!r} message carries no payload; {payload_len} bytes announced"
            )
        payload = receiver.take(payload_len)
    except BaseException:
        _close_all(receiver.fds)
        raise
    return Frame(header=header, payload=payload, fds=tuple(receiver.fds))
