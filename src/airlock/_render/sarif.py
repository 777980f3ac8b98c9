"""``--format sarif``: SARIF 2.1.0 for code-scanning dashboards (GitHub code scanning and others).

* One result per finding that weighs on a verdict (INFO findings are left out); ``level`` is
  ``error`` for MALICIOUS and ERROR, ``warning`` for SUSPICIOUS.
* URIs are relative, with a ``uriBaseId``: ``%SRCROOT%`` (the current directory, which is the
  checkout in CI) for files below it, ``ROOT1``, ``ROOT2``, ... (the scanned folder) for files
  elsewhere; ``originalUriBaseIds`` gives each base as an absolute ``file://`` URI. A dashboard
  therefore shows ``models/x.bin``, never the runner's absolute path. A URI percent-encodes the
  name's bytes on disk, so a name that is not UTF-8 is named exactly (``h%FF.pkl``).
* ``partialFingerprints`` (``airlock/v1``) hash the rule, the relative path, the archive members,
  the callable and the byte offset, plus an occurrence number, so several findings at one file
  stay several alerts and an alert keeps its identity between runs.
* Each rule carries ``help`` (text and markdown, from the rules table of docs/scan.md shipped with
  airlock), ``properties.security-severity`` (GitHub's 0-10 score: the worst severity the rule
  fired with) and ``tags``.
* Archive members and byte offsets go into the message, a ``logicalLocation`` and ``properties``,
  since SARIF regions cannot address members; a top-level byte offset is a ``region.byteOffset``.
* The message is for people: what it quotes from the scanned file (evidence, member names) is
  escaped as in the text report (``airlock._render.printable``), so control and bidi characters
  cannot reorder or forge an alert's text, and its brackets are escaped (SARIF 3.11.6), so a name
  cannot make a link in it; the logical location shows members the same way; ``properties`` keep
  the exact values.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airlock import __version__
from airlock._render import printable, shown_name
from airlock.results import Finding, Report, Severity

_LEVEL = {Severity.MALICIOUS: "error", Severity.ERROR: "error", Severity.SUSPICIOUS: "warning"}
#: GitHub maps >= 9.0 to critical, >= 7.0 high, >= 4.0 medium.
_SECURITY_SEVERITY = {Severity.MALICIOUS: 9.8, Severity.ERROR: 7.0, Severity.SUSPICIOUS: 5.0}
_RANK = {Severity.SUSPICIOUS: 0, Severity.ERROR: 1, Severity.MALICIOUS: 2}
_DOCS_URI = "https://pypi.org/project/model-airlock/"
#: CWE tags GitHub shows for the rule families (deserialization of untrusted data, template injection ...)
_CWE = {
    "pickle": "external/cwe/cwe-502",
    "keras": "external/cwe/cwe-94",
    "gguf": "external/cwe/cwe-1336",
    "jinja": "external/cwe/cwe-1336",
    "onnx": "external/cwe/cwe-22",
    "fs": "external/cwe/cwe-59",
    "limit": "external/cwe/cwe-400",
    "integrity": "external/cwe/cwe-494",
}


@functools.cache
def _rule_docs() -> dict[str, tuple[str, str]]:
    """rule id -> (severity column, meaning) from the rules tables of the shipped docs/scan.md."""
    from airlock._cli import docs_location

    path = Path(docs_location()) / "scan.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    table = re.compile(r"^\|\s*`([a-z0-9_]+\.[a-z0-9_.-]+)`\s*\|\s*([^|]*?)\s*\|\s*(.*?)\s*\|\s*$")
    rules: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        match = table.match(line)
        if match:
            rules.setdefault(match.group(1), (match.group(2), match.group(3)))
    return rules


def _rule(rule_id: str, worst: Severity) -> dict[str, Any]:
    severity_text, meaning = _rule_docs().get(rule_id, ("", ""))
    meaning = meaning.replace("`", "")
    summary = meaning or f"airlock finding {rule_id}"
    help_text = (
        f"{rule_id}: {summary}. airlock reads model files statically and never runs them; this rule "
        f"fired with severity {worst.value}. See the Rules section of docs/scan.md (installed with "
        f"airlock; `airlock --help` says where)."
    )
    help_md = (
        f"**{rule_id}** ({severity_text or worst.value}): {summary}.\n\n"
        "airlock reads model files statically and never runs them. Do not load a file with a MALICIOUS "
        "finding; convert clean pickle checkpoints with `airlock convert`, or run models with "
        "`airlock run` inside the sandbox. Rules are listed in docs/scan.md."
    )
    family = rule_id.partition(".")[0]
    tags = ["security", "supply-chain", "ml-model"]
    if family in _CWE:
        tags.append(_CWE[family])
    return {
        "id": rule_id,
        "name": "".join(part.capitalize() for part in re.split(r"[.\-_]", rule_id)),
        "shortDescription": {"text": summary},
        "fullDescription": {"text": summary},
        "help": {"text": help_text, "markdown": help_md},
        "helpUri": _DOCS_URI,
        "defaultConfiguration": {"level": _LEVEL[worst]},
        "properties": {
            "security-severity": f"{_SECURITY_SEVERITY[worst]:.1f}",
            "tags": tags,
            "precision": "high" if worst is Severity.MALICIOUS else "medium",
            "problem.severity": _LEVEL[worst],
        },
    }


class _Bases:
    """Relative URIs: below the current directory as %SRCROOT%, else below the scanned root."""

    def __init__(self, roots: tuple[str, ...]) -> None:
        self.cwd = os.path.abspath(os.getcwd())
        self.bases: dict[str, str] = {"%SRCROOT%": self.cwd}
        self.roots = [os.path.abspath(r) for r in roots]

    def locate(self, display: str) -> tuple[str, str]:
        absolute = os.path.abspath(display)
        if _below(absolute, self.cwd):
            return "%SRCROOT%", _uri(os.path.relpath(absolute, self.cwd))
        for root in self.roots:
            base = root if os.path.isdir(root) else os.path.dirname(root)
            if _below(absolute, base):
                name = next((k for k, v in self.bases.items() if v == base), f"ROOT{len(self.bases)}")
                self.bases[name] = base
                return name, _uri(os.path.relpath(absolute, base))
        base = os.path.dirname(absolute)
        name = next((k for k, v in self.bases.items() if v == base), f"ROOT{len(self.bases)}")
        self.bases[name] = base
        return name, _uri(os.path.basename(absolute))

    def original(self) -> dict[str, Any]:
        return {
            name: {"uri": Path(base).as_uri().rstrip("/") + "/"} for name, base in sorted(self.bases.items())
        }


def _below(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _uri(relative: str) -> str:
    """A relative URI reference for a path: its bytes on disk, percent-encoded (RFC 3986, as
    ``Path.as_uri`` does). A name that is not UTF-8 holds lone surrogates for its bytes
    (``os.fsdecode``), which ``quote`` of the string could not encode: the whole report failed
    with a traceback (outside review 27); ``h%FF.pkl`` now names exactly that file."""
    return quote(os.fsencode(Path(relative).as_posix()), safe="/")


def _fingerprint(uri: str, finding: Finding, occurrence: int) -> str:
    parts = [
        finding.rule,
        uri,
        "\x1f".join(finding.location.members),
        finding.callable or "",
        "" if finding.location.offset is None else str(finding.location.offset),
        str(occurrence),
    ]
    return hashlib.sha256("\x1e".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def to_dict(report: Report) -> dict[str, Any]:
    worst: dict[str, Severity] = {}
    results: list[dict[str, Any]] = []
    bases = _Bases(report.all_roots)
    for file in report.files:
        base_id, uri = bases.locate(file.path)
        seen: dict[str, int] = {}
        for finding in file.findings:
            if finding.severity is Severity.INFO:
                continue
            previous = worst.get(finding.rule)
            if previous is None or _RANK[finding.severity] > _RANK[previous]:
                worst[finding.rule] = finding.severity
            # The message is what a person reads (GitHub's code scanning shows it): what it quotes
            # from the scanned file is escaped as in the text report, so a bidi override in a
            # pickle's string cannot reorder the alert; ``properties`` keep the exact values.
            where = " > ".join(map(shown_name, finding.location.members))
            text = printable(finding.message)
            if where:
                text += f" (in {where})"
            if finding.location.offset is not None:
                text += f" at byte {finding.location.offset}"
            if finding.evidence:
                text += f"; would run: {printable(finding.evidence)}"
            # SARIF 3.11.6: "[text](target)" in a plain-text message is a link; a bracket the file
            # chose (a member named "[x](https://...)") is escaped so it stays text.
            text = text.replace("[", "\\[").replace("]", "\\]")
            location: dict[str, Any] = {
                "physicalLocation": {"artifactLocation": {"uri": uri, "uriBaseId": base_id}}
            }
            if finding.location.offset is not None and not finding.location.members:
                location["physicalLocation"]["region"] = {"byteOffset": finding.location.offset}
            if finding.location.members:
                location["logicalLocations"] = [{"fullyQualifiedName": where, "kind": "member"}]
            key = _fingerprint(uri, finding, 0)
            occurrence = seen.get(key, 0)
            seen[key] = occurrence + 1
            results.append(
                {
                    "ruleId": finding.rule,
                    "level": _LEVEL[finding.severity],
                    "message": {"text": text},
                    "locations": [location],
                    "partialFingerprints": {"airlock/v1": _fingerprint(uri, finding, occurrence)},
                    "properties": {
                        "severity": finding.severity.value,
                        "callable": finding.callable,
                        "members": list(finding.location.members),
                        "offset": finding.location.offset,
                        "count": finding.count,
                        "format": file.format,
                    },
                }
            )
    rules = [_rule(rule_id, severity) for rule_id, severity in sorted(worst.items())]
    index = {rule["id"]: n for n, rule in enumerate(rules)}
    for result in results:
        result["ruleIndex"] = index[result["ruleId"]]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "airlock",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": _DOCS_URI,
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": bases.original(),
                "results": results,
                "properties": {
                    "verdict": report.verdict.value,
                    "exitCode": report.exit_code,
                    "integrity": report.integrity,
                    "unsafeOptions": list(report.unsafe_options),
                },
            }
        ],
    }


def render(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2) + "\n"
