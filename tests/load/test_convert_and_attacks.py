"""airlock convert (library and CLI), refusals of every attack fixture, and the no-unpickler grep."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock._cli import main
from airlock.errors import AirlockError, PolicyError, UsageError
from airlock.loading import convert
from tests.fixtures.attacks import ATTACKS, Attack
from tests.formats.helpers import payload, rebuild_zip
from tests.load import corpus
from tests.load.helpers import assert_same

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _convertible(path: Path) -> Path:
    torch.save(
        {
            "w": (w := torch.randn(5, 6)),
            "tied": w,
            "w_t": w.t(),
            "row": w[2:],
            "bf16": torch.randn(3).to(torch.bfloat16),
            "f8": torch.randn(4).to(torch.float8_e4m3fn),
            "u16": torch.arange(3).to(torch.uint16),
            "c64": torch.tensor([1 + 2j]).conj(),
            "nested": {"b": torch.ones(2, dtype=torch.bool)},
        },
        path,
    )
    return path


def test_convert_file_round_trips_through_safetensors(tmp_path: Path) -> None:
    src = _convertible(tmp_path / "m.pt")
    dst = tmp_path / "m.safetensors"
    [done] = convert(src, dst)
    loaded = safetensors_torch.load_file(dst)
    expected = torch.load(src, weights_only=True)
    names = {"w", "tied", "w_t", "row", "bf16", "f8", "u16", "c64"}
    assert set(loaded) == names | {"nested.b"}
    for name in names:
        assert_same(loaded[name], expected[name], name)
    assert_same(loaded["nested.b"], expected["nested"]["b"], "nested.b")
    from safetensors import safe_open

    with safe_open(dst, "pt") as fh:
        meta = fh.metadata()
    assert meta["airlock.source_sha256"] == _sha256(src) == done.source_sha256
    assert meta["format"] == "pt"


def test_convert_big_endian_and_legacy(tmp_path: Path) -> None:
    for src in (corpus.big_endian(tmp_path / "be.pt"), corpus.views(tmp_path / "legacy.pt", legacy=True)):
        dst = tmp_path / f"{src.stem}.safetensors"
        convert(src, dst)
        loaded = safetensors_torch.load_file(dst)
        for name, tensor in airlock.load(src, framework="pt").items():
            assert_same(loaded[name], tensor, name)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    src = _convertible(tmp_path / "m.pt")
    dst = tmp_path / "m.safetensors"
    dst.write_bytes(b"keep me")
    with pytest.raises(UsageError, match=r"exists; pass --force"):
        convert(src, dst)
    assert dst.read_bytes() == b"keep me"
    assert main(["convert", str(src), "-o", str(dst)]) == 2
    assert main(["convert", str(src), "-o", str(dst), "--force"]) == 0
    assert set(safetensors_torch.load_file(dst)) >= {"w", "tied"}
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_unconvertible_dtype_leaves_nothing_behind(tmp_path: Path) -> None:
    torch.save({"c": torch.zeros(2, dtype=torch.complex128)}, tmp_path / "c.pt")
    with pytest.raises(AirlockError, match=r"safetensors has no complex128 dtype"):
        convert(tmp_path / "c.pt", tmp_path / "c.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_sharded_hugging_face_folder(tmp_path: Path) -> None:
    src = corpus.hf_sharded(tmp_path / "hf")
    dst = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(dst)]) == 0
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"].values()) == [
        "model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model-00002-of-00002.safetensors",
    ]  # fmt: skip
    total = 0
    for shard in sorted(src.glob("pytorch_model-*.bin")):
        out = dst / shard.name.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        loaded = safetensors_torch.load_file(out)
        for name, tensor in torch.load(shard, weights_only=True).items():
            assert index["weight_map"][name] == out.name
            assert_same(loaded[name], tensor, name)
            total += tensor.numel() * tensor.element_size()
    assert index["metadata"]["total_size"] == total


def test_index_naming_a_shard_outside_the_folder_is_refused(tmp_path: Path) -> None:
    src = corpus.hf_sharded(tmp_path / "hf")
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"x": "../m.bin"}}))
    with pytest.raises(AirlockError, match=r"not a plain file name"):
        convert(src, tmp_path / "out")


# -- attacks: refused by load and by convert, payload never ran --------------------------------------


def _refused(path: Path, marker: Path, tmp_path: Path) -> None:
    with pytest.raises(AirlockError) as info:
        airlock.load(path)
    assert isinstance(info.value, PolicyError | airlock.FormatError)
    out = tmp_path / "converted.safetensors"
    code = main(["convert", str(path), "-o", str(out)])
    assert code in (1, 2)
    assert not out.exists()
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack_fixture_is_refused(attack: Attack, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = attack.build(tmp_path, marker)
    with pytest.raises(PolicyError, match=r"refusing to load: .*MALICIOUS"):
        airlock.load(path)
    assert main(["convert", str(path), "-o", str(tmp_path / "c.safetensors")]) == 1
    _refused(path, marker, tmp_path)


@pytest.mark.parametrize("member", ["data.pkl", "data/0", "extra.pkl"])
def test_torch_zip_attacks_are_refused(tmp_path: Path, member: str) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "m.pt"
    torch.save({"w": torch.ones(3)}, src)
    raw = src.read_bytes()
    if member == "extra.pkl":
        raw = rebuild_zip(raw, {}, add=[("m/extra.pkl", payload(marker))])
    else:
        raw = rebuild_zip(raw, {f"m/{member}": payload(marker)})
    evil = tmp_path / "evil.pt"
    evil.write_bytes(raw)
    _refused(evil, marker, tmp_path)


# -- acceptance 3: no unpickler anywhere on this path ---------------------------------------------------

_FORBIDDEN_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "yaml"}
)
_FORBIDDEN_CALLS = frozenset(
    {"torch.load", "torch.jit.load", "eval", "exec", "yaml.load", "np.load", "numpy.load"}
)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _violations(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}")
                for a in node.names
                if a.name.split(".")[0] in _FORBIDDEN_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _FORBIDDEN_MODULES:
            found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in _FORBIDDEN_CALLS or (name or "").startswith("pickle."):
                found.append((node.lineno, f"call {name}"))
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append((node.lineno, "allow_pickle not False"))
    return found


def test_the_grep_catches_an_unpickler() -> None:
    bad = "import pickle\nfrom yaml import load\ntorch.load(f)\nnp.load(f, allow_pickle=True)\neval('1')\n"
    assert len(_violations(ast.parse(bad))) == 6


def test_no_unpickler_in_the_loader_path() -> None:
    root = Path(airlock.__file__).parent
    files = [root / "loading.py", root / "_cli" / "convert_cmd.py", root / "_cli" / "load_cmd.py"]
    for folder in ("_load", "_analysis", "_formats"):
        files += sorted((root / folder).glob("*.py"))
    assert len(files) > 20
    hits = [
        f"{file.relative_to(root)}:{line}: {what}"
        for file in files
        for line, what in _violations(ast.parse(file.read_text(), str(file)))
    ]
    assert hits == []


def test_import_airlock_load_imports_no_numpy(tmp_path: Path) -> None:
    code = "import sys, airlock\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {'numpy', 'torch', 'ml_dtypes'}))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"
