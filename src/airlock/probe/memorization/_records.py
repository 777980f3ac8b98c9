"""The records to audit: a JSON file of canaries (with a format) and other sensitive records.

A record is ``{"id": ..., "text": ..., "template": ...}`` or, without a format, ``{"id": ...,
"text": ..., "prefix": ...}`` (extraction only: no exposure without a space of candidates).
A template is literal text with slots ``{KIND:N}``: ``N`` characters of ``digits`` (0-9),
``hex`` (0-9a-f), ``lower`` (a-z), ``upper`` (A-Z) or ``alnum`` (a-z0-9); ``{{`` and ``}}`` are
literal braces. The record's text must be the template with its slots filled; the candidates are
the same template filled at random from a seed (:func:`candidates`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from dataclasses import dataclass
from typing import Final

from airlock.errors import UsageError

__all__ = ["ALPHABETS", "Record", "Template", "candidates", "load_records", "parse_records", "parse_template"]

ALPHABETS: Final = {
    "digits": "0123456789",
    "hex": "0123456789abcdef",
    "lower": "abcdefghijklmnopqrstuvwxyz",
    "upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "alnum": "abcdefghijklmnopqrstuvwxyz0123456789",
}
MAX_FILE_BYTES: Final = 1 << 20
MAX_RECORDS: Final = 1000
MAX_TEXT: Final = 1024
MAX_SLOT: Final = 64
MAX_SLOTS: Final = 8
_ID = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
_TOKEN = re.compile(r"\{\{|\}\}|\{([a-z]+):([0-9]{1,3})\}|[{}]|[^{}]+")


@dataclass(frozen=True)
class Template:
    """Literal parts and slots, in order: ``parts[i]`` is ``str`` (literal) or ``(kind, length)``."""

    source: str
    parts: tuple[str | tuple[str, int], ...]

    @property
    def slots(self) -> tuple[tuple[str, int], ...]:
        return tuple(p for p in self.parts if isinstance(p, tuple))

    @property
    def space_bits(self) -> float:
        """log2 of the number of texts the template can make (|R| of the Secret Sharer)."""
        return sum(n * math.log2(len(ALPHABETS[k])) for k, n in self.slots)

    @property
    def space(self) -> int:
        return math.prod(len(ALPHABETS[k]) ** n for k, n in self.slots)

    def fill(self, values: tuple[str, ...]) -> str:
        it = iter(values)
        return "".join(p if isinstance(p, str) else next(it) for p in self.parts)

    def match(self, text: str) -> tuple[str, ...] | None:
        pattern = "".join(
            re.escape(p) if isinstance(p, str) else f"([{re.escape(ALPHABETS[p[0]])}]{{{p[1]}}})"
            for p in self.parts
        )
        found = re.fullmatch(pattern, text)
        return found.groups() if found else None

    @property
    def prefix(self) -> str:
        """The literal text before the first slot (the extraction prompt)."""
        return self.parts[0] if self.parts and isinstance(self.parts[0], str) else ""


def parse_template(source: str) -> Template:
    parts: list[str | tuple[str, int]] = []
    for found in _TOKEN.finditer(source):
        token = found.group(0)
        if found.group(1) is not None:
            kind, length = found.group(1), int(found.group(2))
            if kind not in ALPHABETS:
                raise UsageError(
                    f"template {source!r}: unknown slot kind {kind!r} (known: {', '.join(ALPHABETS)})"
                )
            if not 1 <= length <= MAX_SLOT:
                raise UsageError(f"template {source!r}: slot length {length} is not in 1..{MAX_SLOT}")
            parts.append((kind, length))
        elif token in ("{", "}"):
            raise UsageError(f"template {source!r}: a lone {token!r} (write {token * 2} for a literal brace)")
        else:
            literal = token[0] if token in ("{{", "}}") else token
            if parts and isinstance(parts[-1], str):
                parts[-1] += literal
            else:
                parts.append(literal)
    template = Template(source, tuple(parts))
    if not template.slots:
        raise UsageError(f"template {source!r} has no slot such as {{digits:6}}")
    if len(template.slots) > MAX_SLOTS:
        raise UsageError(f"template {source!r} has more than {MAX_SLOTS} slots")
    return template


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    template: Template | None
    #: the extraction prompt; the model should continue it with :attr:`target`
    prefix: str

    @property
    def target(self) -> str:
        """What follows the prefix up to the end of the last slot (the secret, as the text spells it)."""
        if self.template is None:
            return self.text[len(self.prefix) :]
        parts = self.template.parts
        last = max(i for i, p in enumerate(parts) if isinstance(p, tuple))
        tail = "".join(p for p in parts[last + 1 :] if isinstance(p, str))
        return self.text[len(self.prefix) : len(self.text) - len(tail)]


def _record(index: int, raw: object) -> Record:
    where = f"record {index}"
    if not isinstance(raw, dict) or not set(raw) <= {"id", "text", "template", "prefix"}:
        raise UsageError(f"{where}: must be an object with id, text and template or prefix")
    rid, text = raw.get("id"), raw.get("text")
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        raise UsageError(f"{where}: id must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -")
    if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT:
        raise UsageError(f"record {rid}: text must be a string of 1..{MAX_TEXT} characters")
    if ("template" in raw) == ("prefix" in raw):
        raise UsageError(f"record {rid}: give exactly one of template and prefix")
    if "template" in raw:
        source = raw["template"]
        if not isinstance(source, str) or len(source) > MAX_TEXT:
            raise UsageError(f"record {rid}: template must be a string of at most {MAX_TEXT} characters")
        template = parse_template(source)
        if template.match(text) is None:
            raise UsageError(f"record {rid}: text does not fit its template {source!r}")
        return Record(rid, text, template, template.prefix)
    prefix = raw["prefix"]
    if not isinstance(prefix, str) or not text.startswith(prefix) or prefix == text:
        raise UsageError(f"record {rid}: prefix must be a proper beginning of text")
    return Record(rid, text, None, prefix)


def parse_records(data: bytes) -> list[Record]:
    """``{"records": [...]}`` (UTF-8 JSON, at most 1 MiB and 1000 records, unique ids)."""
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"records: more than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"records: not UTF-8 JSON ({exc})") from exc
    if not isinstance(doc, dict) or set(doc) != {"records"} or not isinstance(doc["records"], list):
        raise UsageError('records: expected {"records": [...]}')
    if not 0 < len(doc["records"]) <= MAX_RECORDS:
        raise UsageError(f"records: between 1 and {MAX_RECORDS} records")
    records = [_record(i, raw) for i, raw in enumerate(doc["records"])]
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise UsageError("records: ids must be unique")
    return records


def load_records(path: str | os.PathLike[str]) -> list[Record]:
    from airlock.sandbox._gate import WOULD_BLOCK, open_regular

    fd = open_regular(path, "records file")
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except BlockingIOError as exc:
        raise UsageError(f"records file {os.fspath(path)!r}: {WOULD_BLOCK}") from exc
    finally:
        os.close(fd)
    return parse_records(data or b"")


def candidates(record: Record, count: int, seed: int) -> tuple[list[str], bool]:
    """``count`` random texts of the record's format, never the record itself, from ``seed`` and
    the record's id alone (the same seed gives the same candidates). When the whole space but the
    record has at most ``count`` texts, every one of them, in order; the second value says so
    (the rank is then exact)."""
    template = record.template
    assert template is not None
    own = template.match(record.text)
    if template.space - 1 <= count:
        import itertools

        pools = [
            ["".join(chars) for chars in itertools.product(ALPHABETS[kind], repeat=length)]
            for kind, length in template.slots
        ]
        return [template.fill(v) for v in itertools.product(*pools) if v != own], True
    digest = hashlib.sha256(f"airlock.memorization/1\0{seed}\0{record.id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest, "big"))  # noqa: S311 - reproducible candidates, not secrets
    drawn: list[str] = []
    while len(drawn) < count:
        values = tuple("".join(rng.choices(ALPHABETS[kind], k=length)) for kind, length in template.slots)
        if values != own:
            drawn.append(template.fill(values))
    return drawn, False
