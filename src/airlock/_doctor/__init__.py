"""``airlock doctor``'s supply-chain part: the loader versions it would run in the sandbox, and
warnings from a small shipped table of known load-time vulnerabilities (advisories.json, each
entry with its source).

Versions come from the installed distributions' metadata (:mod:`importlib.metadata`): nothing
here imports torch, onnxruntime or any other loader into the trusted process.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import metadata, resources

__all__ = ["LOADERS", "Advisory", "Loader", "advisories", "check_loaders", "render_text", "to_json"]

#: The loaders and template engines airlock may run inside the sandbox, in display order.
LOADERS = (
    "torch",
    "onnxruntime",
    "onnx",
    "transformers",
    "safetensors",
    "gguf",
    "jinja2",
    "llama-cpp-python",
)


@dataclass(frozen=True)
class Advisory:
    package: str
    fixed: str
    ids: tuple[str, ...]
    summary: str
    source: str


@dataclass(frozen=True)
class Loader:
    name: str
    version: str | None
    #: advisories that apply to the installed version (empty when it is fixed or not installed)
    affected_by: tuple[Advisory, ...]


def advisories() -> tuple[Advisory, ...]:
    text = resources.files("airlock._doctor").joinpath("advisories.json").read_text(encoding="utf-8")
    return tuple(
        Advisory(a["package"], a["fixed"], tuple(a["ids"]), a["summary"], a["source"])
        for a in json.loads(text)["advisories"]
    )


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version (``2.6.0+cpu`` -> (2, 6, 0); ``2.6.0rc1`` -> (2, 6, 0))."""
    parts = []
    for piece in version.split("+", maxsplit=1)[0].split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_loaders() -> tuple[Loader, ...]:
    table = advisories()
    found = []
    for name in LOADERS:
        version = _installed(name)
        hits: tuple[Advisory, ...] = ()
        if version is not None:
            hits = tuple(a for a in table if a.package == name and _release(version) < _release(a.fixed))
        found.append(Loader(name, version, hits))
    return tuple(found)


def render_text(loaders: tuple[Loader, ...]) -> list[str]:
    lines = ["loaders the sandbox would run:"]
    for loader in loaders:
        lines.append(f"  {loader.name:<17} {loader.version or 'not installed'}")
        for adv in loader.affected_by:
            lines.append(
                f"  WARNING {loader.name} {loader.version} < {adv.fixed}: {', '.join(adv.ids)}: {adv.summary} "
                f"({adv.source})"
            )
    return lines


def to_json(loaders: tuple[Loader, ...]) -> list[dict[str, object]]:
    return [
        {
            "name": loader.name,
            "version": loader.version,
            "advisories": [
                {"ids": list(a.ids), "fixed": a.fixed, "summary": a.summary, "source": a.source}
                for a in loader.affected_by
            ],
        }
        for loader in loaders
    ]
