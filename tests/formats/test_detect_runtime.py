"""The sandbox's runtime detection lists untrusted zips with airlock's own reader, never zipfile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.errors import UsageError
from airlock.sandbox._detect import detect_runtime
from tests.formats.zipcraft import Entry, build_zip

torch = pytest.importorskip("torch")


def _detect(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 3, os.SEEK_SET)
        runtime = detect_runtime(fd)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 3  # the offset the job reads from is untouched
        return runtime
    finally:
        os.close(fd)


def test_torch_and_torchscript_archives(tmp_path: Path) -> None:
    plain = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, plain)
    script = tmp_path / "s.pt"
    # scripted in a throwaway process: scripting here would mangle class names for other tests
    code = "import sys, torch\ntorch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), sys.argv[1])\n"
    subprocess.run([sys.executable, "-c", code, str(script)], check=True, timeout=120)
    assert _detect(plain) == "torch"
    assert _detect(script) == "torchscript"


def test_code_folder_named_in_a_crafted_archive(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(build_zip([Entry(b"m/data.pkl", b"\x80\x02N."), Entry(b"m/code/x.py", b"pass")]))
    assert _detect(path) == "torchscript"


@pytest.mark.parametrize("cut", [10, 60, -5])
def test_broken_zip_is_a_clear_error(tmp_path: Path, cut: int) -> None:
    raw = build_zip([Entry(b"m/data.pkl", b"\x80\x02N.")])
    path = tmp_path / "x.pt"
    path.write_bytes(raw[:cut])
    with pytest.raises(UsageError, match="pass --runtime"):
        _detect(path)


def test_zipfile_is_never_imported(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(build_zip([Entry(b"m/data.pkl", b"\x80\x02N.")]))
    code = (
        "import os, sys\n"
        "from airlock.sandbox._detect import detect_runtime\n"
        "assert 'zipfile' not in sys.modules, 'imported at start'\n"
        "print(detect_runtime(os.open(sys.argv[1], os.O_RDONLY)))\n"
        "assert 'zipfile' not in sys.modules, 'imported while detecting'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "torch"


def test_runtime_comes_from_the_format_the_scanner_sniffs(tmp_path: Path) -> None:
    """The format's record names the runtime: content is sniffed as the scanner sniffs it, so a
    protocol-0 pickle (what pickle.load reads, no PROTO) is torch's, and formats no sandbox
    runtime loads are a clear error naming the format, never guessed as torch."""
    proto0 = tmp_path / "p.bin"
    proto0.write_bytes(b"(dp0\nVw\np1\nI1\ns.")
    assert _detect(proto0) == "torch"
    keras = tmp_path / "m.keras"
    keras.write_bytes(
        build_zip([Entry(b"metadata.json", b"{}"), Entry(b"config.json", b'{"class_name": "X"}')])
    )
    with pytest.raises(UsageError, match=r"keras content: no sandbox runtime loads it; pass --runtime"):
        _detect(keras)
    safetensors = tmp_path / "m.safetensors"
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    safetensors.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 4)
    with pytest.raises(UsageError, match=r"safetensors content: no sandbox runtime"):
        _detect(safetensors)
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello, world\n")
    with pytest.raises(UsageError, match=r"cannot tell the runtime from the first bytes b'hello, w'"):
        _detect(text)
