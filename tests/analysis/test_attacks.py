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


def test_evidence_is_the_first_call_of_the_name_that_gets_the_finding(tmp_path: Path) -> None:
    """Evidence is rendered only for a finding's name (not for every allowed call), and it is the
    first call that invokes that name: here the second of three calls, after an allowed one."""
    path = tmp_path / "calls.pkl"
    path.write_bytes(
        b"(c__builtin__\nlen\n(Vabc\ntR"  # allowed: no finding, no evidence
        b"cos\nsystem\n(Vecho first\ntR"
        b"cos\nsystem\n(Vecho second\ntRt."
    )
    report = airlock.scan(path)
    (finding,) = [f for f in report.findings() if f.rule == "pickle.dangerous-global"]
    assert finding.callable == "os.system"
    assert finding.evidence == "os.system('echo first')"
