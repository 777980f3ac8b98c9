"""The picklescan test corpus (a peer's labelled files): malicious -> MALICIOUS, benign -> CLEAN.

Files that are blocked only as ERROR or SUSPICIOUS (not proven malicious) are listed, with a
reason, in ``KNOWN_NOT_MALICIOUS``: each is asserted to be exactly that, so the list cannot go
stale silently. Skipped only when the corpus folder is absent (it is not shipped with airlock).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import pytest

from airlock import scan
from airlock.results import FileReport, Severity, Verdict

CORPUS: Final = Path("/work/shared/corpora/picklescan-tests")
MANIFEST: Final = CORPUS / "manifest.json"

#: malicious files airlock blocks without naming the payload, and why
KNOWN_NOT_MALICIOUS: Final = {
    "files/malicious1.7z": (
        Verdict.ERROR,
        "7z archives have no reader yet: reported unsupported, never clean",
    ),
}

pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"picklescan corpus not present at {CORPUS}")


def _samples() -> list[dict[str, str]]:
    if not MANIFEST.is_file():
        return []
    samples: list[dict[str, str]] = json.loads(MANIFEST.read_text())["samples"]
    return samples


def _named(report: FileReport) -> list[str]:
    return [f.callable for f in report.findings if f.severity is Severity.MALICIOUS and f.callable]


@pytest.mark.parametrize("sample", _samples(), ids=lambda s: f"{s['id']}-{Path(s['file']).name}")
def test_corpus_file(sample: dict[str, str]) -> None:
    report = scan(CORPUS / sample["file"])
    assert len(report.files) == 1, report
    result = report.files[0]
    summary = f"{sample['file']}: {result.verdict.value} [{result.format}] " + "; ".join(
        f"{f.rule} {f.callable or ''}".strip() for f in result.findings[:4]
    )
    print(summary)
    if sample["kind"] == "benign":
        assert result.verdict is Verdict.CLEAN, summary
    elif sample["file"] in KNOWN_NOT_MALICIOUS:
        expected, why = KNOWN_NOT_MALICIOUS[sample["file"]]
        assert result.verdict is expected, f"{summary} (expected {expected.value}: {why})"
    else:
        assert result.verdict is Verdict.MALICIOUS, summary
        assert _named(result), f"{summary}: no MALICIOUS finding names the callable"


def test_corpus_summary(capsys: pytest.CaptureFixture[str]) -> None:
    samples = _samples()
    rows: list[str] = []
    blocked = named = clean = 0
    malicious = [s for s in samples if s["kind"] == "malicious"]
    benign = [s for s in samples if s["kind"] == "benign"]
    for sample in samples:
        result = scan(CORPUS / sample["file"]).files[0]
        if sample["kind"] == "malicious":
            blocked += result.verdict is not Verdict.CLEAN
            named += result.verdict is Verdict.MALICIOUS and bool(_named(result))
            if result.verdict is not Verdict.MALICIOUS:
                rows.append(f"  only {result.verdict.value}: {sample['file']}")
        else:
            clean += result.verdict is Verdict.CLEAN
            if result.verdict is not Verdict.CLEAN:
                rows.append(f"  benign flagged {result.verdict.value}: {sample['file']}")
    with capsys.disabled():
        print(
            f"\npicklescan corpus: {blocked}/{len(malicious)} malicious blocked, {named}/{len(malicious)} "
            f"MALICIOUS with the payload named, {clean}/{len(benign)} benign CLEAN"
        )
        for row in rows:
            print(row)
    assert blocked == len(malicious)
    assert clean == len(benign)
    assert named == len(malicious) - len(KNOWN_NOT_MALICIOUS)
