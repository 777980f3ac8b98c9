"""Crafted checkpoints where a naive loader and torch part ways: airlock gives torch's tensors or refuses.

Every case is compared with ``torch.load(weights_only=True)`` of the same file, run in one
throwaway subprocess for the whole module (see :mod:`tests.load.craft`).
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import airlock
from airlock._cli import main
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits
from airlock.loading import convert
from tests.load.craft import St, T, airlock_load, legacy, torch_load, torch_zip

pytest.importorskip("torch")
pytest.importorskip("numpy")

F4 = struct.pack("<4f", 1.5, -2.0, 3.25, 7.0)  # 16 bytes


def _f(kind: str, key: str, numel: int, **view: Any) -> St:
    return St(kind, key, numel, **view)


#: name -> (file bytes, None: same tensors as torch | (airlock error class, message pattern))
Case = tuple[bytes, tuple[type[Exception], str] | None]

CASES: dict[str, Callable[[], Case]] = {
    # --- point 1: logical size bounded before anything is allocated
    "stride0 (2**32, 2**32) over 16 bytes": lambda: (
        torch_zip({"a": T(_f("FloatStorage", "0", 4), 0, (2**32, 2**32), (0, 0))}, {"0": F4}),
        (LimitError, r"more than a 64-bit size can hold"),
    ),
    "stride0 (2**14, 2**14) over 16 bytes": lambda: (
        torch_zip({"a": T(_f("FloatStorage", "0", 4), 0, (2**14, 2**14), (0, 0))}, {"0": F4}),
        None,
    ),
    # --- point 2: one storage object per key, the first reference's type wins (zip)
    "zip: Float then Int": lambda: (
        torch_zip(
            {
                "a": T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
                "b": T(_f("IntStorage", "0", 4), 0, (4,), (1,)),
            },
            {"0": F4},
        ),
        None,
    ),
    "zip: Int then Float": lambda: (
        torch_zip(
            {
                "a": T(_f("IntStorage", "0", 4), 0, (4,), (1,)),
                "b": T(_f("FloatStorage", "0", 4), 0, (2,), (2,)),
            },
            {"0": F4},
        ),
        None,
    ),
    "zip: Float then Double": lambda: (
        torch_zip(
            {
                "a": T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
                "b": T(_f("DoubleStorage", "0", 2), 0, (2,), (1,)),
            },
            {"0": F4},
        ),
        None,
    ),
    "zip: Untyped then Float": lambda: (
        torch_zip(
            {
                "a": T(_f("UntypedStorage", "0", 16), 0, (4,), (1,), dtype="float32"),
                "b": T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
            },
            {"0": F4},
        ),
        None,
    ),
    "zip: second reference declares more elements than the storage has": lambda: (
        torch_zip(
            {
                "a": T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
                "b": T(_f("DoubleStorage", "0", 4), 0, (4,), (1,)),
            },
            {"0": F4},
        ),
        None,
    ),
    "zip: view past the first type's bytes": lambda: (
        torch_zip(
            {
                "a": T(_f("FloatStorage", "0", 4), 0, (1,), (1,)),
                "b": T(_f("DoubleStorage", "0", 2), 0, (5,), (1,)),
            },
            {"0": F4},
        ),
        (FormatError, r"reaches byte 20 of a storage of 16 bytes"),
    ),
    "zip: an empty storage is not kept (each reference its own type)": lambda: (
        torch_zip(
            {
                "a": T(_f("FloatStorage", "0", 0), 0, (0,), (1,)),
                "b": T(_f("IntStorage", "0", 0), 0, (0,), (1,)),
            },
            {"0": b""},
        ),
        None,
    ),
    "zip: a persistent id popped before use still fixes the type": lambda: (
        torch_zip(
            {"b": T(_f("FloatStorage", "0", 4), 0, (4,), (1,))}, {"0": F4}, popped=_f("IntStorage", "0", 4)
        ),
        None,
    ),
    # --- point 2: legacy files cache storages and views by key
    "legacy: root reused with another dtype": lambda: (
        legacy(
            {
                "a": T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
                "b": T(_f("IntStorage", "0", 4), 0, (4,), (1,)),
            },
            [("0", 4, F4)],
        ),
        None,
    ),
    "legacy: view key reused with another offset": lambda: (
        legacy(
            {
                "a": T(_f("FloatStorage", "0", 4, view=("v", 0, 2)), 0, (2,), (1,)),
                "b": T(_f("FloatStorage", "0", 4, view=("v", 2, 2)), 0, (2,), (1,)),
            },
            [("0", 4, F4)],
        ),
        None,
    ),
    "legacy: view key equal to its root key": lambda: (
        legacy(
            {
                "a": T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
                "b": T(_f("FloatStorage", "0", 4, view=("0", 1, 2)), 0, (2,), (1,)),
            },
            [("0", 4, F4)],
        ),
        None,
    ),
    "legacy: view key that a root uses later": lambda: (
        legacy(
            {
                "a": T(_f("FloatStorage", "0", 4, view=("1", 1, 2)), 0, (2,), (1,)),
                "b": T(_f("IntStorage", "1", 2), 0, (2,), (1,)),
            },
            [("0", 4, F4)],
        ),
        None,
    ),
    "legacy: view reused with another dtype": lambda: (
        legacy(
            {
                "a": T(_f("IntStorage", "0", 4, view=("v", 1, 2)), 0, (2,), (1,)),
                "b": T(_f("FloatStorage", "0", 4, view=("v", 0, 4)), 0, (2,), (1,)),
            },
            [("0", 4, F4)],
        ),
        None,
    ),
    "legacy: key list naming a view": lambda: (
        legacy(
            {"a": T(_f("FloatStorage", "0", 4, view=("v", 0, 2)), 0, (2,), (1,))},
            [("0", 4, F4), ("v", 2, F4[:8])],
        ),
        (FormatError, r"names a view"),
    ),
    # --- point 3: byte order follows the storage type; lazy bits follow torch bit for bit
    "big: uint16 / uint32 / uint64 / complex32 / bits16 are not swapped (untyped storages)": lambda: (
        torch_zip(
            {
                name: T(_f("UntypedStorage", name, 8), 0, (8 // size,), (1,), dtype=name)
                for name, size in (
                    ("uint16", 2),
                    ("uint32", 4),
                    ("uint64", 8),
                    ("complex32", 4),
                    ("bits16", 2),
                )
            },
            {name: bytes(range(8)) for name in ("uint16", "uint32", "uint64", "complex32", "bits16")},
            byteorder=b"big",
        ),
        None,
    ),
    "big: swapped in the storage type's units, whatever the view's dtype": lambda: (
        torch_zip(
            {
                "a": T(_f("FloatStorage", "0", 4), 0, (2,), (1,), dtype="float64"),
                "b": T(_f("ComplexFloatStorage", "1", 2), 0, (2,), (1,)),
                "c": T(_f("FloatStorage", "0", 4), 1, (2,), (1,), dtype="int16"),
            },
            {"0": F4, "1": F4},
            byteorder=b"big",
        ),
        None,
    ),
    "neg on float16 NaNs (torch: quieted in loop tails only) is refused": lambda: (
        torch_zip(
            {"a": T(_f("HalfStorage", "0", 5), 0, (5,), (1,), meta={"neg": True})},
            {"0": struct.pack("<5H", 0x7C01, 0xFC01, 0x7D00, 0x3C00, 0x7C00)},
        ),
        (FormatError, r"lazy negation or conjugation of float16 data holding NaNs"),
    ),
    "neg on bfloat16 NaNs (torch: canonical in loop tails only) is refused": lambda: (
        torch_zip(
            {"a": T(_f("BFloat16Storage", "0", 3), 0, (3,), (1,), meta={"neg": True})},
            {"0": struct.pack("<3H", 0x7F81, 0xFF81, 0x3F80)},
        ),
        (FormatError, r"lazy negation or conjugation of bfloat16 data holding NaNs"),
    ),
    "conj: complex NaN signs flip bitwise; neg: float NaN signs flip bitwise": lambda: (
        torch_zip(
            {
                "c": T(_f("ComplexFloatStorage", "0", 2), 0, (2,), (1,), meta={"conj": True}),
                "f": T(_f("FloatStorage", "1", 4), 0, (4,), (1,), meta={"neg": True}),
            },
            {
                "0": struct.pack("<4I", 0x7F800001, 0, 0x7FC00000, 0xFF800001),
                "1": struct.pack("<4I", 0x7F800001, 0, 0x7FC00000, 0xFF800001),
            },
        ),
        None,
    ),
    "neg on half-precision data without NaNs, 200 elements (vector body and scalar tail)": lambda: (
        torch_zip(
            {
                "h": T(_f("HalfStorage", "0", 200), 0, (200,), (1,), meta={"neg": True}),
                "b": T(_f("BFloat16Storage", "1", 200), 3, (197,), (1,), meta={"neg": True}),
                "c": T(_f("UntypedStorage", "2", 16), 0, (4,), (1,), dtype="complex32", meta={"conj": True}),
            },
            {
                "0": struct.pack("<200H", *[(k * 331) % 0x7C00 | (k % 2) << 15 for k in range(200)]),
                "1": struct.pack("<200H", *[0x7F80 if k % 9 == 0 else (k * 97) % 0x7F80 for k in range(200)]),
                "2": struct.pack("<8H", 0x7C00, 0, 0x8000, 0x3C00, 1, 0xFC00, 0x7BFF, 2),
            },
        ),
        None,
    ),
    "neg and neg+conj on finite nonzero complex parts, 20 elements (vector body and scalar tail)": lambda: (
        torch_zip(
            {
                "n": T(_f("ComplexFloatStorage", "0", 20), 0, (20,), (1,), meta={"neg": True}),
                "nc": T(_f("ComplexFloatStorage", "0", 20), 0, (20,), (1,), meta={"neg": True, "conj": True}),
                "d": T(_f("ComplexDoubleStorage", "1", 20), 0, (20,), (1,), meta={"neg": True}),
            },
            {
                "0": struct.pack("<40f", *[(-1.5) ** k for k in range(1, 41)]),
                "1": struct.pack("<40d", *[float("inf") if k % 7 == 0 else 2.5**-k for k in range(1, 41)]),
            },
        ),
        None,
    ),
    "neg on complex NaN / zero parts (torch's result depends on its kernel) is refused": lambda: (
        torch_zip(
            {"n": T(_f("ComplexFloatStorage", "0", 20), 0, (20,), (1,), meta={"neg": True})},
            {"0": struct.pack("<40I", *([0x7F800001, 0] * 20))},
        ),
        (FormatError, r"lazy negation on complex64 data holding NaN or signed zero parts"),
    ),
    "conj on complex32 NaN parts is refused": lambda: (
        torch_zip(
            {"a": T(_f("UntypedStorage", "0", 8), 0, (2,), (1,), dtype="complex32", meta={"conj": True})},
            {"0": struct.pack("<4H", 0x7C01, 0x7C01, 1, 0xFC02)},
        ),
        (FormatError, r"of float16 data holding NaNs"),
    ),
    "neg: integers wrap": lambda: (
        torch_zip(
            {
                "a": T(_f("CharStorage", "0", 4), 0, (4,), (1,), meta={"neg": True}),
                "b": T(_f("LongStorage", "1", 1), 0, (1,), (1,), meta={"neg": True}),
            },
            {"0": bytes([0x80, 1, 0, 0xFF]), "1": struct.pack("<q", -(2**63))},
        ),
        None,
    ),
    "neg on uint16 (torch cannot resolve it) is refused": lambda: (
        torch_zip(
            {"a": T(_f("UntypedStorage", "0", 4), 0, (2,), (1,), dtype="uint16", meta={"neg": True})},
            {"0": b"\x01\x02\x03\x04"},
        ),
        (FormatError, r"lazy negation on a uint16 tensor"),
    ),
    # --- point 4: what weights_only loads
    "every member deflated": lambda: (
        torch_zip({"a": T(_f("FloatStorage", "0", 4), 0, (4,), (1,))}, {"0": F4}, deflate=True),
        None,
    ),
    "legacy, pickle protocol 3": lambda: (
        legacy({"a": T(_f("FloatStorage", "0", 4), 0, (4,), (1,))}, [("0", 4, F4)], protocol=3),
        None,
    ),
    "legacy, pickle protocol 4": lambda: (
        legacy({"a": T(_f("FloatStorage", "0", 4), 0, (4,), (1,))}, [("0", 4, F4)], protocol=4),
        None,
    ),
    "dict keys that are not str / int": lambda: (
        torch_zip(
            {
                1.5: T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
                (1, "x"): T(_f("FloatStorage", "0", 4), 0, (2,), (1,)),
                None: T(_f("FloatStorage", "0", 4), 0, (1,), (1,)),
                True: T(_f("FloatStorage", "0", 4), 1, (1,), (1,)),
                b"k": T(_f("FloatStorage", "0", 4), 2, (1,), (1,)),
            },
            {"0": F4},
        ),
        None,
    ),
    "keys that flatten to one name": lambda: (
        torch_zip(
            {
                "a.b": T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
                "a": {"b": T(_f("FloatStorage", "0", 4), 0, (2,), (1,))},
            },
            {"0": F4},
        ),
        (FormatError, r"same name 'a\.b': keys \['a\.b'\] and \['a'\]\['b'\]"),
    ),
    "int and str keys that flatten to one name": lambda: (
        torch_zip(
            {
                1: T(_f("FloatStorage", "0", 4), 0, (4,), (1,)),
                "1": T(_f("FloatStorage", "0", 4), 0, (2,), (1,)),
            },
            {"0": F4},
        ),
        (FormatError, r"same name '1': keys \[1\] and \['1'\]"),
    ),
}


#: the tests that take ``crafted`` run in one pytest-xdist process: torch reads the cases once
pytestmark = pytest.mark.xdist_group("torch-crafted")


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("crafted")
    built: dict[str, tuple[Path, Any]] = {}
    for index, (name, make) in enumerate(CASES.items()):
        data, expect = make()
        path = folder / f"case{index}.pt"
        path.write_bytes(data)
        built[name] = (path, expect)
    torch_says = torch_load([p for p, _ in built.values()])
    return {name: (p, expect, torch_says[str(p)]) for name, (p, expect) in built.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_same_tensors_as_torch_or_refused(
    name: str, crafted: dict[str, tuple[Path, Any, dict[str, Any]]]
) -> None:
    path, expect, torch_says = crafted[name]
    if expect is None:
        assert "ok" in torch_says, torch_says  # the fixture is a real checkpoint torch loads
        assert airlock_load(path) == torch_says
        return
    kind, pattern = expect
    with pytest.raises(kind, match=pattern):
        airlock.load(path)


def test_stride0_overflow_is_exit_2_without_a_traceback(
    crafted: dict[str, tuple[Path, Any, dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = crafted["stride0 (2**32, 2**32) over 16 bytes"][0]
    assert crafted["stride0 (2**32, 2**32) over 16 bytes"][2]["error"].startswith("RuntimeError: numel")
    for argv in (["load", str(path)], ["convert", str(path), "-o", str(tmp_path / "out.safetensors")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "more than a 64-bit size can hold" in err and "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()


_RSS = r"""
import sys
from airlock.loading import convert
import numpy  # noqa: F401  (imported before the baseline)

def peak_kib():
    # VmHWM belongs to this process's own memory (ru_maxrss would include the forking parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

base = peak_kib()
convert(sys.argv[1], sys.argv[2])
print(peak_kib() - base)
"""


def test_stride0_convert_memory_stays_near_the_storage(tmp_path: Path) -> None:
    shape = (2**11, 2**13)  # float32: 64 MiB written from a 16-byte storage
    src = tmp_path / "s0.pt"
    src.write_bytes(torch_zip({"a": T(_f("FloatStorage", "0", 4), 0, shape, (0, 0))}, {"0": F4}))
    out = tmp_path / "s0.safetensors"
    script = tmp_path / "rss.py"
    script.write_text(_RSS)
    proc = subprocess.run(
        [sys.executable, str(script), str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    grown_kib = int(proc.stdout.strip().splitlines()[-1])
    assert out.stat().st_size > 64 * 2**20
    assert grown_kib < 40 * 1024, f"peak RSS grew {grown_kib} KiB writing a 64 MiB stride-0 tensor"


def test_stride0_expansion_is_bounded_by_an_explicit_limit(tmp_path: Path) -> None:
    shape = (2**10, 2**8)  # float32: 1 MiB from 16 bytes; the view's own span is 4 bytes
    src = tmp_path / "s0.pt"
    src.write_bytes(torch_zip({"a": T(_f("FloatStorage", "0", 4), 0, shape, (0, 0))}, {"0": F4}))
    repeated = 2**20 - 4
    dst = tmp_path / "out.safetensors"
    with pytest.raises(LimitError, match=r"max_decompressed_bytes"):
        convert(src, dst, limits=Limits(max_decompressed_bytes=repeated - 1))
    assert not dst.exists()
    convert(src, dst, limits=Limits(max_decompressed_bytes=repeated))
    assert dst.stat().st_size > 2**20


def test_refusals_name_the_keys(crafted: dict[str, tuple[Path, Any, dict[str, Any]]]) -> None:
    # torch silently keeps the last of two tensors that flatten to one name; airlock names both
    path, _, torch_says = crafted["keys that flatten to one name"]
    assert list(torch_says["ok"]) == ["a.b"]
    with pytest.raises(FormatError) as info:
        airlock.load(path)
    assert re.search(r"\['a\.b'\].*\['a'\]\['b'\]", str(info.value))


_MISALIGNED = r"""
import sys
import airlock
for name, t in airlock.load(sys.argv[1], framework="pt").items():
    assert t.data_ptr() % t.element_size() == 0 or t.numel() == 0, (name, t.data_ptr())
    t.contiguous()  # torch's complex kernels crash on a misaligned complex128
print("ok")
"""


def test_torch_tensors_are_aligned_even_when_the_zip_member_is_not(tmp_path: Path) -> None:
    # stdlib zipfile does not align members as torch's writer does: the data starts anywhere
    src = tmp_path / "misaligned.pt"
    state = {
        "c": T(_f("ComplexDoubleStorage", "0", 2), 0, (1, 1, 3), (1, 1, 0)),
        "f": T(_f("FloatStorage", "1", 4), 1, (3,), (1,)),
    }
    src.write_bytes(torch_zip(state, {"0": bytes(range(32)), "1": F4}, prefix="x"))
    script = tmp_path / "run.py"
    script.write_text(_MISALIGNED)
    proc = subprocess.run(
        [sys.executable, str(script), str(src)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-1000:]


def test_quantized_and_sparse_tensors_load_as_their_parts(tmp_path: Path) -> None:
    import torch

    state = {
        "q": torch.quantize_per_tensor(torch.tensor([1.0, -2.0, 3.5]), 0.5, 3, torch.qint8),
        "qu": torch.quantize_per_tensor(torch.linspace(0, 4, 6).reshape(2, 3), 0.25, 10, torch.quint8),
        "q32": torch.quantize_per_tensor(torch.tensor([1.0, 2.0]), 0.1, 0, torch.qint32),
        "qc": torch.quantize_per_channel(
            torch.arange(6.0).reshape(2, 3),
            torch.tensor([0.1, 0.2], dtype=torch.float64),
            torch.tensor([0, 1]),
            0,
            torch.quint8,
        ),
        "coo": torch.sparse_coo_tensor(
            torch.tensor([[0, 1, 1], [2, 0, 1]]), torch.tensor([3.0, 4.0, 5.0]), (2, 3)
        ),
        "csr": torch.tensor([[0.0, 1.0], [2.0, 0.0]]).to_sparse_csr(),
        "csc": torch.tensor([[0.0, 1.0], [2.0, 3.0]]).to_sparse_csc(),
        "dense": torch.ones(2),
    }
    path = tmp_path / "qs.pt"
    torch.save(state, path)
    torch_says = torch_load([path])[str(path)]
    got = airlock_load(path)
    assert "ok" in got and got == torch_says
    assert {"q", "q.scale", "q.zero_point", "qc.scales", "qc.zero_points", "qc.axis", "coo.indices", "coo.values",
            "coo.size", "csr.crow_indices", "csc.row_indices"} <= set(got["ok"])  # fmt: skip
    assert got["ok"]["q"][0] == "int8" and got["ok"]["qu"][0] == "uint8" and got["ok"]["q32"][0] == "int32"


def test_convert_refuses_a_quantized_tensor_by_name(tmp_path: Path) -> None:
    import torch

    src = tmp_path / "q.pt"
    torch.save(
        {"w": torch.ones(2), "layer.q": torch.quantize_per_tensor(torch.ones(3), 0.5, 0, torch.qint8)}, src
    )
    dst = tmp_path / "q.safetensors"
    with pytest.raises(FormatError, match=r"tensor 'layer\.q' is quantized \(qint8 \(per_tensor_affine\)\)"):
        convert(src, dst)
    assert not dst.exists()
    sparse = tmp_path / "s.pt"
    torch.save({"s": torch.eye(3).to_sparse()}, sparse)
    convert(sparse, tmp_path / "s.safetensors")  # components are dense tensors
