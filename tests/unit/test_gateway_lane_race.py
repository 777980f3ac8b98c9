"""A lane's deadline against an answer already given (issue 12's known race, made deterministic).

A worker answers request 1 and at once runs request 2 of the same lane. If the loop sees request 1's
deadline before it has the answer (its thread posted the answer, the loop had the deadline's task
step queued first), the lane killed the worker for request 1: request 1 was lost although answered,
and request 2, which ran on that worker, failed with it. The thread now keeps the answer on the job
before the loop hears of it; a deadline that finds an answer gives it to the caller and kills
nobody.

The backend here is a stand-in for the sandboxed worker (the race is about the lane's threads and
the loop's order of callbacks, which a real worker cannot be made to hit on purpose); the loop's
order is forced with two timers, as the comments say.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np

from airlock.errors import AirlockError
from airlock.gateway._workers import Lane


class _Backend:
    """Answers each request with its input once the test releases it; killing it fails the request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[tuple[dict[str, Any], threading.Event]] = []
        self.receiving = 0  # receive() calls entered
        self.dead = False
        self.kills = 0

    def start(self) -> None:
        pass

    def infer(self, inputs: Any) -> dict[str, Any]:
        self.send(inputs)
        return self.receive()

    def send(self, inputs: Any) -> None:
        with self.lock:
            if self.dead:
                raise AirlockError("worker is not running")
            self.sent.append((dict(inputs), threading.Event()))

    def receive(self) -> dict[str, Any]:
        with self.lock:
            index = self.receiving
            self.receiving += 1
            inputs, released = self.sent[index]
        released.wait(30)
        if self.dead:
            raise AirlockError("worker killed")
        return {"y": inputs["x"]}

    def release(self, index: int) -> None:
        self.sent[index][1].set()

    def alive(self) -> bool:
        return not self.dead

    def exit_fd(self) -> int | None:
        return None

    def kill(self) -> None:
        with self.lock:
            self.dead = True
            self.kills += 1
            events = [event for _, event in self.sent]
        for event in events:
            event.set()

    @property
    def pid(self) -> int | None:
        return None


def _wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


async def _race() -> tuple[object, object, int, int]:
    backends: list[_Backend] = []

    def factory() -> _Backend:
        backends.append(_Backend())
        return backends[-1]

    lane = Lane("acme", "m", "sha256:0", factory, 1)
    await lane.start()
    loop = asyncio.get_running_loop()
    worker = backends[0]
    deadline = loop.time() + 0.5
    first = asyncio.create_task(lane.infer({"x": np.array([1])}, deadline))
    await asyncio.sleep(0.05)
    _wait_for(lambda: worker.receiving == 1)  # request 1 runs
    second = asyncio.create_task(lane.infer({"x": np.array([2])}, loop.time() + 60))
    await asyncio.sleep(0.05)  # request 2 queued behind it

    def hold() -> None:
        # keep the loop busy past the deadline, so request 1's deadline and answer() below fall
        # due together and run in that order, in one turn of the loop
        time.sleep(0.2)

    def answer() -> None:
        # the worker answers request 1; its thread posts the answer and takes request 2 while the
        # deadline's task step is already queued ahead of the answer
        worker.release(0)
        _wait_for(lambda: worker.receiving == 2)

    loop.call_at(deadline - 0.1, hold)
    loop.call_at(deadline + 0.01, answer)
    results = await asyncio.gather(first, asyncio.sleep(0.5), return_exceptions=True)
    if not worker.dead:
        worker.release(1)
    try:
        async with asyncio.timeout(10):
            second_result: object = await second
    except BaseException as exc:
        second_result = exc
    kills, restarted = backends[0].kills, lane.restarted  # before close(), which kills every worker
    await lane.close()
    return results[0], second_result, kills, restarted


def test_an_answer_that_meets_its_deadline_is_given_and_kills_nobody() -> None:
    first, second, kills, restarted = asyncio.run(_race())
    assert isinstance(first, dict), first  # answered: the caller gets the answer, not a 504
    assert first["y"].tolist() == [1]
    assert isinstance(second, dict), second  # request 2 ran on the worker, which was not killed
    assert second["y"].tolist() == [2]
    assert (kills, restarted) == (0, 0)
