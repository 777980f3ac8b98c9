"""Outside attacks on the OpenAI-compatible text endpoints, each a regression test of a hole found.

One gateway for the module (the real SmolLM2 GGUF, one worker, context cut to 2048 tokens, served
to tenant ``acme``; tenant ``globex`` has no text model), called over TLS with real clients. The
last test stops the gateway (shutdown with a stream open).

A request waits for a worker while the only one is being replaced (a load takes seconds on any
machine); a long generation cannot be relied on to hold it (the model may end its text early),
nor can stopping the job (SIGSTOP): its sandbox kills a stopped job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from airlock._cli import main
from airlock.gateway import Gateway, TenantLimits, create_key, load_config, open_store
from airlock.gateway._text_lane import TextLane
from tests.gateway.conftest import Running, write_config
from tests.text.conftest import smollm2_path

#: one gateway (and its model loads) per run: every test of this module in one xdist process
pytestmark = pytest.mark.xdist_group("attack-v1")

COUNT = "1, 2, 3,"  # the model goes on counting: no end-of-text within a few dozen tokens
#: a generation of many seconds on any CPU (the model counts on: it does not stop by itself); the
#: tests that start one end it early
LONG: dict[str, Any] = {
    "model": "smol",
    "prompt": COUNT,
    "max_tokens": 2000,
    "temperature": 0,
    "stream": True,
}


@dataclass
class Served:
    running: Running
    base: str
    tokens: dict[str, str]
    ca: Path
    state: Path
    stopped: bool = False

    def http(self, tenant: str = "acme", timeout: float = 60) -> httpx.Client:
        return httpx.Client(
            base_url=self.base,
            verify=ssl.create_default_context(cafile=str(self.ca)),
            headers={"Authorization": f"Bearer {self.tokens[tenant]}"},
            timeout=timeout,
        )

    @property
    def lane(self) -> TextLane:
        state = self.running.gateway.state
        assert state is not None
        return state.text_lanes[("acme", "smol")]

    def rows(self, request_id: str) -> list[tuple[str, int, int, int]]:
        with contextlib.closing(sqlite3.connect(self.state)) as db:
            return db.execute(
                "SELECT decision, status, prompt_tokens, completion_tokens FROM audit WHERE request_id = ? "
                "ORDER BY seq",
                (request_id,),
            ).fetchall()

    def sql(self, statement: str) -> None:
        """Run ``statement`` on the gateway's own store connections, on its loop: the one it reads
        with and the one audit rows are appended on (under its lock), so a TEMP trigger is seen
        by the appends."""

        async def run() -> None:
            state = self.running.gateway.state
            assert state is not None
            store: Any = state.store
            store._db.execute(statement)
            with store._audit_lock:
                store._audit_connection().execute(statement)

        self.running.call(run())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("attack-v1")
    certs = folder / "certs"
    assert main(["certs", "dev", "--out", str(certs), "--host", "127.0.0.1"]) == 0
    models = f"""
[tls]
cert = "{certs / "server.pem"}"
key = "{certs / "server.key"}"

[models.smol]
path = "{smollm2_path()}"
tenants = ["acme"]
max_tokens = 2000
context_length = 2048
"""
    server = "request_timeout_seconds = 30\ngeneration_timeout_seconds = 60\nmax_body_bytes = 2097152"
    path = write_config(folder, models, server=server)
    text_sandbox = (
        "[sandbox]\nwall_seconds = 600\nstart_seconds = 300\nthreads = 2\nmemory_bytes = 4294967296"
    )
    source = path.read_text(encoding="utf-8")
    path.write_text(
        re.sub(r"\[sandbox\]\n(?:[a-z_]+ = \d+\n)+", text_sandbox + "\n", source), encoding="utf-8"
    )
    config = load_config(path)
    store = open_store(config)
    store.add_tenant("acme", TenantLimits(tokens_per_minute=100000, max_generations=4))
    store.add_tenant("globex", None)
    tokens = {t: create_key(store, t)[1] for t in ("acme", "globex")}
    store.close()
    running = Running(Gateway(config), start_timeout=900)
    served = Served(
        running, f"https://127.0.0.1:{running.gateway.port}/v1", tokens, certs / "ca.pem", folder / "state.db"
    )
    try:
        yield served
    finally:
        if not served.stopped:
            running.stop()


def _wait(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _queued(lane: TextLane) -> int:
    """Requests waiting for one of the lane's workers."""
    return sum(not waiter.done() for waiter in lane._waiters)


def _completion(served: Served, **body: Any) -> httpx.Response:
    with served.http() as http:
        return http.post("/completions", json={"model": "smol", "temperature": 0, **body})


# -- a large body is parsed off the event loop ---------------------------------------------------


def test_a_large_text_body_is_parsed_in_the_tenants_codec_not_on_the_loop(served: Served) -> None:
    """An 8 MiB JSON body costs about a second per parse: on the event loop that second stalls every
    tenant. Above ``offload_bytes`` the text endpoints parse in the tenant's own codec process, as
    the KServe route does; the answers are the same."""
    state = served.running.gateway.state
    assert state is not None
    padding = "u" * (1024 * 1024)
    # a tenant with no text model at all: its body is parsed (for the model name) in its codec
    with served.http("globex") as http:
        refused = http.post("/completions", json={"model": "smol", "prompt": "x", "user": padding})
    assert refused.status_code == 404 and refused.json()["error"]["type"] == "not_found_error"
    assert state.codecs.pids("globex")
    done = _completion(served, prompt=COUNT, max_tokens=2, user=padding)
    assert done.status_code == 200 and done.json()["choices"][0]["finish_reason"] == "length"
    assert state.codecs.pids("acme")
    # the checks keep their order and texts when the body is parsed off the loop
    bad = _completion(served, prompt=COUNT, max_tokens=2001, user=padding)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"
    assert "above this model's limit of 2000" in bad.json()["error"]["message"]


# -- a stop string split across tokens -------------------------------------------------------------


def test_no_part_of_a_stop_string_split_across_tokens_is_returned(served: Served) -> None:
    """The job streamed each token as soon as it was decoded, so a stop string spanning tokens
    (", 5" = "," + " 5") had its first part sent before the match was found. The text returned is
    exactly the text before the stop string, streamed or not."""
    whole = _completion(served, prompt=COUNT, max_tokens=8).json()["choices"][0]["text"]
    assert ", 5" in whole and not whole.startswith(", 5")
    expected = whole[: whole.index(", 5")]
    stopped = _completion(served, prompt=COUNT, max_tokens=8, stop=[", 5"]).json()["choices"][0]
    assert (stopped["text"], stopped["finish_reason"]) == (expected, "stop")
    with served.http() as http:
        raw = http.post(
            "/completions",
            json={"model": "smol", "prompt": COUNT, "max_tokens": 8, "temperature": 0, "stop": [", 5"],
                  "stream": True},
        ).text  # fmt: skip
    events = [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    assert "".join(e["choices"][0]["text"] for e in events) == expected
    # a text that only looks like the start of a stop string is sent once it is clear it is not one
    held = _completion(served, prompt=COUNT, max_tokens=3, stop=[", 4, 9"]).json()["choices"][0]
    assert (held["text"], held["finish_reason"]) == (whole[: len(held["text"])], "length")
    assert held["text"].startswith(expected + ",")  # the "," held back went out with the last token


# -- an outcome that cannot be audited -----------------------------------------------------------------


def test_a_text_answer_whose_outcome_row_cannot_be_written_is_not_delivered(served: Served) -> None:
    """As on the KServe route: a non-streamed answer is delivered only once its outcome row is
    committed; otherwise the caller gets the 503 "audit log unavailable" (in the OpenAI shape)."""
    served.sql(
        "CREATE TEMP TRIGGER refuse BEFORE INSERT ON audit WHEN NEW.decision != 'started' "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    try:
        got = _completion(served, prompt=COUNT, max_tokens=2)
    finally:
        served.sql("DROP TRIGGER IF EXISTS temp.refuse")
    assert got.status_code == 503, got.text
    assert got.json()["error"]["message"] == "audit log unavailable; the request was not served"
    assert [r[:2] for r in served.rows(got.headers["x-request-id"])] == [("started", 0)]
    healed = _completion(served, prompt=COUNT, max_tokens=2)
    assert healed.status_code == 200
    assert [r[:2] for r in served.rows(healed.headers["x-request-id"])] == [("started", 0), ("allowed", 200)]


# -- a stream cut short: the tokens it got are recorded -----------------------------------------------


def test_a_stream_the_client_cuts_short_is_audited_with_the_tokens_generated(served: Served) -> None:
    """A client that reads a streamed answer and hangs up before its end got those tokens: the
    outcome row (the record a tenant is billed from) holds them, not 0 (the generation was
    released before it reported its counts)."""
    prompt = _completion(served, prompt=COUNT, max_tokens=1).json()["usage"]["prompt_tokens"]
    body = {"model": "smol", "prompt": COUNT, "max_tokens": 64, "temperature": 0, "stream": True}
    with served.http() as http, http.stream("POST", "/completions", json=body) as a:
        request_id = a.headers["x-request-id"]
        got = 0
        for line in a.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                got += 1
                if got == 5:
                    break
    _wait(lambda: len(served.rows(request_id)) == 2, 10, "no outcome row")
    decision, status, prompt_tokens, completion_tokens = served.rows(request_id)[1]
    assert (decision, status, prompt_tokens) == ("failed:disconnected", 499, prompt)
    assert 5 <= completion_tokens <= 64


# -- a worker that dies mid-generation; a client that leaves while queued ------------------------------


def test_a_worker_killed_mid_stream_and_a_client_that_leaves_while_queued(served: Served) -> None:
    """A's worker is killed mid-stream: A's stream ends with an error event (no [DONE]) and the lane
    starts a replacement. B's request waits for it, and B hangs up: B's request ends then (outcome
    row 499, its place in the queue given up), not when the worker is back (it would then run a
    generation for nobody). Every budget counter is free again afterwards."""
    lane = served.lane
    state = served.running.gateway.state
    assert state is not None
    with served.http() as a_http, a_http.stream("POST", "/completions", json=LONG) as a:
        assert a.status_code == 200
        lines = a.iter_lines()
        next(lines)
        (pid,) = lane.pids()
        os.kill(pid, signal.SIGKILL)
        rest = [line for line in lines if line]
    assert rest[-1].startswith('data: {"error"') and "data: [DONE]" not in rest
    assert json.loads(rest[-1][6:])["error"]["type"] == "server_error"
    answered: list[str] = []

    def b_call() -> None:
        quick = {"model": "smol", "prompt": COUNT, "max_tokens": 4, "stream": True}
        with (
            served.http(timeout=1) as b_http,
            contextlib.suppress(httpx.TimeoutException),
            b_http.stream("POST", "/completions", json=quick) as b,
        ):
            answered.append(b.headers["x-request-id"])

    thread = threading.Thread(target=b_call)
    thread.start()
    _wait(lambda: _queued(lane) == 1, 10, "B never queued")
    thread.join(10)  # B's client timed out and closed its connection
    assert not answered and lane.live_workers() == 0  # still no worker: B got no answer
    _wait(lambda: _queued(lane) == 0, 5, "B still waits for a worker after it left")

    def last_row() -> tuple[str, int]:
        with contextlib.closing(sqlite3.connect(served.state)) as db:
            row = db.execute("SELECT decision, status FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1])

    # the outcome row is committed by the audit writer's thread: it lands within a moment
    _wait(lambda: last_row() == ("failed:disconnected", 499), 10, f"B's outcome row: {last_row()}")
    _wait(lambda: lane.live_workers() == 1 and not lane.running, 600, "the worker was not replaced")
    assert lane.restarted == 1
    limiter: Any = state.limiter
    assert (limiter._in_flight["acme"], limiter._generations["acme"]) == (0, 0)
    done = _completion(served, prompt=COUNT, max_tokens=2)
    assert done.status_code == 200 and done.json()["choices"][0]["finish_reason"] == "length"


def test_a_text_workers_job_killed_while_idle_is_noticed_and_the_next_request_served(served: Served) -> None:
    """SIGKILL to the job inside the idle text worker's sandbox (the process holding the model; the
    launcher and the zygote live on): the lane stops counting that worker at once (readiness tells
    the truth), and the next request waits for its replacement and is served, not failed."""
    lane = served.lane
    _wait(lambda: lane.live_workers() == 1 and not lane.running, 600, "no idle worker")
    (outer,) = lane.pids()
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text(encoding="ascii", errors="replace")
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree, todo = [], [outer]
    while todo:
        found = children.get(todo.pop(0), [])
        tree += found
        todo += found
    assert len(tree) >= 2, tree  # zygote -> job
    restarted = lane.restarted
    os.kill(tree[-1], signal.SIGKILL)
    _wait(lambda: not lane.ready, 10, "the killed job went unnoticed")
    done = _completion(served, prompt=COUNT, max_tokens=2)
    assert done.status_code == 200, done.text
    assert lane.restarted == restarted + 1 and lane.ready


# -- shutdown with a stream open (stops the gateway: keep last) ------------------------------------------


def test_shutdown_with_a_stream_open_still_writes_its_outcome_row(served: Served) -> None:
    """A stream still open when the gateway stops (a long generation outlives the server's graceful
    period of 5 s) is cut; its request still gets its outcome row before the store closes."""
    http = served.http()
    opened = http.stream("POST", "/completions", json=LONG)
    a = opened.__enter__()
    try:
        assert a.status_code == 200
        request_id = a.headers["x-request-id"]
        next(a.iter_lines())
        served.stopped = True
        served.running.stop()
    finally:
        with contextlib.suppress(Exception):
            opened.__exit__(None, None, None)
        http.close()
    rows = served.rows(request_id)
    assert rows[0][:2] == ("started", 0)
    assert len(rows) == 2 and rows[1][:2] == ("failed:disconnected", 499), rows
