"""One regression test per published pickle technique (fixtures in tests/fixtures/attacks.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock import Severity, Verdict
from airlock._render.text import render as render_text
from tests.fixtures.attacks import ATTACKS, Attack


def _names(report: airlock.Report, expected: str) -> bool:
    for finding in report.findings():
        if finding.severity is not Severity.MALICIOUS:
            continue
        if finding.callable == expected or expected in (finding.evidence or ""):
            return True
    return False


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack_is_malicious_and_named(attack: Attack, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = attack.build(tmp_path, marker)
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    assert _names(report, attack.names), render_text(report)
    assert not marker.exists(), "the scanner ran the payload"


@pytest.mark.parametrize(
    "attack", [a for a in ATTACKS if a.runnable], ids=[a.id for a in ATTACKS if a.runnable]
)
def test_fixture_is_a_real_attack(attack: Attack, tmp_path: Path) -> None:
    """The fixture really runs its payload under plain pickle.load (in a throwaway process)."""
    marker = tmp_path / "pwned"
    path = attack.build(tmp_path, marker)
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys\npickle.load(open(sys.argv[1], 'rb'))", str(path)],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert marker.exists(), f"{attack.id}: the fixture does not actually run its payload"
