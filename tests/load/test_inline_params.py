"""Quantization parameters and sparse sizes are unbounded pickle integers; torch unpacks them as
C ``int64_t`` / ``double`` and refuses the file when one does not fit. airlock must refuse it too,
with a FormatError (exit 2), never a ``struct.error`` / ``OverflowError`` traceback."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest

import airlock
from airlock._cli import main
from airlock.errors import FormatError
from tests.load.craft import St, T, torch_load, torch_zip

torch = pytest.importorskip("torch")


class _Q:
    """``_rebuild_qtensor`` of 4 qint8 values with per-tensor (scale, zero_point)."""

    def __init__(self, scale: Any, zero_point: Any) -> None:
        self.scale, self.zero_point = scale, zero_point

    def __reduce__(self) -> tuple[Any, ...]:
        qparams = (torch.per_tensor_affine, self.scale, self.zero_point)
        args: tuple[Any, ...] = (
            St("QInt8Storage", "0", 4),
            0,
            (4,),
            (1,),
            qparams,
            False,
            collections.OrderedDict(),
        )
        return (torch._utils._rebuild_qtensor, args)


class _QC:
    """Per-channel qint8 with an ``axis``."""

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def __reduce__(self) -> tuple[Any, ...]:
        scales = T(St("DoubleStorage", "1", 1), 0, (1,), (1,))
        points = T(St("LongStorage", "2", 1), 0, (1,), (1,))
        qparams = (torch.per_channel_affine, scales, points, self.axis)
        args: tuple[Any, ...] = (
            St("QInt8Storage", "0", 4),
            0,
            (1, 4),
            (4, 1),
            qparams,
            False,
            collections.OrderedDict(),
        )
        return (torch._utils._rebuild_qtensor, args)


class _Sparse:
    def __init__(self, size: tuple[int, ...]) -> None:
        self.size = size

    def __reduce__(self) -> tuple[Any, ...]:
        indices = T(St("LongStorage", "1", 1), 0, (1, 1), (1, 1))
        values = T(St("FloatStorage", "2", 1), 0, (1,), (1,))
        return (torch._utils._rebuild_sparse_tensor, (torch.sparse_coo, (indices, values, self.size, None)))


_Q_DATA = {"0": b"\x01\x02\x03\x04"}
_QC_DATA = {"0": b"\x01\x02\x03\x04", "1": bytes(8), "2": bytes(8)}
_SP_DATA = {"1": bytes(8), "2": bytes(4)}

#: (name, object, storages, the value that does not fit)
CASES = [
    ("zero_point_2_63", _Q(0.5, 2**63), _Q_DATA),
    ("zero_point_below_int64", _Q(0.5, -(2**63) - 1), _Q_DATA),
    ("scale_beyond_double", _Q(10**400, 0), _Q_DATA),
    ("axis_2_64", _QC(2**64), _QC_DATA),
    ("sparse_size_2_63", _Sparse((2**63,)), _SP_DATA),
]
#: the largest values that fit: loaded by airlock (bounds at N-1 / N)
FITS = [
    ("zero_point_max", _Q(0.5, 2**63 - 1), _Q_DATA),
    ("zero_point_min", _Q(0.5, -(2**63)), _Q_DATA),
    ("scale_int", _Q(10**300, 0), _Q_DATA),
]


def _write(tmp_path: Path, cases: list[tuple[str, Any, dict[str, bytes]]]) -> list[Path]:
    paths = []
    for name, obj, data in cases:
        path = tmp_path / f"{name}.pt"
        path.write_bytes(torch_zip({"w": obj}, data))
        paths.append(path)
    return paths


def test_out_of_range_parameters_are_a_format_error(tmp_path: Path) -> None:
    paths = _write(tmp_path, CASES)
    torch_says = torch_load(paths)
    for path in paths:
        assert "error" in torch_says[str(path)], (path.name, torch_says[str(path)])  # torch refuses it
        with pytest.raises(FormatError, match=r"does not fit (int64|float64)"):
            airlock.load(path)
        assert main(["load", str(path)]) == 2
        assert main(["convert", str(path), "-o", str(tmp_path / "out.safetensors")]) == 2
        assert not (tmp_path / "out.safetensors").exists()


def test_parameters_at_the_bounds_load(tmp_path: Path) -> None:
    paths = _write(tmp_path, FITS)
    for path, (_name, obj, _data) in zip(paths, FITS, strict=True):
        got = airlock.load(path)
        assert got["w.zero_point"].item() == int(obj.zero_point)
        assert got["w.scale"].item() == float(obj.scale)
