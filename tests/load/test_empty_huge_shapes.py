"""Empty tensors with huge non-zero dimensions: torch refuses some (its running element count
overflows before the 0) and numpy cannot make others (it bounds the non-zero dimensions times the
item size by a signed 64-bit size). airlock refuses both with a LimitError (exit 2) derived from
that one bound, never with numpy's ValueError traceback; at the bound they load."""

from __future__ import annotations

from pathlib import Path

import pytest

import airlock
from airlock._cli import main
from airlock.errors import LimitError
from tests.load.craft import St, T, torch_load, torch_zip

_MAX = 2**63 - 1


def _write(path: Path, size: tuple[int, ...]) -> Path:
    stride = tuple(1 for _ in size)
    path.write_bytes(torch_zip({"w": T(St("FloatStorage", "0", 1), 0, size, stride)}, {"0": bytes(4)}))
    return path


#: float32 (4 bytes): the non-zero dimensions times 4 exceed 2**63 - 1
TOO_BIG = [(2**40, 2**40, 0), (2**62, 0), (0, 2**62, 4), (2**61, 0), (0, 2**31, 2**30)]
#: exactly at the bound, or below it
FITS = [(2**61 - 1, 0), (0, 2**61 - 1), (3, 0, 2**59)]


def test_huge_empty_tensors_are_a_limit_error(tmp_path: Path) -> None:
    paths = [_write(tmp_path / f"{i}.pt", size) for i, size in enumerate(TOO_BIG)]
    torch_says = torch_load(paths)
    assert "error" in torch_says[str(paths[0])]  # torch: numel: integer multiplication overflow
    assert "ok" in torch_says[str(paths[1])]  # torch loads this one; numpy cannot make it
    for path, size in zip(paths, TOO_BIG, strict=True):
        spanned = 4
        for n in size:
            spanned *= n or 1
        assert spanned > _MAX
        for framework in ("np", "pt"):
            with pytest.raises(LimitError, match=f"spans {spanned} bytes"):
                airlock.load(path, framework=framework)
        assert main(["load", str(path)]) == 2
        assert main(["convert", str(path), "-o", str(tmp_path / "o.safetensors")]) == 2
        assert not (tmp_path / "o.safetensors").exists()


def test_empty_tensors_at_the_bound_load(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    for i, size in enumerate(FITS):
        path = _write(tmp_path / f"{i}.pt", size)
        assert airlock.load(path)["w"].shape == size
        assert tuple(airlock.load(path, framework="pt")["w"].shape) == size
