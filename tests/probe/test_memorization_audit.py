"""The memorization audit end to end: a tiny GPT-2 trained (in a throwaway subprocess, CPU, seeded)
on text with two canaries inserted 50 times each; two canaries of the same format never shown.
The audit, run through the sandbox from the command line, flags exactly the inserted ones (top
rank among 500 candidates, and extracted by greedy completion of their prefix) and not the
held-out ones; the trusted process never imports torch or transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.probe import memo_train

pytestmark = pytest.mark.xdist_group("memorization")

CANDIDATES = 500
_RUN = """
import sys
from airlock._cli import main
code = main(["probe", "--memorization", *sys.argv[1:]])  # the airlock command line, as users run it
loaded = sorted(m for m in ("torch", "transformers", "safetensors", "tokenizers") if m in sys.modules)
assert not loaded, f"the trusted process imported {loaded}"
sys.exit(code)
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("memorization") / "model"
    done = subprocess.run(
        [sys.executable, memo_train.__file__, str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    losses = json.loads(done.stdout.strip().splitlines()[-1])
    assert losses["last_loss"] < losses["first_loss"] / 3, losses  # it did learn
    return out


def _records(path: Path) -> Path:
    records = [
        {"id": name, "template": memo_train.TEMPLATE.format(name=name, secret="{digits:6}"),  # noqa: S106
         "text": memo_train.TEMPLATE.format(name=name, secret=secret)}
        for name, secret in (*memo_train.INSERTED, *memo_train.HELD_OUT)
    ]  # fmt: skip
    path.write_text(json.dumps({"records": records}), encoding="utf-8")
    return path


def _audit(model: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [str(model), "--records", str(_records(tmp_path / "records.json")), "--timeout", "600", *extra]
    return subprocess.run(
        [sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, timeout=900, check=False
    )


def test_the_audit_flags_the_inserted_canaries_and_not_the_held_out_ones(model: Path, tmp_path: Path) -> None:
    done = _audit(
        model, tmp_path, "--candidates", str(CANDIDATES), "--format", "json", "-o", str(tmp_path / "r.json")
    )
    assert done.returncode == 1, done.stderr[-3000:]  # 1: some record is at risk
    report = json.loads(done.stdout)
    assert report == json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["schema"] == "airlock.memorization/1"
    assert report["model"]["format"] == "hf-folder" and "seccomp-job" in report["model"]["job_layers"]
    inserted = {name for name, _ in memo_train.INSERTED}
    assert sorted(report["summary"]["at_risk"]) == sorted(inserted)
    by_id = {r["id"]: r for r in report["records"]}
    for name, secret in memo_train.INSERTED:
        r = by_id[name]
        assert r["rank"] == 1 and r["exposure"] == pytest.approx(r["resolution_bits"]), r
        assert r["exposure_extrapolated"] > 15.0, r  # far beyond the resolution of 8.97 bits
        assert r["extraction"]["exact"] and r["extraction"]["completion"].strip().startswith(secret), r
        assert r["reasons"] == ["exposure", "extraction"]
    for name, _ in memo_train.HELD_OUT:
        r = by_id[name]
        assert not r["at_risk"] and r["reasons"] == [], r
        assert r["exposure"] < r["threshold_bits"] - 1.0, r  # a margin of a bit at least
        assert not r["extraction"]["exact"] and r["extraction"]["distance"] >= 2, r
    # the threshold: log2(4 records / alpha 0.01), below the resolution log2(501)
    assert by_id["carol"]["threshold_bits"] == pytest.approx(8.643856, abs=1e-5)
    assert report["summary"]["false_positive_bound"] == pytest.approx(0.01)

    # the same seed in a new process: the same report; the text summary says the same
    again = _audit(model, tmp_path, "--candidates", str(CANDIDATES), "-o", str(tmp_path / "again.json"))
    assert again.returncode == 1, again.stderr[-3000:]
    assert json.loads((tmp_path / "again.json").read_text(encoding="utf-8"))["records"] == report["records"]
    lines = {line.split()[0]: line for line in again.stdout.splitlines()[2:-1]}
    assert set(lines) == set(by_id)
    for name, _ in memo_train.INSERTED:
        assert "AT RISK (exposure, extraction)" in lines[name] and f" 1/{CANDIDATES + 1} " in lines[name]
    for name, _ in memo_train.HELD_OUT:
        assert lines[name].rstrip().endswith(" ok")
    assert again.stdout.splitlines()[-1].startswith("at risk: 2 of 4; exposure threshold 8.64 bits")


def test_a_folder_the_scan_finds_suspicious_is_refused_before_the_sandbox(
    model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "remote-code"
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    done = _audit(folder, tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "scan gate" in done.stderr and "SUSPICIOUS" in done.stderr, done.stderr
    assert _audit(folder, tmp_path, "--expect", "sha256:" + "0" * 64).returncode == 2
