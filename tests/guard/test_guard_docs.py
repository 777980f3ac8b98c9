"""Every rule id the guard can emit is documented in docs/guard.md."""

from __future__ import annotations

import re
from pathlib import Path

from airlock.guard import DEFAULT_ENTITIES

ROOT = Path(__file__).resolve().parents[2]


def test_every_rule_is_documented() -> None:
    doc = (ROOT / "docs" / "guard.md").read_text()
    rules: set[str] = set()
    for path in (ROOT / "src" / "airlock" / "guard").glob("*.py"):
        rules.update(
            re.findall(r'"((?:unicode|size|validate|filter|encode|injection)\.[a-z0-9-]+)"', path.read_text())
        )
    rules.update(f"pii.{e.lower()}" for e in DEFAULT_ENTITIES)
    assert len(rules) > 20, rules
    missing = sorted(r for r in rules if f"`{r}`" not in doc)
    assert missing == []
