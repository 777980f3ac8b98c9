"""Bounded bulk work per turn of the event loop: request and reply bodies move in paced slices.

One event loop serves every tenant. asyncio's TLS transport encrypts whatever one ``write`` hands
it, at once, and the kernel takes loopback bytes as fast as they come: an 8 MiB reply written in
one go (uvicorn's ``send``, h11's framing, TLS) was encrypted and sent inside a single callback,
~5 ms of the loop's CPU (12 ms and more of wall time on a loaded machine) during which no other
tenant's request moved. Flow control does not stop this: asyncio pauses the writer only once
512 KiB of ciphertext are held back, which a reader as fast as loopback never lets happen. Even
in slices, each connection's slice in every turn adds up: a turn of the loop runs every callback
that is ready, so with many connections moving large bodies a small request's every step waits
behind one slice per connection.

:class:`Paced` (ASGI middleware, outermost) therefore meters bulk bytes through one
:class:`TurnBudget` per event loop, shared by every connection:

* a response body, whatever the application's ``send`` calls, goes to the server in slices of at
  most :data:`SLICE_BYTES`; past a reply's first :data:`FREE_BYTES`, each slice first takes its
  size from the turn's budget;
* a request body: once a request has received :data:`FREE_BYTES`, each further ``receive`` (which
  lets uvicorn read on: it stops reading while 64 KiB are unread) first takes a slice's worth.

Each metered slice waits for a later turn; a turn grants at most :data:`SLICE_BYTES` (and
always at least one waiter, so nothing starves); the rest wait, first come first served, for the
next turns. So the loop spends at most about
:data:`TURN_BUDGET_SECONDS` per turn moving bulk bodies, however many connections move them, and a
small request's steps run between. Small bodies (up to :data:`FREE_BYTES`, the size below which
the connection's writes are coalesced anyway) are never metered, so a small request pays nothing;
metering from there on, not from a slice on, keeps many connections with medium bodies from
each moving a free slice in the same turn. (What no middleware can meter is the first read of
each connection: asyncio decrypts up to 256 KiB per readable connection per turn before the
application asks; the connection caps bound how many there are.)
Flow control is kept: uvicorn's ``send`` still waits for the transport to drain before each slice
while the peer does not read.

The size follows from the budget: the write path (h11 framing, TLS encryption, the socket send)
costs ~0.6-0.8 ms of CPU per MiB on the 2-core machine this was measured on, so 256 KiB is
~0.15-0.2 ms; it is also what asyncio's TLS layer decrypts per read (``SSLProtocol.max_size``).
Much smaller slices cost more per byte (16 KiB: 1.1 ms per MiB).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airlock.gateway._guard import COALESCE_BELOW

__all__ = ["FREE_BYTES", "SLICE_BYTES", "TURN_BUDGET_SECONDS", "Paced", "TurnBudget"]

#: the loop CPU that bulk bodies (all connections together) may take in one turn of the event loop
TURN_BUDGET_SECONDS: Final = 0.00025
#: measured write path cost: seconds of CPU per byte (0.6-0.8 ms per MiB, TLS on loopback)
_WRITE_SECONDS_PER_BYTE: Final = 0.00075 / (1024 * 1024)
#: bulk bytes granted per turn: TURN_BUDGET_SECONDS of writing, rounded down to a power of two
#: (256 KiB); also the largest body one ``send`` hands the server
SLICE_BYTES: Final = 1 << (int(TURN_BUDGET_SECONDS / _WRITE_SECONDS_PER_BYTE).bit_length() - 1)
#: a body's bytes that move unmetered (the coalescing threshold of :class:`._guard.CoalescedWrites`)
FREE_BYTES: Final = COALESCE_BELOW


class TurnBudget:
    """Bulk bytes granted per turn of one event loop, to waiters in the order they asked.

    A turn's grants are made by a callback scheduled with ``call_soon``: it runs in the loop's
    next iteration, after that iteration's I/O events were queued, so every turn that grants bulk
    work also runs the small requests' callbacks that became ready meanwhile."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_turn: int = SLICE_BYTES) -> None:
        self.loop, self.per_turn = loop, per_turn
        self._waiting: deque[tuple[asyncio.Future[None], int]] = deque()
        self._scheduled = False
        #: grants made (for tests and the docs' measurements)
        self.grants = 0

    async def take(self, size: int) -> None:
        """Return once ``size`` bytes of bulk work may run: always in a later turn of the loop (so
        the caller's previous slice and the next are never in one callback)."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiting.append((waiter, size))
        self._schedule()
        await waiter  # cancelled: its entry is skipped when its turn comes

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        used = 0
        while self._waiting and used < self.per_turn:
            waiter, size = self._waiting.popleft()
            if waiter.done():
                continue
            waiter.set_result(None)
            used += size
            self.grants += 1
        if self._waiting:
            self._schedule()


class Paced:
    """ASGI middleware: request and response bodies beyond :data:`FREE_BYTES` move in slices
    metered by the event loop's :class:`TurnBudget`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.budget: TurnBudget | None = None

    def _budget(self) -> TurnBudget:
        loop = asyncio.get_running_loop()
        if self.budget is None or self.budget.loop is not loop:
            self.budget = TurnBudget(loop)
        return self.budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = self._budget()
        #: body bytes this request received, and this reply sent
        received = sent = 0
        #: the request body has more to come (a receive after its end waits for a disconnect)
        reading = True

        async def paced_receive() -> Message:
            nonlocal received, reading
            if reading and received >= FREE_BYTES:
                await budget.take(SLICE_BYTES)  # the next read, at most one TLS read (256 KiB)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                reading = bool(message.get("more_body", False))
            else:
                reading = False
            return message

        async def paced_send(message: Message) -> None:
            nonlocal sent
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or not body or sent + len(body) <= FREE_BYTES:
                sent += len(body) if message["type"] == "http.response.body" else 0
                await send(message)
                return
            view = memoryview(body).cast("B")
            more = bool(message.get("more_body", False))
            start, end = 0, len(view)
            while start < end:
                # the first slice fills this reply's free allowance; every later one is metered
                stop = min(end, start + (FREE_BYTES - sent if sent < FREE_BYTES else SLICE_BYTES))
                if sent >= FREE_BYTES:
                    await budget.take(stop - start)
                await send(
                    {"type": "http.response.body", "body": view[start:stop], "more_body": more or stop < end}
                )
                sent += stop - start
                start = stop

        await self.app(scope, paced_receive, paced_send)
