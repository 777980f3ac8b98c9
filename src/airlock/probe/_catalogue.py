"""The attack templates and benign conversations shipped with airlock (data/*.json), with provenance.

The files are package data written by ``tools/vendor_probe_data.py`` (attacks) and by hand
(benign); they are read strictly (airlock's JSON parser) and checked field by field, so a damaged
install is an error, never a smaller catalogue.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError

__all__ = ["BENIGN_KINDS", "FAMILIES", "GOALS", "Benign", "Catalogue", "Source", "Template", "catalogue"]

#: Every attack family, in report order.
FAMILIES: Final = (
    "instruction-override",
    "system-prompt-extraction",
    "roleplay-jailbreak",
    "delimiter-confusion",
    "indirect-document",
    "indirect-tool",
    "encoding",
    "translation",
    "payload-splitting",
    "many-shot",
)
#: leak: get the canary planted in the system prompt; act: make the model emit the action token
GOALS: Final = ("leak", "act")
MUTATIONS: Final = ("base64", "rot13", "leetspeak", "homoglyphs", "zero-width")
BENIGN_KINDS: Final = ("question", "document", "tool")


@dataclass(frozen=True)
class Source:
    """Where a template comes from: a package's data file (with its licence and SHA-256) or airlock."""

    key: str
    package: str
    version: str | None
    file: str
    licence: str
    sha256: str | None


@dataclass(frozen=True)
class Template:
    id: str
    family: str
    goal: str
    source: str
    #: the published attack idea a hand-written template follows (no text copied), if any
    after: str | None
    mutation: str | None
    text: str
    #: further sources the text is made of (a translated wrapper's instruction comes from another file)
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class Benign:
    id: str
    kind: str
    text: str


@dataclass(frozen=True)
class Catalogue:
    sources: dict[str, Source]
    templates: tuple[Template, ...]
    benign: tuple[Benign, ...]

    def family(self, name: str) -> tuple[Template, ...]:
        return tuple(t for t in self.templates if t.family == name)


def _str(item: dict[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    value = item.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise FormatError(f"{where}: {key} must be a non-empty string, got {type(value).__name__}")
    return value


def _also(item: dict[str, Any], where: str) -> tuple[str, ...]:
    value = item.get("also", [])
    if not isinstance(value, list) or not all(isinstance(key, str) and key for key in value):
        raise FormatError(f"{where}: also must be a list of source keys")
    return tuple(value)


def _read(name: str) -> dict[str, Any]:
    raw = resources.files("airlock.probe").joinpath("data").joinpath(name).read_bytes()
    doc = parse_json_strict(raw, f"airlock probe data file {name}")
    if not isinstance(doc, dict):
        raise FormatError(f"airlock probe data file {name} must hold an object")
    return doc


def _sources(doc: dict[str, Any]) -> dict[str, Source]:
    out: dict[str, Source] = {}
    for key, item in doc["sources"].items():
        where = f"attacks.json source {key!r}"
        out[key] = Source(
            key,
            _str(item, "package", where),
            _str(item, "version", where, optional=True),
            _str(item, "file", where),
            _str(item, "licence", where),
            _str(item, "sha256", where, optional=True),
        )
    return out


def _templates(doc: dict[str, Any], sources: dict[str, Source]) -> tuple[Template, ...]:
    out: list[Template] = []
    seen: set[str] = set()
    for index, item in enumerate(doc["templates"]):
        where = f"attacks.json templates[{index}]"
        template = Template(
            _str(item, "id", where),
            _str(item, "family", where),
            _str(item, "goal", where),
            _str(item, "source", where),
            _str(item, "after", where, optional=True),
            _str(item, "mutation", where, optional=True),
            _str(item, "text", where),
            _also(item, where),
        )
        if template.id in seen:
            raise FormatError(f"{where}: duplicate id {template.id!r}")
        seen.add(template.id)
        known = template.source in sources and all(key in sources for key in template.also)
        if template.family not in FAMILIES or template.goal not in GOALS or not known:
            raise FormatError(f"{where}: unknown family, goal or source in {template.id!r}")
        if template.mutation is not None and template.mutation not in MUTATIONS:
            raise FormatError(f"{where}: unknown mutation {template.mutation!r}")
        out.append(template)
    return tuple(out)


@functools.cache
def catalogue() -> Catalogue:
    """The shipped catalogue (read once per process)."""
    attacks = _read("attacks.json")
    if attacks.get("schema") != "airlock.probe.attacks/1":
        raise FormatError(f"attacks.json: unknown schema {attacks.get('schema')!r}")
    sources = _sources(attacks)
    templates = _templates(attacks, sources)
    missing = [f for f in FAMILIES if not any(t.family == f for t in templates)]
    if missing:
        raise FormatError(f"attacks.json: no template for families {missing}")
    benign_doc = _read("benign.json")
    if benign_doc.get("schema") != "airlock.probe.benign/1":
        raise FormatError(f"benign.json: unknown schema {benign_doc.get('schema')!r}")
    benign = []
    for index, item in enumerate(benign_doc["items"]):
        where = f"benign.json items[{index}]"
        entry = Benign(_str(item, "id", where), _str(item, "kind", where), _str(item, "text", where))
        if entry.kind not in BENIGN_KINDS:
            raise FormatError(f"{where}: unknown kind {entry.kind!r}")
        benign.append(entry)
    return Catalogue(sources, templates, tuple(benign))
