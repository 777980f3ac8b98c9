"""The docs keep up with the code: every limit and every rule the scanner can emit is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from airlock.limits import Limits

ROOT = Path(__file__).resolve().parent.parent
SCAN_DOC = (ROOT / "docs" / "scan.md").read_text()


def test_every_limit_is_documented() -> None:
    missing = [f.name for f in dataclasses.fields(Limits) if f"`{f.name}`" not in SCAN_DOC]
    assert not missing, f"limits missing from docs/scan.md: {missing}"


def test_every_rule_id_in_the_scanner_is_documented() -> None:
    sources = [
        p
        for folder in ("_formats", "_analysis", "_scan")
        for p in (ROOT / "src" / "airlock" / folder).glob("*.py")
    ]
    rules: set[str] = set()
    for path in sources:
        text = path.read_text()
        rules.update(re.findall(r'Issue\(\s*\n?\s*"([a-z0-9]+\.[a-z0-9.-]+)"', text))
        rules.update(re.findall(r'rule="([a-z0-9]+\.[a-z0-9.-]+)"', text))
    assert len(rules) > 20, rules  # the pattern still finds the rules
    missing = sorted(r for r in rules if f"`{r}`" not in SCAN_DOC)
    assert not missing, f"rules missing from docs/scan.md: {missing}"
