"""``--format sarif``: SARIF 2.1.0 for code-scanning dashboards.

One result per finding that weighs on a verdict (INFO findings are left out); the level is
``error`` for MALICIOUS and ERROR, ``warning`` for SUSPICIOUS. Archive members and byte offsets
go into the message and into ``properties``, since SARIF regions cannot address them.
"""

from __future__ import annotations

import json
from typing import Any

from airlock import __version__
from airlock.results import Report, Severity

_LEVEL = {Severity.MALICIOUS: "error", Severity.ERROR: "error", Severity.SUSPICIOUS: "warning"}


def render(report: Report) -> str:
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for file in report.files:
        for finding in file.findings:
            if finding.severity is Severity.INFO:
                continue
            rules.setdefault(
                finding.rule,
                {
                    "id": finding.rule,
                    "name": finding.rule.replace(".", "-"),
                    "shortDescription": {"text": finding.rule},
                },
            )
            where = " > ".join(finding.location.members)
            text = finding.message
            if where:
                text += f" (in {where})"
            if finding.evidence:
                text += f"; would run: {finding.evidence}"
            result: dict[str, Any] = {
                "ruleId": finding.rule,
                "level": _LEVEL[finding.severity],
                "message": {"text": text},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": file.path},
                        }
                    }
                ],
                "properties": {
                    "severity": finding.severity.value,
                    "callable": finding.callable,
                    "members": list(finding.location.members),
                    "offset": finding.location.offset,
                    "count": finding.count,
                },
            }
            if finding.location.offset is not None and not finding.location.members:
                result["locations"][0]["physicalLocation"]["region"] = {"byteOffset": finding.location.offset}
            results.append(result)
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "airlock",
                        "version": __version__,
                        "rules": sorted(rules.values(), key=lambda r: str(r["id"])),
                    }
                },
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
    return json.dumps(document, indent=2) + "\n"
