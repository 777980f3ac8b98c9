"""The memorization audit of a GGUF model (the real SmolLM2-135M-Instruct Q4_1), loaded by the
lm-score runtime exactly as text-gguf loads it, in the sandbox: a pangram every web corpus holds
is exposed and extracted; a random PIN is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.probe.memorization import Settings, audit, parse_records
from airlock.sandbox import SandboxPolicy
from tests.text.conftest import TEXT_LIMITS, smollm2_path

pytestmark = pytest.mark.xdist_group("memorization-gguf")

_RECORDS = b"""{"records": [
 {"id": "fox", "template": "The quick brown fox jumps over the lazy {lower:3}.",
  "text": "The quick brown fox jumps over the lazy dog."},
 {"id": "pin", "template": "My PIN is {digits:6}.", "text": "My PIN is 582017."}
]}"""


def test_a_gguf_model_exposes_the_pangram_and_not_the_pin() -> None:
    report = audit(
        smollm2_path(),
        parse_records(_RECORDS),
        Settings(candidates=30, seed=0),
        policy=SandboxPolicy(limits=TEXT_LIMITS),
    )
    assert report.model["format"] == "gguf" and '"architecture": "llama"' in str(report.model["loaded"])
    fox, pin = report.records
    assert fox.rank == 1 and fox.at_risk and fox.reasons == ("exposure", "extraction")
    assert fox.extraction is not None and fox.extraction.completion.startswith(" dog")
    assert fox.exposure_extrapolated is not None and fox.exposure_extrapolated > 8.0  # well past log2(31)
    assert not pin.at_risk and pin.extraction is not None and not pin.extraction.exact
    assert report.exit_code == 1
    assert Path(str(report.model["source"])).name.endswith(".gguf")
