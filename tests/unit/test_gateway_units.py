"""Inner layers of the gateway on their own: the audit chain (known answers: each row's MAC covers
the previous row's MAC), the head file, API keys, and constant-time comparison of secrets and MACs
(checked by inspecting the code's AST and by a spy on ``hmac.compare_digest``).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import hmac
import inspect
import json
import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airlock.errors import UsageError
from airlock.gateway import _admission, _audit, _keys
from airlock.gateway._audit import GENESIS, AuditHead, chain_hash, read_head, verify_chain, write_head
from airlock.gateway._sqlite_store import SqliteStore
from airlock.gateway._store import AuditEntry, AuditRow
from airlock.sandbox import _gate

KEY = b"k" * 32
FIELDS = dict(
    seq=1,
    time=1700000000.25,
    tenant="acme",
    key_id="0123456789abcdef",
    model="m",
    model_digest="sha256:" + "ab" * 32,
    request_id="r1",
    decision="ok",
    status=200,
)
#: chain_hash(KEY, GENESIS, **FIELDS), computed once from the documented construction below
KNOWN = "2455d444569b4c3285a75d3b4658be2ec4a3a71274120d206748a5e994e4f43a"


def _reference(key: bytes, prev: str, f: dict[str, Any]) -> str:
    body = json.dumps(
        [f["seq"], repr(f["time"]), f["tenant"], f["key_id"], f["model"], f["model_digest"],
         f["request_id"], f["decision"], f["status"]],
        separators=(",", ":"),
    )  # fmt: skip
    return hmac.new(key, prev.encode() + b"\n" + body.encode(), hashlib.sha256).hexdigest()


def test_row_hash_known_answer() -> None:
    got = chain_hash(KEY, GENESIS, **FIELDS)  # type: ignore[arg-type]
    assert got == _reference(KEY, GENESIS, FIELDS)
    assert got == KNOWN
    assert len(got) == 64


def test_row_hash_covers_the_previous_hash() -> None:
    base = chain_hash(KEY, GENESIS, **FIELDS)  # type: ignore[arg-type]
    other_prev = "0" * 63 + "1"
    assert chain_hash(KEY, other_prev, **FIELDS) != base  # type: ignore[arg-type]
    assert chain_hash(KEY, other_prev, **FIELDS) == _reference(KEY, other_prev, FIELDS)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", list(FIELDS))
def test_row_hash_covers_every_field(field: str) -> None:
    base = chain_hash(KEY, GENESIS, **FIELDS)  # type: ignore[arg-type]
    value = FIELDS[field]
    changed = {**FIELDS, field: value + 1 if isinstance(value, int | float) else str(value) + "x"}
    assert chain_hash(KEY, GENESIS, **changed) != base  # type: ignore[arg-type]


def test_row_hash_depends_on_the_key() -> None:
    assert chain_hash(b"j" * 32, GENESIS, **FIELDS) != chain_hash(KEY, GENESIS, **FIELDS)  # type: ignore[arg-type]


def _chain(n: int, key: bytes = KEY) -> list[AuditRow]:
    rows: list[AuditRow] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        f = {**FIELDS, "seq": seq, "request_id": f"r{seq}"}
        row_hash = chain_hash(key, prev, **f)  # type: ignore[arg-type]
        rows.append(AuditRow(**f, prev_hash=prev, row_hash=row_hash))  # type: ignore[arg-type]
        prev = row_hash
    return rows


def test_intact_chain_verifies() -> None:
    rows = _chain(4)
    report = verify_chain(
        rows, KEY, expect_head=rows[-1].row_hash, recorded=AuditHead(4, rows[-1].row_hash, 0.0)
    )
    assert (report.ok, report.rows, report.head, report.problems) == (True, 4, rows[-1].row_hash, ())


def test_empty_chain_head_is_genesis() -> None:
    report = verify_chain([], KEY)
    assert (report.ok, report.rows, report.head) == (True, 0, GENESIS)


def test_edited_row_is_named() -> None:
    rows = _chain(3)
    rows[1] = dataclasses.replace(rows[1], status=500)
    report = verify_chain(rows, KEY)
    assert report.problems == ("row seq 2: content does not match its MAC (the row was edited)",)


def test_rewritten_row_with_a_fresh_mac_breaks_the_next_link() -> None:
    rows = _chain(3)
    edited = dataclasses.replace(rows[1], status=500)
    f = {k: getattr(edited, k) for k in FIELDS}
    rows[1] = dataclasses.replace(edited, row_hash=chain_hash(KEY, edited.prev_hash, **f))
    report = verify_chain(rows, KEY)
    assert report.problems == ("row seq 3: prev_hash does not match the previous row's hash",)


def test_removed_row_is_named() -> None:
    rows = _chain(4)
    del rows[1]
    problems = verify_chain(rows, KEY).problems
    assert "row seq 3: expected seq 2 (a row was removed or reordered)" in problems
    assert "row seq 3: prev_hash does not match the previous row's hash" in problems


def test_wrong_key_fails_every_row() -> None:
    problems = verify_chain(_chain(2), b"j" * 32).problems
    assert len(problems) == 2
    assert all("does not match its MAC" in p for p in problems)


def test_truncated_tail_is_caught_by_the_expected_head_and_the_recorded_head() -> None:
    rows = _chain(4)
    report = verify_chain(rows[:3], KEY, expect_head=rows[3].row_hash)
    assert report.problems == (
        f"chain head is {rows[2].row_hash}, expected {rows[3].row_hash} (rows removed at the end, or edited)",
    )
    report = verify_chain(rows[:3], KEY, recorded=AuditHead(4, rows[3].row_hash, 0.0))
    (problem,) = report.problems
    assert problem.startswith(
        "the chain ends at seq 3 but the head recorded at 1970-01-01T00:00:00Z is seq 4"
    )


def test_recorded_head_that_differs_is_named() -> None:
    rows = _chain(3)
    report = verify_chain(rows, KEY, recorded=AuditHead(2, "f" * 64, 0.0))
    assert report.problems == ("row seq 2: differs from the recorded head (rows rewritten)",)


def test_head_file_round_trip_and_forgery(tmp_path: Path) -> None:
    path = tmp_path / "audit.head"
    assert read_head(path, KEY) is None
    head = AuditHead(7, "ab" * 32, 1700000000.5)
    write_head(path, KEY, head)
    assert read_head(path, KEY) == head
    with pytest.raises(UsageError, match="does not carry this key's MAC"):
        read_head(path, b"j" * 32)
    data = json.loads(path.read_text())
    data["seq"] = 8
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="does not carry this key's MAC"):
        read_head(path, KEY)
    path.write_text("x" * 5000)
    with pytest.raises(UsageError, match="is not a head record"):
        read_head(path, KEY)


# -- API keys ----------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "gw.db")
    store.add_tenant("acme", None)
    return store


def test_key_round_trip_and_near_misses(store: SqliteStore) -> None:
    record, token = _keys.create_key(store, "acme", ("m",))
    auth = _keys.authenticate(store, f"Bearer {token}")
    assert auth == _keys.Authenticated("acme", record.key_id, ("m",))
    assert _keys.authenticate(store, f"bearer {token}") == auth
    secret = token[21:]  # "alk_" + 16 hex digits + "_": the secret itself may contain "_"
    assert len(secret) == 43
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for header in [
        None,
        token,  # no scheme
        f"Basic {token}",
        f"Bearer {flipped}",  # last character differs: the whole value is compared
        f"Bearer {token[:-1]}",
        f"Bearer {token}x",
        f"Bearer alk_{'0' * 16}_{secret}",  # unknown key id
    ]:
        assert _keys.authenticate(store, header) is None, header
    store.revoke_key(record.key_id, 1.0)
    assert _keys.authenticate(store, f"Bearer {token}") is None


def test_authenticate_compares_in_constant_time(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _record, token = _keys.create_key(store, "acme")
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert _keys.authenticate(store, f"Bearer {token}") is not None
    assert calls == [(_keys.hash_token(token), _keys.hash_token(token))]
    calls.clear()
    # an unknown key id does the same work, against a dummy hash
    assert _keys.authenticate(store, f"Bearer alk_{'0' * 16}_{token[21:]}") is None
    assert len(calls) == 1


#: (function, the name holding a secret or MAC): each must reach hmac.compare_digest and never ==/!=
CONSTANT_TIME: list[tuple[Callable[..., Any], str]] = [
    (_keys.authenticate, "given"),
    (_audit.verify_chain, "recomputed"),
    (_audit.read_head, "mac"),
    (_gate.gate, "expect"),
]


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


@pytest.mark.parametrize(("function", "name"), CONSTANT_TIME, ids=lambda v: getattr(v, "__qualname__", v))
def test_secrets_are_compared_with_compare_digest(function: Callable[..., Any], name: str) -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    digest_calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "hmac"
    ]
    assert any(name in _names(arg) for call in digest_calls for arg in call.args), (function, name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            operands = [node.left, *node.comparators]
            assert not any(isinstance(o, ast.Name) and o.id == name for o in operands), ast.unparse(node)


def test_admission_digest_compared_with_compare_digest() -> None:
    source = inspect.getsource(_admission)
    tree = ast.parse(source)
    calls = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
    ]
    assert "hmac.compare_digest(model.expect, digest)" in calls
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            assert "model.expect" not in ast.unparse(node), ast.unparse(node)


# -- the audit key file -------------------------------------------------------------------------------


def test_load_key_creates_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    key = _audit.load_key(path, create=True)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text(encoding="ascii")
    assert text == key.hex() + "\n"
    assert _audit.load_key(path, create=True) == key  # never overwritten
    assert _audit.load_key(path, create=False) == key
    assert _audit.load_key(tmp_path / "other.key", create=True) != key


def test_load_key_missing_without_create(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    with pytest.raises(
        UsageError, match=r"^audit: cannot read the key file .*audit\.key: No such file or directory$"
    ):
        _audit.load_key(path, create=False)
    assert not path.exists()


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("ab" * 32, True),
        ("ab" * 32 + "\n", True),
        ("  " + "ab" * 32 + "  \n", True),
        ("ab" * 31 + "a", False),  # 63 digits
        ("ab" * 32 + "a", False),  # 65 digits
        ("AB" * 32, False),  # upper case
        ("ag" * 32, False),
        ("ab" * 64, False),  # 128 digits: more than is read
    ],
)
def test_load_key_format(tmp_path: Path, text: str, ok: bool) -> None:
    path = tmp_path / "audit.key"
    path.write_text(text, encoding="ascii")
    if ok:
        assert _audit.load_key(path, create=False) == bytes.fromhex(text.strip())
    else:
        with pytest.raises(UsageError, match=r"must hold 64 lower-case hex digits$"):
            _audit.load_key(path, create=False)


def test_load_key_reads_a_bounded_amount(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(("ab" * 32).encode() + b" " * 64 + b"junk")  # junk past 128 bytes is not read
    assert _audit.load_key(path, create=False) == bytes.fromhex("ab" * 32)
    path.write_bytes(("ab" * 32).encode() + b" " * 63 + b"junk")
    with pytest.raises(UsageError):
        _audit.load_key(path, create=False)


def test_bearer_token_with_trailing_space(store: SqliteStore) -> None:
    record, token = _keys.create_key(store, "acme")
    assert _keys.authenticate(store, f"Bearer {token} ") == _keys.Authenticated("acme", record.key_id, ())


def test_create_key_for_an_unknown_tenant(store: SqliteStore) -> None:
    with pytest.raises(UsageError, match=r"^no tenant named 'nope' \(create it with: airlock tenant add\)$"):
        _keys.create_key(store, "nope")


def test_row_hash_of_non_ascii_fields_is_escaped() -> None:
    fields = {**FIELDS, "tenant": "café", "model": "模型"}
    assert chain_hash(KEY, GENESIS, **fields) == _reference(KEY, GENESIS, fields)  # type: ignore[arg-type]


def test_head_file_is_compact_private_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "audit.head"
    head = AuditHead(3, "cd" * 32, 1700000001.0)
    write_head(path, KEY, AuditHead(2, "ab" * 32, 0.0))
    assert path.stat().st_mode & 0o777 == 0o600
    stale = tmp_path / "audit.head.tmp"
    stale.write_text("x" * 10_000)  # a temporary left by a crash: truncated, then renamed over
    write_head(path, KEY, head)
    assert not stale.exists()
    mac = _audit._head_mac(KEY, 3, "cd" * 32)
    expected = {"seq": 3, "head": "cd" * 32, "time": 1700000001.0, "mac": mac}
    assert path.read_text(encoding="ascii") == json.dumps(expected, separators=(",", ":"))
    assert read_head(path, KEY) == head


@pytest.mark.parametrize(("size", "ok"), [(4095, True), (4096, True), (4097, False)])
def test_head_file_size_at_n_minus_1_n_n_plus_1(tmp_path: Path, size: int, ok: bool) -> None:
    path = tmp_path / "audit.head"
    write_head(path, KEY, AuditHead(1, "ab" * 32, 0.0))
    raw = path.read_bytes()
    path.write_bytes(raw + b" " * (size - len(raw)))
    if ok:
        assert read_head(path, KEY) == AuditHead(1, "ab" * 32, 0.0)
    else:
        with pytest.raises(UsageError, match="is not a head record"):
            read_head(path, KEY)


def test_unreadable_head_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^audit: cannot read the head file .*: Is a directory$"):
        read_head(tmp_path, KEY)


def test_truncated_tail_message_ends_with_the_cause() -> None:
    rows = _chain(2)
    (problem,) = verify_chain(rows[:1], KEY, recorded=AuditHead(2, rows[1].row_hash, 0.0)).problems
    assert problem.endswith("is seq 2 (rows removed at the end)")


@pytest.mark.parametrize("raw", [b"\xff" * 64, b"X" * 64, b"\xc3\xa9" * 32])
def test_load_key_garbage_is_a_usage_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(raw)
    with pytest.raises(UsageError, match=r"must hold 64 lower-case hex digits$"):
        _audit.load_key(path, create=False)


def test_head_file_ignores_a_leftover_temporary_file_and_links(tmp_path: Path) -> None:
    """A crash between write and rename leaves ``.tmp`` behind: its mode (0644 here) must not
    become the head file's, and a link planted under that name must not be followed."""
    path = tmp_path / "audit.head"
    leftover = tmp_path / "audit.head.tmp"
    leftover.write_text("stale")
    leftover.chmod(0o644)
    head = AuditHead(3, "cd" * 32, 0.0)
    write_head(path, KEY, head)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_head(path, KEY) == head
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    leftover.symlink_to(elsewhere)
    write_head(path, KEY, head)
    assert elsewhere.read_text() == "untouched"
    assert not leftover.exists() and not leftover.is_symlink()
    assert read_head(path, KEY) == head


# -- text requests: token counts in the MAC ------------------------------------------------------

TKEY = b"k" * 32
TROW: dict[str, Any] = dict(
    seq=1, time=1.5, tenant="acme", key_id="k1", model="m", model_digest="d", request_id="r", decision="allowed",
    status=200,
)  # fmt: skip


def test_rows_without_tokens_keep_the_original_mac() -> None:
    body = json.dumps([1, "1.5", "acme", "k1", "m", "d", "r", "allowed", 200], separators=(",", ":"))
    original = hmac.new(TKEY, GENESIS.encode() + b"\n" + body.encode(), hashlib.sha256).hexdigest()
    assert chain_hash(TKEY, GENESIS, **TROW) == chain_hash(TKEY, GENESIS, **TROW, tokens=(0, 0)) == original


@pytest.mark.parametrize("tokens", [(1, 0), (0, 1), (12, 34)])
def test_token_counts_are_covered_by_the_mac(tokens: tuple[int, int]) -> None:
    body = json.dumps([1, "1.5", "acme", "k1", "m", "d", "r", "allowed", 200, *tokens], separators=(",", ":"))
    expected = hmac.new(TKEY, GENESIS.encode() + b"\n" + body.encode(), hashlib.sha256).hexdigest()
    assert chain_hash(TKEY, GENESIS, **TROW, tokens=tokens) == expected
    assert expected != chain_hash(TKEY, GENESIS, **TROW)


def test_editing_a_rows_token_counts_is_detected(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", audit_key=TKEY)
    store.append_audit_many([AuditEntry(1.0, "acme", "k", "m", "d", "r1", "allowed", 200, 12, 3),
                             AuditEntry(2.0, "acme", "k", "m", "d", "r2", "allowed", 200)])  # fmt: skip
    assert verify_chain(store.audit_rows(), TKEY).ok
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE audit SET completion_tokens = 2 WHERE seq = 1")
    store = SqliteStore(tmp_path / "s.db", audit_key=TKEY)
    report = verify_chain(store.audit_rows(), TKEY)
    assert [p for p in report.problems if "seq 1" in p and "MAC" in p]
    store.close()


@pytest.mark.parametrize(
    ("seq", "head", "reached"),
    [(0, GENESIS, True), (0, "f" * 64, False), (1, GENESIS, False), (1, "f" * 64, False)],
)
def test_a_recorded_head_of_seq_0_is_reached_only_at_genesis(seq: int, head: str, reached: bool) -> None:
    """An empty log meets a recorded head only when that head is the genesis (seq 0, GENESIS)."""
    report = verify_chain([], KEY, recorded=AuditHead(seq, head, 0.0))
    assert report.ok is reached, report.problems
