"""The gateway's text guard on its own: the ``[models.X.guard]`` config, canary matching, the
per-request checks (pseudonyms across messages, size limits before work), the audit column.

(Over real HTTP against a real ``airlock serve`` with the SmolLM2 model: tests/gateway/test_guard_mw.py.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from airlock.errors import UsageError
from airlock.gateway._audit import GENESIS, chain_hash, verify_chain
from airlock.gateway._config import ServerConfig, load_config
from airlock.gateway._guard_policy import MIN_CANARY, GuardPolicy, canonical, guard_policy
from airlock.gateway._sqlite_store import SqliteStore
from airlock.gateway._store import AuditEntry
from airlock.gateway._text_guard import (
    GuardTrail,
    _oversized,
    check_input,
    check_output,
    on_loop,
    warm_guards,
)
from airlock.guard import Action, SizeLimits

KEY = b"g" * 32
ROW: dict[str, Any] = dict(
    seq=1, time=1.5, tenant="acme", key_id="k1", model="m", model_digest="d", request_id="r", decision="allowed",
    status=200,
)  # fmt: skip


def _load(tmp_path: Path, guard: str) -> Any:
    path = tmp_path / "g.toml"
    path.write_text(
        f'[server]\nstate = "s.db"\n[models.t]\npath = "t.gguf"\ntenants = ["a"]\n{guard}', "utf-8"
    )
    return load_config(path).model("t")


# -- config -----------------------------------------------------------------------------------------


def test_no_guard_table_means_no_guard(tmp_path: Path) -> None:
    assert _load(tmp_path, "").guard is None


def test_both_directions_use_the_guard_table_vocabulary(tmp_path: Path) -> None:
    (tmp_path / "canaries.txt").write_text("# a comment\n\nzq-file-secret-01\n", "utf-8")
    model = _load(tmp_path, """
[models.t.guard.input]
pii = "block"
links = "redact"
max_chars = 500
[models.t.guard.output]
markup = "flag"
canaries = ["ZQ-list-secret-02"]
canary_file = "canaries.txt"
""")  # fmt: skip
    policy: GuardPolicy = model.guard
    assert policy.inputs is not None and policy.inputs.pii is not None
    assert policy.inputs.pii.action is Action.BLOCK and policy.inputs.limits.max_chars == 500
    assert policy.inputs.filter is not None and policy.inputs.filter.links is Action.REDACT
    assert policy.outputs is not None and policy.outputs.filter is not None
    assert policy.outputs.filter.markup is Action.FLAG
    assert policy.canaries == ("zqlistsecret02", "zqfilesecret01")
    assert policy.checks_output and "secret" not in repr(policy)


def test_an_output_table_of_canaries_only_checks_canaries(tmp_path: Path) -> None:
    policy = _load(tmp_path, '[models.t.guard.output]\ncanaries = ["zq-only-canary"]\n').guard
    assert policy.inputs is None and policy.outputs is None and policy.canaries == ("zqonlycanary",)


@pytest.mark.parametrize(
    ("guard", "message"),
    [
        ("[models.t.guard]\npii = 'redact'\n", "unknown key(s) in [models.t.guard]: pii"),
        ("[models.t.guard.inputs]\n", "unknown key(s) in [models.t.guard]: inputs"),
        ("[models.t.guard.input]\npii = 'remove'\n", "models.t.guard.input.pii must be block, redact, flag or off"),
        ("[models.t.guard.input]\npi = 'redact'\n", "unknown key(s) ['pi'] in [models.t.guard.input]"),
        ("[models.t.guard.output]\ncanary = ['zq-canary-1234']\n", "unknown key(s) ['canary'] in [models.t.guard.output]"),
        ("[models.t.guard.output]\npseudonymize = true\n", "models.t.guard.output.pseudonymize"),
        ("[models.t.guard.output]\ncanaries = 'zq-canary-1234'\n", "models.t.guard.output.canaries must be a list"),
        ("[models.t.guard.output]\ncanary_file = 'missing.txt'\n", "models.t.guard.output.canary_file: cannot read"),
        ("[models.t.guard]\n", "needs an [models.t.guard.input] or [models.t.guard.output] table"),
        ("guard = 3\n", "models.t.guard has the wrong type"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(tmp_path: Path, guard: str, message: str) -> None:
    with pytest.raises(UsageError) as error:
        _load(tmp_path, guard)
    assert message in str(error.value)


@pytest.mark.parametrize("length", [MIN_CANARY - 1, MIN_CANARY])
def test_a_canary_shorter_than_the_minimum_is_refused_without_echoing_it(length: int) -> None:
    canary = "Q" * length
    if length < MIN_CANARY:
        with pytest.raises(UsageError) as error:
            guard_policy(Path("/"), "t", {"output": {"canaries": [canary]}})
        assert canary not in str(error.value) and "canary #1" in str(error.value)
    else:
        assert guard_policy(Path("/"), "t", {"output": {"canaries": [canary]}}).canaries == ("q" * length,)


# -- canaries -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "the key is zq-canary-7731.",
        "THE KEY IS ZQ-CANARY-7731",
        "Ｚｑ－ｃａｎａｒｙ－７７３１",  # fullwidth (NFKC)
        "zq-\u200bcan\u00adary-\u202e7731",  # zero-width space, soft hyphen, bidi override
        "zq-c\u0430n\u0430ry-7731",  # Cyrillic a
        "z q - c a n a r y - 7 7 3 1",  # spaced out
        "zq-canary-\U000e0041" + "7731",  # a tag character inside
        "zq_canary_7731",  # other separators: a canary is its letters and digits
        "zq\u2013canary\u22127731",  # an en dash, a minus sign
        "zq-ca\u0301n\u00e4ry-7731",  # accents: a combining mark, a precomposed letter
        "zq-<b></b>canary-<!-- x -->7731",  # markup a browser drops
        "zq&#45;canary&#x2d;77&#51;1",  # HTML entities
        "zq-canary-77\u04171",  # Cyrillic Ze imitating the digit 3
    ],
)
def test_canary_spellings_are_blocked(answer: str) -> None:
    outcome = check_output("t/output", None, (canonical("zq-canary-7731"),), answer)
    assert outcome.decision == "blocked" and outcome.texts is None and outcome.rules == {"canary.leak": 1}


@pytest.mark.parametrize("answer", ["zq-canary-773", "zq-canary 7732", "a different answer"])
def test_near_misses_of_a_canary_pass(answer: str) -> None:
    outcome = check_output("t/output", None, (canonical("zq-canary-7731"),), answer)
    assert outcome.decision == "allowed" and outcome.texts == [answer]


# -- inputs -------------------------------------------------------------------------------------------


def test_pseudonyms_are_one_mapping_across_messages() -> None:
    policy = guard_policy(
        Path("/"), "t", {"input": {"pseudonymize": True, "pii_entities": ["EMAIL_ADDRESS"]}}
    )
    assert policy.inputs is not None
    outcome = check_input(
        "t/input", policy.inputs, ["to a@example.com, b@example.com", "c@example.com and b@example.com"]
    )
    assert outcome.texts == [
        "to <EMAIL_ADDRESS_1>, <EMAIL_ADDRESS_2>",
        "<EMAIL_ADDRESS_3> and <EMAIL_ADDRESS_2>",
    ]
    assert outcome.pseudonyms == {
        "<EMAIL_ADDRESS_1>": "a@example.com", "<EMAIL_ADDRESS_2>": "b@example.com", "<EMAIL_ADDRESS_3>": "c@example.com",
    }  # fmt: skip
    assert "example" not in repr(outcome)


@pytest.mark.parametrize(("chars", "blocked"), [(99, False), (100, False), (101, True)])
def test_size_limits_hold_for_the_texts_together(chars: int, blocked: bool) -> None:
    limits = SizeLimits(max_chars=100)
    texts = ["a" * (chars // 2), "b" * (chars - chars // 2)]
    refused = _oversized(texts, limits)
    assert (refused is not None) == blocked
    if refused is not None:
        assert refused.rules == {"size.chars": 1} and refused.texts is None


def test_a_lone_surrogate_is_refused_before_work() -> None:
    refused = _oversized(["fine", "bad \ud800"], SizeLimits())
    assert refused is not None and refused.rules == {"size.utf8": 1}


# -- audit ----------------------------------------------------------------------------------------------


def test_guard_decisions_are_covered_by_the_mac() -> None:
    guard = GuardTrail({"input": {"decision": "redacted", "rules": {"pii.email_address": 2}}}).audit()
    assert guard == '{"input":{"decision":"redacted","rules":{"pii.email_address":2}}}'
    body = json.dumps(
        [1, "1.5", "acme", "k1", "m", "d", "r", "allowed", 200, 0, 0, guard], separators=(",", ":")
    )
    expected = hmac.new(KEY, GENESIS.encode() + b"\n" + body.encode(), hashlib.sha256).hexdigest()
    assert chain_hash(KEY, GENESIS, **ROW, guard=guard) == expected
    assert expected != chain_hash(KEY, GENESIS, **ROW)
    assert GuardTrail().audit() == ""


def test_editing_a_rows_guard_decision_is_detected(tmp_path: Path) -> None:
    guard = GuardTrail({"output": {"decision": "blocked", "rules": {"canary.leak": 1}}}).audit()
    store = SqliteStore(tmp_path / "s.db", audit_key=KEY)
    store.append_audit_many(
        [AuditEntry(1.0, "acme", "k", "m", "d", "r1", "denied:guard-output", 502, 9, 3, guard)]
    )
    assert verify_chain(store.audit_rows(), KEY).ok
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE audit SET guard = replace(guard, 'blocked', 'allowed')")
    store = SqliteStore(tmp_path / "s.db", audit_key=KEY)
    report = verify_chain(store.audit_rows(), KEY)
    store.close()
    assert not report.ok and "row seq 1: content does not match its MAC" in report.problems[0]


def test_a_state_file_without_the_guard_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SqliteStore(path, audit_key=KEY)
    store.append_audit_many([AuditEntry(1.0, "acme", "k", "m", "d", "r1", "allowed", 200, 4, 5)])
    store.close()
    with sqlite3.connect(path) as db:  # the schema before the guard column
        db.execute("ALTER TABLE audit DROP COLUMN guard")
    store = SqliteStore(path, audit_key=KEY)
    store.append_audit_many(
        [AuditEntry(2.0, "acme", "k", "m", "d", "r2", "allowed", 200, 1, 1, '{"input":{}}')]
    )
    rows = list(store.audit_rows())
    store.close()
    assert [r.guard for r in rows] == ["", '{"input":{}}'] and verify_chain(rows, KEY).ok


def test_the_example_in_the_docs_is_a_valid_policy(tmp_path: Path) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "serve.md").read_text("utf-8")
    section = docs[docs.index("## Guarding text") :]
    example = section[section.index("```toml\n") + 8 : section.index("```\n", section.index("```toml"))]
    (tmp_path / "canaries.txt").write_text("zq-from-the-file-1\n", "utf-8")
    model = _load(tmp_path, example.replace("models.chat.", "models.t."))
    policy: GuardPolicy = model.guard
    assert policy.pseudonymize and policy.outputs is not None and len(policy.canaries) == 2
    assert policy.inputs is not None and policy.inputs.injection is not None
    warm_guards("t", policy)  # what the gateway's start does: the guards build


# -- what the event loop may be given ----------------------------------------------------------------

#: content the pipeline works hardest on, per character (measured: 10-40 us a character, against
#: ~0.2-0.6 us for plain English)
_SLOW = {
    "lookalikes": "аоеі",
    "phones": "+1 (555) 555-5555 ",
    "addresses": "1.1.1.1 ",
    "ibans": "DE89 3704 0044 0532 0130 00 ",
    "brackets": "![",
}


def _largest_on_loop(offload: int, base: str, count: int) -> list[str]:
    """``count`` equal texts of ``base`` repeated, as long as the gateway would still check them on
    the event loop."""
    size = 0
    while on_loop(offload, [(base * (size + 2))[: size + 1]] * count):
        size += 1
    return [(base * (size + 1))[:size]] * count


@pytest.mark.parametrize("kind", sorted(_SLOW))
@pytest.mark.parametrize("count", [1, 3])
def test_what_runs_on_the_event_loop_is_cheap_whatever_the_content(kind: str, count: int) -> None:
    """The loop checks a request's texts itself only while they are cheap; "cheap" must hold for
    the content an attacker picks, not typical text: the most the loop takes, made of the slowest
    content known, through the fullest policy, stays near the ~1 ms JSON parsing is allowed
    (it took 12-37 ms when the bound assumed plain text's cost a character)."""
    policy = guard_policy(
        Path("/"),
        "t",
        {"input": {"injection": "flag", "pseudonymize": True, "images": "block", "links": "flag"}},
    )
    assert policy.inputs is not None
    texts = _largest_on_loop(ServerConfig().offload_bytes, _SLOW[kind], count)
    assert on_loop(ServerConfig().offload_bytes, texts)
    check_input("t/input", policy.inputs, texts)  # warm (first use loads tables)
    best = min(_timed(lambda: check_input("t/input", policy.inputs, texts)) for _ in range(5))
    assert best < 0.005, f"{sum(map(len, texts))} characters of {kind} took {best * 1e3:.1f} ms on the loop"


def _timed(step: Any) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started
