"""An empty file is content no reader knows: its name decides, as for any such content. Under a
name that is no model file name (`.gitkeep`, an empty `__init__.py`) it is listed as skipped; a file
a loader opens as a model (by its own name or a link's in the folder) with nothing in it is
`format.empty` (ERROR). Before, every empty file was an ERROR, so an ordinary checkout with an empty
`__init__.py` could never scan clean."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import airlock
from airlock._cli import main
from airlock.results import FileReport, Verdict

SKIPPED_NAMES = [".gitkeep", "__init__.py", "README.md", "notes.txt", "LICENSE", "tokenizer_config.txt"]
MODEL_NAMES = [
    "pytorch_model.bin",
    "model.safetensors",
    "weights.pt",
    "model.pth",
    "x.pkl",
    "m.gguf",
    "m.onnx",
]


def _folder(root: Path, empties: list[str]) -> Path:
    root.mkdir()
    save_file({"w": np.ones((2, 2), dtype=np.float32)}, str(root / "model.safetensors"))
    for name in empties:
        (root / name).write_bytes(b"")
    return root


def _by_name(report: airlock.Report) -> dict[str, FileReport]:
    return {Path(f.path).name: f for f in report.files}


@pytest.mark.parametrize("name", SKIPPED_NAMES)
def test_an_empty_file_that_is_no_model_is_skipped(tmp_path: Path, name: str) -> None:
    report = airlock.scan(_folder(tmp_path / "t", [name]))
    assert report.verdict is Verdict.CLEAN
    assert [Path(s.path).name for s in report.skipped] == [name]
    assert name not in _by_name(report)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_an_empty_file_a_loader_opens_as_a_model_is_an_error(tmp_path: Path, name: str) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / name).write_bytes(b"")
    (root / ".gitkeep").write_bytes(b"")
    report = airlock.scan(root)
    assert report.verdict is Verdict.ERROR
    empty = _by_name(report)[name]
    assert [(f.rule, f.severity.name) for f in empty.findings] == [("format.empty", "ERROR")]
    assert [Path(s.path).name for s in report.skipped] == [".gitkeep"]


def test_a_model_named_link_to_an_empty_file_is_an_error(tmp_path: Path) -> None:
    root = _folder(tmp_path / "t", ["notes.txt"])
    os.symlink("notes.txt", root / "pytorch_model.bin")
    report = airlock.scan(root)
    assert report.verdict is Verdict.ERROR
    assert [f.rule for f in _by_name(report)["notes.txt"].findings] == ["format.empty"]


def test_a_one_byte_file_is_judged_as_before(tmp_path: Path) -> None:
    """N+1: one byte of no known format under a model name is format.unsupported, not empty."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "pytorch_model.bin").write_bytes(b"x")
    (root / "__init__.py").write_bytes(b"\n")
    report = airlock.scan(root)
    assert [f.rule for f in _by_name(report)["pytorch_model.bin"].findings] == ["format.unsupported"]
    assert report.verdict is Verdict.ERROR


def test_a_scan_of_nothing_but_empty_files_is_no_clean_scan(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / ".gitkeep").write_bytes(b"")
    (root / "__init__.py").write_bytes(b"")
    assert airlock.scan(root).verdict is Verdict.ERROR
    assert main(["scan", "-q", str(root)]) == 2


def test_the_pool_gives_the_same_report(tmp_path: Path) -> None:
    root = _folder(tmp_path / "t", [])
    for i in range(60):
        (root / f"pkg{i}").mkdir()
        (root / f"pkg{i}" / "__init__.py").write_bytes(b"")
        (root / f"pkg{i}" / "weights.pt").write_bytes(b"" if i % 7 == 0 else b"\x80\x04K\x01.")
    alone = airlock.scan(root, jobs=1)
    pooled = airlock.scan(root, jobs=2)
    assert [(f.path, f.verdict, [x.rule for x in f.findings]) for f in pooled.files] == [
        (f.path, f.verdict, [x.rule for x in f.findings]) for f in alone.files
    ]
    assert [s.path for s in pooled.skipped] == [s.path for s in alone.skipped]
    assert len(alone.skipped) == 60 and alone.verdict is Verdict.ERROR


@pytest.mark.parametrize("data", [b"", b"hello\n"])
def test_standard_input_is_always_judged_as_a_model(tmp_path: Path, data: bytes) -> None:
    """``airlock scan -``: piped bytes are meant as a model, so none at all or content no reader
    knows is an ERROR beside a clean file, never a skipped README (outside pass after review 28)."""
    import subprocess
    import sys

    clean = tmp_path / "ok.npy"
    np.save(clean, np.zeros(3))
    done = subprocess.run(
        [sys.executable, "-m", "airlock", "scan", "-", str(clean)],
        check=False,
        input=data,
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout
    out = done.stdout.decode()
    assert "SKIPPED    -" not in out
    assert ("format.empty" if not data else "format.unsupported") in out
