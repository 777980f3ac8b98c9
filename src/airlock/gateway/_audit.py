"""The audit chain: each row's MAC covers its fields and the previous row's MAC.

``row_hash = HMAC-SHA256(key, prev_hash || canonical JSON of (seq, time, tenant, key_id, model,
model_digest, request_id, decision, status[, prompt_tokens, completion_tokens[, guard]]))`` (the
token counts of a text request, when not both zero or when the row has guard decisions; the guard
decisions of a guarded text model, when any). The key lives in a file named by the config
(``[audit] key_file``), never in the database: someone who can write the database but not read the
key cannot rewrite rows and recompute the chain. Editing a row breaks its MAC; removing or
reordering rows breaks the ``seq`` run and the ``prev_hash`` link.

Removing rows *at the end* leaves a shorter valid chain. The gateway therefore writes the head
(seq and MAC, itself MAC'd) to a second place every few seconds and at shutdown: a head file
(``[audit] head_file``) and the log. ``verify_chain`` given that head reports a chain that no longer
reaches it: rows cut after a crash are detected without any operator input.

The recorded head is an anchor: it only ever moves forward along the chain it names
(:func:`advance`): the row at the recorded seq must still carry the recorded MAC and every row
after it must link to it. A log that ends before the anchor, or whose rows there were replaced
(cut, then refilled by new traffic), never gets a new head: the head file keeps the evidence.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from airlock.errors import UsageError
from airlock.gateway._store import AuditRow

__all__ = [
    "GENESIS",
    "AuditHead",
    "AuditReport",
    "advance",
    "carries_mac",
    "chain_hash",
    "load_key",
    "read_head",
    "verify_chain",
    "write_head",
]

GENESIS: Final = "0" * 64
_KEY_BYTES: Final = 32
#: the canonical JSON of a row's fields (one encoder: json.dumps with options builds one per call)
_CANONICAL: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
#: a head file is a few hundred bytes; anything bigger is not one
_MAX_HEAD_FILE: Final = 4096


def chain_hash(
    key: bytes,
    prev_hash: str,
    seq: int,
    time: float,
    tenant: str,
    key_id: str,
    model: str,
    model_digest: str,
    request_id: str,
    decision: str,
    status: int,
    tokens: tuple[int, int] = (0, 0),
    guard: str = "",
) -> str:
    fields: list[object] = [seq, repr(time), tenant, key_id, model, model_digest, request_id, decision, status]  # fmt: skip
    if tokens != (0, 0) or guard:
        # text requests: prompt and completion tokens. Rows without tokens keep the original nine
        # fields (chains written before are still valid); a row with tokens has eleven, so no row
        # can have its counts removed or changed without a new MAC
        fields.extend(tokens)
    if guard:
        # a guarded text model's decisions: twelve fields (rows without keep their nine or eleven)
        fields.append(guard)
    body = _CANONICAL.encode(fields)
    message = prev_hash.encode("ascii") + b"\n" + body.encode("ascii")
    # one-shot HMAC (OpenSSL in one call): the same MAC as hmac.new(...).hexdigest()
    return hmac.digest(key, message, "sha256").hex()


def load_key(path: Path, *, create: bool) -> bytes:
    """The audit HMAC key from ``path`` (64 hex digits); with ``create``, make one (mode 0600) if missing."""
    if create:
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, (secrets.token_hex(_KEY_BYTES) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
    try:
        with path.open("rb") as handle:
            raw = handle.read(4 * _KEY_BYTES)
    except OSError as exc:
        raise UsageError(f"audit: cannot read the key file {path}: {exc.strerror}") from exc
    text = raw.decode("ascii", "replace").strip()
    if len(text) != 2 * _KEY_BYTES or any(c not in "0123456789abcdef" for c in text):
        raise UsageError(f"audit: key file {path} must hold {2 * _KEY_BYTES} lower-case hex digits")
    return bytes.fromhex(text)


@dataclass(frozen=True)
class AuditHead:
    seq: int
    head: str
    time: float


def _head_mac(key: bytes, seq: int, head: str) -> str:
    return hmac.new(key, f"head\n{seq}\n{head}".encode("ascii"), hashlib.sha256).hexdigest()


def write_head(path: Path, key: bytes, head: AuditHead) -> None:
    """Replace the head file atomically (write, fsync, rename): a crash leaves the old or the new one."""
    data = {"seq": head.seq, "head": head.head, "time": head.time, "mac": _head_mac(key, head.seq, head.head)}
    temporary = path.with_name(path.name + ".tmp")
    # A leftover temporary file (a crash between write and rename) or a link planted there must
    # not lend its mode or its target: remove it, then create a fresh 0600 file, never following.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data, separators=(",", ":")).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def read_head(path: Path, key: bytes) -> AuditHead | None:
    """The recorded head, or None when no head was written yet; a forged or garbled file is an error."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_HEAD_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"audit: cannot read the head file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw) if len(raw) <= _MAX_HEAD_FILE else None
    except ValueError:
        data = None
    if (
        not isinstance(data, dict)
        or not isinstance(seq := data.get("seq"), int)
        or not isinstance(head := data.get("head"), str)
        or not isinstance(mac := data.get("mac"), str)
        or not isinstance(when := data.get("time"), int | float)
    ):
        raise UsageError(f"audit: head file {path} is not a head record")
    if not hmac.compare_digest(mac, _head_mac(key, seq, head)):
        raise UsageError(f"audit: head file {path} does not carry this key's MAC (forged or another key)")
    return AuditHead(seq, head, float(when))


@dataclass(frozen=True)
class AuditReport:
    rows: int
    head: str
    #: one line per broken link; empty when the chain is intact
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(
    rows: Iterable[AuditRow],
    key: bytes,
    *,
    expect_head: str | None = None,
    recorded: AuditHead | None = None,
) -> AuditReport:
    """Recompute the chain; report every row whose position, link or MAC does not check out.

    ``recorded`` (the head file) must be reached: its seq must exist with exactly its MAC.
    """
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    count = 0
    # a head of seq 0 (written when the gateway starts on an empty log) is the genesis: always reached
    reached = recorded is None or (recorded.seq == 0 and recorded.head == GENESIS)
    for row in rows:
        count += 1
        if row.seq != expected_seq:
            problems.append(
                f"row seq {row.seq}: expected seq {expected_seq} (a row was removed or reordered)"
            )
        if row.prev_hash != prev:
            problems.append(f"row seq {row.seq}: prev_hash does not match the previous row's hash")
        recomputed = chain_hash(
            key, row.prev_hash, row.seq, row.time, row.tenant, row.key_id, row.model,
            row.model_digest, row.request_id, row.decision, row.status,
            (row.prompt_tokens, row.completion_tokens), row.guard,
        )  # fmt: skip
        if not hmac.compare_digest(recomputed, row.row_hash):
            problems.append(f"row seq {row.seq}: content does not match its MAC (the row was edited)")
        if recorded is not None and row.seq == recorded.seq:
            reached = True
            if row.row_hash != recorded.head:
                problems.append(f"row seq {row.seq}: differs from the recorded head (rows rewritten)")
        prev = row.row_hash
        expected_seq = row.seq + 1
    if not reached and recorded is not None:
        problems.append(
            f"the chain ends at seq {expected_seq - 1} but the head recorded at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(recorded.time))} is seq {recorded.seq} "
            "(rows removed at the end)"
        )
    if expect_head is not None and expect_head != prev:
        problems.append(f"chain head is {prev}, expected {expect_head} (rows removed at the end, or edited)")
    return AuditReport(count, prev, tuple(problems))


def _row_mac(key: bytes, row: AuditRow) -> str:
    return chain_hash(
        key, row.prev_hash, row.seq, row.time, row.tenant, row.key_id, row.model, row.model_digest,
        row.request_id, row.decision, row.status, (row.prompt_tokens, row.completion_tokens), row.guard,
    )  # fmt: skip


def carries_mac(key: bytes, row: AuditRow) -> bool:
    """Whether ``row``'s MAC is the one ``key`` gives its fields (and its ``prev_hash``)."""
    return hmac.compare_digest(_row_mac(key, row), row.row_hash)


def advance(rows: Iterable[AuditRow], key: bytes, anchor: AuditHead) -> tuple[AuditHead, str | None]:
    """The head ``anchor`` may move to: the last of ``rows`` (the log from seq ``max(anchor.seq, 1)``
    on) when they start at the anchor with its MAC and each links to the one before (seq + 1,
    ``prev_hash``, MAC recomputed with ``key``). Otherwise ``(anchor, problem)``: the anchor is kept
    and ``problem`` says why (rows cut at or before it, replaced, or edited after it)."""
    genesis = anchor.seq == 0
    prev, expected = (GENESIS, 1) if genesis else (anchor.head, anchor.seq)
    last: AuditRow | None = None
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(anchor.time))
    for row in rows:
        if not genesis and last is None:
            if row.seq != anchor.seq or row.row_hash != anchor.head:
                what = "is gone" if row.seq != anchor.seq else "carries another MAC"
                return anchor, (
                    f"the row at the recorded head (seq {anchor.seq}, recorded {when}) {what}: rows were "
                    "cut or replaced"
                )
        elif row.seq != expected or row.prev_hash != prev:
            return anchor, f"row seq {row.seq} does not link to seq {expected - 1} after the recorded head"
        if not hmac.compare_digest(_row_mac(key, row), row.row_hash):
            return anchor, f"row seq {row.seq}: content does not match its MAC (the row was edited)"
        last, prev, expected = row, row.row_hash, row.seq + 1
    if last is None:
        if genesis:
            return anchor, None
        return anchor, (
            f"the log ends before the recorded head (seq {anchor.seq}, recorded {when}): rows were cut"
        )
    return AuditHead(last.seq, last.row_hash, time.time()), None
