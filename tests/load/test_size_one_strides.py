"""A size-1 dimension may carry any stride torch accepts (it addresses nothing): 2**62 elements
used to overflow numpy's byte strides and escape as a bare ValueError from load and convert."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock.loading import convert
from tests.load.craft import St, T, airlock_load, torch_load, torch_zip

_DATA = struct.pack("<6f", *range(6))
_CASES = {
    "stride_2_62": ((1,), (2**62,)),
    "stride_2_63_minus_1": ((1,), (2**63 - 1,)),
    "leading_2_61": ((1, 2), (2**61, 1)),
    "all_size_one": ((1, 1, 1), (2**62, 2**62, 2**62)),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_huge_stride_on_size_one_dimension_loads_as_torch_does(tmp_path: Path, name: str) -> None:
    shape, stride = _CASES[name]
    path = tmp_path / "t.pt"
    path.write_bytes(
        torch_zip({"a": T(St("FloatStorage", "0", 6), 5 - shape[-1] + 1, shape, stride)}, {"0": _DATA})
    )
    expected = torch_load([path])[str(path)]
    assert "ok" in expected, expected
    assert airlock_load(path) == expected
    got = airlock.load(path, framework="pt")["a"]
    assert tuple(got.shape) == shape
    assert airlock.load(path)["a"].tolist() == got.tolist()

    out = tmp_path / "t.safetensors"
    convert(path, out)
    read = subprocess.run(
        [sys.executable, "-c", f"import safetensors.numpy as s; a = s.load_file({str(out)!r})['a']; "
         "print(a.shape, a.ravel().tolist())"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert read.stdout.split() == f"{shape} {got.reshape(-1).tolist()}".split()
