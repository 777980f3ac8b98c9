"""``auto_map`` below the top level of a config, which transformers honours.

transformers 5 keeps the feature extractor's, image processor's and video processor's configs as
sections of ``processor_config.json`` and reads their ``auto_map`` from there
(``feature_extraction_utils``: ``processor_dict["feature_extractor"]``). Only a top-level
``auto_map`` was checked, so a nested one naming code elsewhere on the machine
(``/path--module.Class``: a local folder is a "repository" to ``get_class_from_dynamic_module``)
ran it while the scan said CLEAN, exit 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock import Severity, Verdict
from airlock._render.text import render as render_text


def _processor_folder(tmp_path: Path, section: str, auto_map: dict[str, object]) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    other = tmp_path / "other"
    other.mkdir()
    (other / "fe.py").write_text(
        f"import os\nos.system('touch {marker}')\n"
        "from transformers import SequenceFeatureExtractor\n\nclass MyFE(SequenceFeatureExtractor):\n    pass\n"
    )
    model = tmp_path / "model"
    model.mkdir()
    config = {section: {"auto_map": auto_map, "feature_extractor_type": "MyFE", "feature_size": 1,
                        "sampling_rate": 16000, "padding_value": 0.0}}  # fmt: skip
    (model / "processor_config.json").write_text(json.dumps(config))
    return model, marker


@pytest.mark.parametrize("section", ["feature_extractor", "audio_processor"])
def test_a_nested_auto_map_is_remote_code(tmp_path: Path, section: str) -> None:
    ref = f"{tmp_path / 'other'}--fe.MyFE"
    model, marker = _processor_folder(tmp_path, section, {"AutoFeatureExtractor": ref})
    code = (
        "import sys\nfrom transformers import AutoFeatureExtractor\n"
        "AutoFeatureExtractor.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True,
                          timeout=300, check=False, env=env)  # fmt: skip
    assert marker.exists(), done.stderr[-3000:]
    report = airlock.scan(model)
    assert report.verdict is Verdict.SUSPICIOUS, render_text(report)
    (finding,) = [f for f in report.files[0].findings if f.rule == "hf.remote-code"]
    assert finding.severity is Severity.SUSPICIOUS and finding.callable == "fe.MyFE"
    assert f"{section}.auto_map AutoFeatureExtractor" in finding.message


def test_auto_map_by_backend_is_read_not_an_error(tmp_path: Path) -> None:
    """Image processors' ``auto_map`` entries may map a backend to a class (transformers'
    ``_resolve_auto_map_class_ref``); each reference is checked, none is a format error."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "img.py").write_text("class P:\n    pass\n")
    auto_map = {"AutoImageProcessor": {"pil": "img.P", "torchvision": "img.P"}}
    (model / "preprocessor_config.json").write_text(json.dumps({"auto_map": auto_map}))
    report = airlock.scan(model)
    assert report.verdict is Verdict.SUSPICIOUS, render_text(report)
    rules = {f.rule for r in report.files for f in r.findings if f.severity is not Severity.INFO}
    assert rules == {"hf.remote-code"}, rules
