"""airlock.load against torch.load(weights_only=True): every tensor bit-exact, every dtype, views, legacy."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest

import airlock
from airlock.errors import FormatError, PolicyError, UsageError
from tests.fixtures import benign
from tests.load import corpus
from tests.load.helpers import assert_same

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, torch.Tensor):
        out[prefix or "tensor"] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            out.update(_flat(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def _check(path: Path, **kwargs: Any) -> dict[str, Any]:
    expected = _flat(torch.load(path, weights_only=True))
    for framework in ("np", "pt"):
        got = airlock.load(path, framework=framework, **kwargs)
        assert sorted(got) == sorted(expected)
        for name, tensor in expected.items():
            assert_same(got[name], tensor, name)
    return expected


def test_every_dense_dtype_is_bit_exact(tmp_path: Path) -> None:
    expected = _check(corpus.all_dtypes(tmp_path / "dtypes.pt"))
    assert {str(t.dtype).removeprefix("torch.") for t in expected.values()} >= {
        "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "complex32", "uint64", "bool", "bits8",
    }  # fmt: skip


def test_numpy_dtypes_are_the_natural_ones(tmp_path: Path) -> None:
    import ml_dtypes

    got = airlock.load(corpus.all_dtypes(tmp_path / "dtypes.pt"))
    assert got["bfloat16"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert got["float8_e4m3fn"].dtype == np.dtype(ml_dtypes.float8_e4m3fn)
    assert got["float32"].dtype == np.float32
    assert got["complex32"].dtype.names == ("real", "imag")
    assert got["bits8"].dtype.names == ("bits8",)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_views_tied_weights_and_parameters(tmp_path: Path, legacy: bool) -> None:
    path = corpus.views(tmp_path / "views.pt", legacy=legacy)
    expected = _check(path)
    assert {"w", "tied", "w_t", "row", "col", "strided", "param", "nested.list.0", "empty"} <= set(expected)
    got = airlock.load(path, framework="pt")
    # tied weights keep sharing memory, as with torch.load
    assert got["w"].data_ptr() == got["tied"].data_ptr()
    assert not got["w_t"].is_contiguous()


def test_big_endian_byteorder_record(tmp_path: Path) -> None:
    _check(corpus.big_endian(tmp_path / "be.pt"))


def test_benign_corpus_builders(tmp_path: Path) -> None:
    (legacy_views, *_rest) = [p for p in benign.torch_views_and_legacy(tmp_path) if p.name == "legacy.pt"]
    _check(legacy_views)
    for path in benign.hf_folder(tmp_path)[0].glob("pytorch_model-*.bin"):
        _check(path)


def test_training_checkpoint_needs_an_explicit_allowance(tmp_path: Path) -> None:
    path = benign.torch_training_state(tmp_path)[0]
    with pytest.raises(PolicyError, match=r"argparse\.Namespace .*not a constructor airlock\.load realises"):
        airlock.load(path)
    got = airlock.load(path, allow=["argparse.Namespace"])
    assert_same(got["model.weight"], torch.load(path, weights_only=False)["model"]["weight"], "w")
    assert "epoch" not in got


def test_arrays_are_writable_and_never_write_the_file(tmp_path: Path) -> None:
    path = corpus.views(tmp_path / "v.pt")
    before = path.read_bytes()
    got = airlock.load(path)
    got["w"][0, 0] = 1234.0
    assert path.read_bytes() == before


def test_packed_quantized_storages_are_refused_by_name(tmp_path: Path) -> None:
    packed = torch.quantize_per_tensor(torch.tensor([1.0, 2.0, 3.0, 4.0]), 0.5, 1, torch.quint4x2)
    torch.save({"q": packed}, tmp_path / "q4.pt")
    with pytest.raises(FormatError, match=r"torch\.QUInt4x2Storage holds packed quint4x2 data"):
        airlock.load(tmp_path / "q4.pt")
    assert set(airlock.load(benign.torch_state_dict_all_dtypes(tmp_path)[0])) >= {
        "quantized",
        "quantized.scale",
    }


def test_full_module_is_refused_naming_the_class(tmp_path: Path) -> None:
    path = benign.torch_full_module(tmp_path)[0]
    with pytest.raises(PolicyError, match=r"torch\.nn\.modules\.container\.Sequential .*not a constructor"):
        airlock.load(path)


def test_numpy_npy_npz_and_pickled_arrays(tmp_path: Path) -> None:
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    b = np.asfortranarray(np.linspace(0, 1, 6).reshape(2, 3))
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "z.npz", a=a, b=b)
    np.savez_compressed(tmp_path / "zc.npz", a=a, b=b)
    assert np.array_equal(airlock.load(tmp_path / "a.npy")["array"], a)
    for name in ("z.npz", "zc.npz"):
        got = airlock.load(tmp_path / name)
        assert np.array_equal(got["a"], a) and np.array_equal(got["b"], b)
        assert got["b"].flags.f_contiguous
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"x": a, "y": [b]}, protocol=2))
    got = airlock.load(tmp_path / "p.pkl")
    assert np.array_equal(got["x"], a) and np.array_equal(got["y.0"], b)


def test_npy_object_array_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PolicyError, match=r"object array"):
        airlock.load(tmp_path / "o.npy")


def test_safetensors_passthrough(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(4, dtype=torch.bfloat16)}
    save_file(tensors, tmp_path / "m.safetensors")
    got = airlock.load(tmp_path / "m.safetensors", framework="pt")
    for name, tensor in tensors.items():
        assert_same(got[name], tensor, name)


def test_bad_framework_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="framework must be 'np' or 'pt'"):
        airlock.load(tmp_path / "x", framework="tf")  # type: ignore[arg-type]


def _patched(tmp_path: Path, old: bytes, new: bytes) -> Path:
    """The views checkpoint with bytes of its data.pkl replaced (same length keeps the zip valid)."""
    src = corpus.views(tmp_path / "v.pt")
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new, 1)
            zout.writestr(info, data)
    path = tmp_path / "patched.pt"
    path.write_bytes(out.getvalue())
    return path


def test_storage_size_that_lies_is_an_error(tmp_path: Path) -> None:
    # 'w' is a 30-element FloatStorage: the persistent id claims 31 elements
    path = _patched(tmp_path, b"X\x03\x00\x00\x00cpuq\x06K\x1e", b"X\x03\x00\x00\x00cpuq\x06K\x1f")
    with pytest.raises(FormatError, match=r"storage '0' is 31 x 4 = 124 bytes, its member holds 120"):
        airlock.load(path)


def test_stride_outside_the_storage_is_an_error(tmp_path: Path) -> None:
    # w: size (5, 6) stride (6, 1) -> stride (7, 1) walks past the 30-element storage
    path = _patched(tmp_path, b"K\x05K\x06\x86q\x08K\x06K\x01\x86", b"K\x05K\x06\x86q\x08K\x07K\x01\x86")
    with pytest.raises(FormatError, match=r"reaches byte 136 of a storage of 120 bytes"):
        airlock.load(path)
