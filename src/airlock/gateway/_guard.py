"""What happens before authentication: connection caps, header deadlines, strict headers, and a
token bucket per source address.

Nothing here stores anything a caller sent: addresses are the only key (an IPv6 address counts as
its /64, which one host can fill at will), the table of buckets is bounded (the least recently seen
address is forgotten, but only once its buckets are full again; while it is still in debt, new
addresses share one overflow bucket), and refusals are counted, never logged or audited one by one. All bounds come
from ``[server]`` (:class:`~airlock.gateway._config.ServerConfig`).

* :class:`ConnectionGuard` + :func:`guarded_protocol`: uvicorn's h11 protocol with a global and a
  per-address cap on open connections (connections beyond it are closed at once) and a deadline
  for each request's header block, counted from its first byte (slowloris). uvicorn 0.54 has a
  keep-alive timeout and ``limit_concurrency`` (a 503 after the headers were read, with the
  connection still open) but neither bounds open connections nor how long headers may take.
* :class:`PreAuth`: ASGI middleware. Duplicate single-valued headers (two ``Authorization``: which
  one would a proxy have checked?) and ``Content-Length`` together with ``Transfer-Encoding``
  (request smuggling behind a proxy that picks the other one) are a 400 that closes the connection;
  then a 429 unless the source address has a token in both of its buckets: ``requests`` (taken by
  every request; generous, so one busy client is not throttled) and ``failures`` (taken by each
  401; small, so a stranger gets a few audited 401s a second and then 429s that cost nothing).
* With TLS, connections are counted from accept(), before their handshake (:class:`_GuardedTLS`),
  and the handshake is given ``header_timeout_seconds`` too (:class:`GuardedServer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import re
import resource
import socket
import time
from asyncio.sslproto import SSLProtocol
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import h11
import uvicorn
from h11._receivebuffer import ReceiveBuffer
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from airlock.gateway._config import ServerConfig

__all__ = [
    "ADMIN_CONNECTIONS",
    "ConnectionGuard",
    "Evictable",
    "GuardedServer",
    "PreAuth",
    "address_key",
    "connection_cap",
    "guarded_protocol",
    "raise_fd_limit",
]

#: headers that may appear at most once in a request
SINGLE: Final = frozenset(
    {
        b"authorization",
        b"content-length",
        b"transfer-encoding",
        b"content-type",
        b"host",
        b"inference-header-content-length",
    }
)


@functools.lru_cache(maxsize=4096)
def address_key(host: str | None) -> str:
    """The unit a limit applies to: an IPv4 address, or the /64 network of an IPv6 address.

    Asked on every request and every connection; remembered for the last 4096 peer addresses
    (parsing one costs more than the rest of the pre-auth check)."""
    if not host:
        return "-"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "-"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return str(address)


#: file descriptors kept free for everything but API connections: listeners, SQLite, logs, the
#: admin port, codec pipes (plus :data:`FDS_PER_LANE` for each lane's workers)
FDS_RESERVED: Final = 64
#: open connections to the admin port (/metrics), out of that reserve
ADMIN_CONNECTIONS: Final = 16
FDS_PER_LANE: Final = 8


def connection_cap(configured: int, fd_limit: int, lanes: int) -> int:
    """The connection cap actually enforced: never more than the descriptors left once the reserve
    is set aside, so accept() never meets EMFILE (asyncio then stops accepting for a second at a
    time, and every caller stalls)."""
    return max(1, min(configured, fd_limit - FDS_RESERVED - FDS_PER_LANE * lanes))


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most 65536); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 65536 if soft == resource.RLIM_INFINITY else soft


class Evictable:
    """A connection the guard may close to make room for a new one (see :meth:`ConnectionGuard.open`)."""

    #: set by :meth:`evict`; the connection's ``connection_lost`` then gives the slot back
    evicted = False

    def evict(self) -> None:
        raise NotImplementedError


class ConnectionGuard:
    """Counts open connections in all and per address; shared by every protocol instance.

    When the global cap is reached, a new connection takes the place of one that does nothing for
    anyone: first the connection idle longest between requests (a keep-alive connection, which
    HTTP/1.1 lets a server close at any time), else the one that has waited longest for its TLS
    handshake or its request head to complete. A connection whose request is being read, run or
    answered is never closed for a newcomer. So strangers holding connections open (idle, or
    trickling heads within the header deadline) cannot lock tenants out: each newcomer pushes out
    the stalest of them. The per-address cap is not relaxed this way."""

    def __init__(self, config: ServerConfig, cap: int | None = None) -> None:
        self.config = config
        self.cap = config.max_connections if cap is None else cap
        self.total = 0
        #: connections closed to make room whose ``connection_lost`` has not run yet
        self.evicting = 0
        self.by_address: dict[str, int] = {}
        #: connections idle between requests, and connections waiting for a handshake or a head:
        #: longest-waiting first (each state change moves a connection to the end)
        self._idle: OrderedDict[Evictable, None] = OrderedDict()
        self._waiting: OrderedDict[Evictable, None] = OrderedDict()
        #: connections closed by a cap or a header deadline, by reason (for metrics)
        self.refused: dict[str, int] = {
            "connections": 0, "address_connections": 0, "header_timeout": 0, "send_timeout": 0,
            "small_chunks": 0, "header_lines": 0, "obs_fold": 0, "repeated_length": 0, "evicted_idle": 0,
            "evicted_waiting": 0,
        }  # fmt: skip

    def open(self, key: str) -> str | None:
        """Count a new connection; return the refusal reason (and count nothing) when over a cap."""
        if self.by_address.get(key, 0) >= self.config.max_connections_per_address:
            self.refused["address_connections"] += 1
            return "address_connections"
        if self.total - self.evicting >= self.cap and not self._evict():
            self.refused["connections"] += 1
            return "connections"
        self.total += 1
        self.by_address[key] = self.by_address.get(key, 0) + 1
        return None

    def _evict(self) -> bool:
        """Close the stalest idle or waiting connection; False when every connection is at work."""
        for table, reason in ((self._idle, "evicted_idle"), (self._waiting, "evicted_waiting")):
            if table:
                victim, _ = table.popitem(last=False)
                self.refused[reason] += 1
                self.evicting += 1
                victim.evicted = True
                victim.evict()
                return True
        return False

    def idle(self, connection: Evictable) -> None:
        """``connection`` answered its request and waits for the next one."""
        self._waiting.pop(connection, None)
        self._idle[connection] = None

    def waiting(self, connection: Evictable) -> None:
        """``connection`` waits for its TLS handshake or a request head."""
        self._idle.pop(connection, None)
        self._waiting[connection] = None

    def busy(self, connection: Evictable) -> None:
        """``connection`` is reading, running or answering a request: never evicted."""
        self._idle.pop(connection, None)
        self._waiting.pop(connection, None)

    def gone(self, connection: Evictable) -> None:
        """``connection`` is closed (its ``connection_lost``)."""
        self.busy(connection)
        if connection.evicted:
            connection.evicted = False
            self.evicting -= 1

    def close(self, key: str) -> None:
        self.total -= 1
        left = self.by_address.get(key, 1) - 1
        if left > 0:
            self.by_address[key] = left
        else:
            self.by_address.pop(key, None)


#: header lines a request head may have (Apache's LimitRequestFields): h11 parses each line in
#: Python (~6 us), before authentication, and its 16 KiB head bound alone allows ~3000 of them
HEADER_LINES: Final = 100
#: where a request head ends (h11 accepts bare LF line ends too)
_HEAD_END: Final = re.compile(rb"\n\r?\n")
#: obsolete line folding (RFC 9112 5.2): a header line that starts with a space or a tab
_OBS_FOLD: Final = re.compile(rb"\n[ \t]")
#: a Content-Length header line and its value (a name is never preceded by white space: that is
#: a fold, refused first)
_LENGTH: Final = re.compile(rb"\ncontent-length[ \t]*:([^\n]*)", re.IGNORECASE)
#: the last chunk's size line (trailers follow it), after the previous chunk's CRLF, which h11
#: consumes only when it reads on
_LAST_CHUNK: Final = re.compile(rb"(?:\r?\n)?0+[ \t]*(?:;[^\r\n]*)?\r?\n")
#: chunks a request body may have for free; beyond them, one more chunk per CHUNK_BYTES of payload
CHUNK_GRACE: Final = 64
CHUNK_BYTES: Final = 1024


def _ambiguous_head(head: bytes, end: int) -> str | None:
    """What makes a complete request head (``head[:end]``) ambiguous before h11 parses it, if
    anything: a folded line (h11 would unfold it into the previous header's value; a proxy in front
    may read a header of its own: a folded ``Transfer-Encoding`` next to ``Content-Length``), or
    ``Content-Length`` more than once or as a list (h11 merges identical values into one header, so
    the duplicate check after it cannot see them; a proxy may reject or pick one)."""
    if _OBS_FOLD.search(head, 0, end) is not None:
        return "obs_fold"
    lengths = _LENGTH.findall(head, 0, end)
    if len(lengths) > 1 or any(b"," in value for value in lengths):
        return "repeated_length"
    return None


class _ReceiveBuffer(ReceiveBuffer):
    """h11's receive buffer without its two copies of every body byte.

    ``maybe_extract_at_most`` (how h11 takes body bytes, whatever the framing) sliced the buffer
    twice, once to test for emptiness and once to return, each slice a fresh copy: for an 8 MiB
    body ~4 ms of the event loop's time (12.7 ms -> 8.3 ms to take an 8 MiB body in 256 KiB
    reads through h11 as uvicorn does). When the caller takes everything buffered, the buffer
    itself is handed over and a new one started; otherwise one slice, as h11's ``_extract``."""

    def maybe_extract_at_most(self, count: int) -> bytearray | None:
        data = self._data
        if not data:
            return None
        if count >= len(data):
            self._data = bytearray()
            self._next_line_search = self._multiple_lines_search = 0
            return data
        return self._extract(count)


class _BoundedFraming(h11.Connection):
    """h11's connection, refusing chunked bodies whose chunks are too small to be worth parsing.

    h11 parses each chunk in Python (~15 us), on the event loop, as soon as its bytes arrive and
    before the application has seen the request (so before authentication): 256 KiB of one-byte
    chunks, one socket read, stalled every caller for ~0.7 s. A body may have ``CHUNK_GRACE``
    chunks plus one per ``CHUNK_BYTES`` of payload so far; the framing work then stays proportional
    to the payload, as with ``Content-Length``. Likewise a request head, and a chunked body's
    trailers, may have ``HEADER_LINES`` lines, counted before h11 parses them. ``on_violation(reason)`` is called once (it aborts the
    connection) and parsing stops."""

    def __init__(self, max_incomplete_event_size: int, on_violation: Callable[..., None]) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self._receive_buffer = _ReceiveBuffer()
        self._on_violation = on_violation
        self._peek_bytes = max_incomplete_event_size + 8
        self._chunks = 0
        self._bytes = 0
        #: a chunked body's next bytes are a chunk-size line (the last one is followed by trailers)
        self._at_chunk_line = False
        self._violated = False

    def next_event(self) -> Any:
        if self._violated:
            return h11.NEED_DATA
        if self.their_state is h11.IDLE:
            head = self._peek()
            if self._too_many_lines(head):
                self._violate("header_lines")
                return h11.NEED_DATA
            end = _HEAD_END.search(head)
            if end is not None:
                problem = _ambiguous_head(head, end.start())
                if problem is not None:
                    # uvicorn answers this with a 400 and closes the connection
                    self._on_violation(problem, abort=False)
                    self._violated = True
                    self._process_error(self.their_role)  # h11's own state after a client's error
                    raise h11.RemoteProtocolError(problem, error_status_hint=400)
        if self._at_chunk_line and self.their_state is h11.SEND_BODY:
            problem = self._bad_trailers()
            if problem is not None:
                self._violate(problem)
                return h11.NEED_DATA
        event = super().next_event()
        if isinstance(event, h11.Data):
            self._bytes += len(event.data)
            self._at_chunk_line = bool(event.chunk_end)
            if event.chunk_start:
                self._chunks += 1
                if self._chunks > CHUNK_GRACE + self._bytes // CHUNK_BYTES:
                    self._violate("small_chunks")
                    return h11.NEED_DATA
        elif isinstance(event, h11.Request):
            self._chunks = self._bytes = 0
            self._at_chunk_line = any(name == b"transfer-encoding" for name, _ in event.headers)
        elif isinstance(event, h11.EndOfMessage):
            self._at_chunk_line = False
        return event

    def _peek(self) -> bytes:
        """The first bytes not yet parsed (no more than h11 would take as one head)."""
        buffer = getattr(getattr(self, "_receive_buffer", None), "_data", None)
        if isinstance(buffer, bytearray):
            return bytes(buffer[: self._peek_bytes])
        return self.trailing_data[0][: self._peek_bytes]

    @staticmethod
    def _too_many_lines(data: bytes, first: int = 1) -> bool:
        """Whether a head (a request line and headers, or ``first=0``: trailers only), as far as it
        has arrived, has more than HEADER_LINES header lines; counted with C-speed byte scans
        before h11 parses a line of it."""
        end = _HEAD_END.search(data)
        if end is not None:  # the request line's LF and one per header line but the last
            return data.count(b"\n", 0, end.start()) + 1 - first > HEADER_LINES
        return data.count(b"\n") - first > HEADER_LINES  # the blank line may still come

    def _bad_trailers(self) -> str | None:
        """At a chunk-size line: when it is the last chunk's, what is wrong with the trailer lines
        that follow (too many, or a folded one), as far as they have arrived."""
        data = self._peek()
        last = _LAST_CHUNK.match(data)
        if last is None:
            return None
        rest = data[last.end() :]
        if rest[:1] == b"\n" or rest[:2] == b"\r\n":
            return None  # no trailers
        end = _HEAD_END.search(rest)
        if rest[:1] in (b" ", b"\t") or _OBS_FOLD.search(rest, 0, len(rest) if end is None else end.start()):
            return "obs_fold"  # as ambiguous as in the head
        return "header_lines" if self._too_many_lines(rest, first=0) else None

    def _violate(self, reason: str) -> None:
        self._violated = True
        self._on_violation(reason)


#: writes smaller than this wait for the end of the loop's turn and go out together
COALESCE_BELOW: Final = 16 * 1024


class CoalescedWrites(asyncio.Transport):
    """A connection's transport whose small writes of one turn of the event loop go out as one.

    uvicorn writes a reply's head and its body separately; over TLS each write is a record of its
    own and a ``send()`` (a third of the loop's time per small request went to those sends). Here a
    small write is held until the end of the loop's current turn, and what was held goes out in one
    write; a large write goes out at once, after what was held. Closing sends what was held first;
    aborting drops it (the connection is cut anyway)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport, self._loop = transport, loop
        self._held: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if len(data) >= COALESCE_BELOW:
            self.flush()
            self._transport.write(data)
            return
        self._held.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._held)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class _GuardedH11(H11Protocol, Evictable):
    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = getattr(
            self.conn, "_max_incomplete_event_size", h11._connection.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        )
        self.conn = _BoundedFraming(limit, self._framing)
        self._guard_key: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._timed_cycle: object = None
        self._send_timer: asyncio.TimerHandle | None = None
        #: set by :class:`_GuardedTLS`, which counted this connection at accept()
        self._counted_by_tls = False
        self._tls_layer: _GuardedTLS | None = None
        self._owns_count = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, asyncio.get_running_loop()))
        key = address_key(self.client[0] if self.client else None)
        if not self._counted_by_tls:
            if self.guard.open(key) is not None:
                transport.abort()
                return
            self._owns_count = True
        self._guard_key = key
        if self._tls_layer is not None:
            self.guard.busy(self._tls_layer)  # its handshake is done: this layer waits for a head now
        self.guard.waiting(self)
        self._arm()

    def evict(self) -> None:
        # abort, not close: a TLS close waits for the peer's close_notify, holding the slot
        self.transport.abort()

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(
            self.guard.config.header_timeout_seconds, self._header_deadline
        )
        self._timed_cycle = self.cycle

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _framing(self, reason: str, abort: bool = True) -> None:
        self.guard.refused[reason] += 1
        if abort:
            self.transport.abort()

    def _header_deadline(self) -> None:
        self._header_timer = None
        self.guard.refused["header_timeout"] += 1
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and self._header_timer is None and self._guard_key is not None:
            self._arm()  # the first byte of a new request: its headers now have a deadline
            self.guard.waiting(self)
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._timed_cycle:
            self._disarm()  # the header block is complete (uvicorn started a new request cycle)
            self.guard.busy(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._guard_key is not None and self.timeout_keep_alive_task is not None:
            self.guard.idle(self)  # kept alive, with nothing of a next request yet

    def pause_writing(self) -> None:
        """The reply backs up (the client does not read): it has send_timeout_seconds to resume."""
        super().pause_writing()
        if self._send_timer is None and self._guard_key is not None:
            self._send_timer = self.loop.call_later(
                self.guard.config.send_timeout_seconds, self._send_deadline
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_deadline(self) -> None:
        # abort, not close: close() would wait, holding the buffer, for a reader that never reads
        self._send_timer = None
        self.guard.refused["send_timeout"] += 1
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.gone(self)
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._guard_key is not None and self._owns_count:
            self.guard.close(self._guard_key)
        self._guard_key = None
        self._owns_count = False
        super().connection_lost(exc)


class _GuardedTLS(SSLProtocol, Evictable):
    """asyncio's TLS protocol, counted against the connection caps from accept() on.

    With ``ssl=`` handed to ``create_server``, the application protocol hears of a connection only
    once the handshake is done: connections that never finish it (or never start it) held a file
    descriptor each, uncounted, for the whole handshake deadline. This layer takes the count when
    the TCP connection is accepted and gives it back when the connection is gone."""

    def __init__(self, guard: ConnectionGuard, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._guard_key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        key = address_key(peer[0] if isinstance(peer, tuple) and peer else None)
        if self._guard.open(key) is not None:
            # before any handshake work; connection_lost follows
            (transport.abort if isinstance(transport, asyncio.Transport) else transport.close)()
            return
        self._guard_key = key
        app = self._app_protocol
        if isinstance(app, _GuardedH11):
            app._counted_by_tls = True
            app._tls_layer = self
        self._guard.waiting(self)
        super().connection_made(transport)

    def evict(self) -> None:
        transport = self._transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        elif transport is not None:
            transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.gone(self)
        if self._guard_key is not None:
            self._guard.close(self._guard_key)
            self._guard_key = None
        super().connection_lost(exc)


def guarded_protocol(guard: ConnectionGuard, base: type[H11Protocol] = H11Protocol) -> type[H11Protocol]:
    """An h11 protocol class (derived from ``base``) that enforces ``guard``."""
    bases: tuple[type, ...] = (_GuardedH11,) if base is H11Protocol else (_GuardedH11, base)
    return type("GuardedH11", bases, {"guard": guard})


class GuardedServer(uvicorn.Server):
    """uvicorn's server, with a deadline on TLS handshakes (asyncio's default is 60 s).

    uvicorn 0.54 does not pass ``ssl_handshake_timeout`` to ``loop.create_server``; this server
    supplies it while its listeners are created, on this loop only, and layers TLS itself
    (:class:`_GuardedTLS`) so that connections count against the caps before their handshake."""

    def __init__(self, config: uvicorn.Config, handshake_timeout: float) -> None:
        super().__init__(config)
        self.handshake_timeout = handshake_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        original = loop.create_server

        async def create_server(
            factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
        ) -> asyncio.Server:
            context = kwargs.pop("ssl", None)
            if context is None:
                return await original(factory, *args, **kwargs)

            def tls() -> asyncio.BaseProtocol:
                app = factory()
                guard = getattr(app, "guard", None)
                if not isinstance(guard, ConnectionGuard):
                    raise TypeError("the TLS listener needs a guarded protocol")
                return _GuardedTLS(
                    guard, loop, app, context, None, server_side=True,
                    ssl_handshake_timeout=self.handshake_timeout,
                )  # fmt: skip

            # plain TCP underneath, TLS layered by _GuardedTLS: counted from accept() on
            return await original(tls, *args, **kwargs)

        loop.create_server = create_server  # type: ignore[method-assign,assignment]
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server  # the instance attribute; the class method shows through again


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens, self.stamp = tokens, stamp

    def refill(self, now: float, rate: float, burst: float) -> None:
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now


class _Address:
    __slots__ = ("failures", "requests")

    def __init__(self, requests: _Bucket, failures: _Bucket) -> None:
        self.requests, self.failures = requests, failures


async def _answer(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": text}).encode("ascii")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PreAuth:
    """ASGI middleware: strict headers, then a token from the source address's bucket."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.rate = config.preauth_requests_per_second
        self.burst = float(config.preauth_burst)
        self.failure_rate = config.preauth_failures_per_second
        self.failure_burst = float(config.preauth_failure_burst)
        self.capacity = config.preauth_tracked_addresses
        self.buckets: OrderedDict[str, _Address] = OrderedDict()
        #: the buckets new addresses share while the table is full of addresses in debt
        now = time.monotonic()
        self.overflow = _Address(_Bucket(self.burst, now), _Bucket(self.failure_burst, now))
        #: refusals by reason (for metrics); the keys are fixed
        self.refused: dict[str, int] = {
            "rate": 0,
            "failures": 0,
            "duplicate_header": 0,
            "length_and_chunked": 0,
        }

    def _refill(self, entry: _Address, now: float) -> bool:
        """Refill both buckets; True when both are full (the address is then like one never seen)."""
        entry.requests.refill(now, self.rate, self.burst)
        entry.failures.refill(now, self.failure_rate, self.failure_burst)
        return entry.requests.tokens >= self.burst and entry.failures.tokens >= self.failure_burst

    def _address(self, key: str, now: float) -> _Address:
        entry = self.buckets.get(key)
        if entry is not None:
            self.buckets.move_to_end(key)
            self._refill(entry, now)
            return entry
        if len(self.buckets) >= self.capacity:
            # Only an address whose buckets are full again may be forgotten: forgetting one in debt
            # would hand it a fresh burst, and an attacker cycling through more addresses than the
            # table holds would never run dry. While the least recently seen address is still in
            # debt, every new address shares one overflow bucket instead.
            oldest = next(iter(self.buckets.values()))
            if not self._refill(oldest, now):
                self._refill(self.overflow, now)
                return self.overflow
            self.buckets.popitem(last=False)
        entry = self.buckets[key] = _Address(_Bucket(self.burst, now), _Bucket(self.failure_burst, now))
        return entry

    def _take(self, key: str, now: float) -> tuple[float, str]:
        """(0.0, "") when the request may go on, else the seconds until it could and the reason."""
        entry = self._address(key, now)
        if entry.failures.tokens < 1.0:
            return (1.0 - entry.failures.tokens) / self.failure_rate, "failures"
        if entry.requests.tokens < 1.0:
            return (1.0 - entry.requests.tokens) / self.rate, "rate"
        entry.requests.tokens -= 1.0
        return 0.0, ""

    def failed(self, client: tuple[str, int] | None) -> None:
        """Charge one failed authentication to the caller's address."""
        entry = self._address(address_key(client[0] if client else None), time.monotonic())
        entry.failures.tokens = max(0.0, entry.failures.tokens - 1.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: set[bytes] = set()
        problem = None
        for name, _ in scope["headers"]:
            if name in SINGLE:
                if name in seen:
                    problem = "duplicate_header"
                    break
                seen.add(name)
        if problem is None and b"content-length" in seen and b"transfer-encoding" in seen:
            problem = "length_and_chunked"
        if problem is not None:
            self.refused[problem] += 1
            # the body cannot be framed unambiguously: answer and close, never read on
            await _answer(send, 400, "invalid request: ambiguous headers", [(b"connection", b"close")])
            return
        has_body = b"transfer-encoding" in seen or any(
            name == b"content-length" and value.strip() != b"0" for name, value in scope["headers"]
        )
        close = [(b"connection", b"close")] if has_body else []
        client = scope.get("client")
        wait, reason = self._take(address_key(client[0] if client else None), time.monotonic())
        if wait > 0.0:
            self.refused[reason] += 1
            retry = str(max(1, int(wait + 0.999))).encode("ascii")
            await _answer(send, 429, "rate limit exceeded: source address", [(b"retry-after", retry), *close])
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        # A reply sent before the body was read (401, 404, 429, 413, ...) closes the connection:
        # otherwise the server goes on reading and dropping the unread body, with no deadline, for as
        # long as the client cares to trickle it.
        received = False

        async def receive_all() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                received = True
            return message

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not received:
                message = {**message, "headers": [*message.get("headers", []), *close]}
            await send(message)

        await self.app(scope, receive_all, send_closing)
