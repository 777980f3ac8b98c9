"""TorchScript archives: reported as executable code; dangerous operators found in the source."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airlock._formats.torchscript import dangerous_ops
from airlock.results import Severity, Verdict
from tests.formats.helpers import rebuild_zip, rules, scan_one

torch = pytest.importorskip("torch")


class _Small(torch.nn.Module):  # type: ignore[misc,name-defined]
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[name-defined]
        return torch.relu(self.lin(x))


def _scripted(tmp_path: Path) -> Path:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_Small()), str(path))
    return path


def _inject(path: Path, line: str, out: Path) -> Path:
    """The archive with ``line`` added at the top of the model's forward()."""
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith("test_torchscript.py"))
        source = zf.read(name).decode()
    marker_line = "    lin = self.lin\n"
    assert marker_line in source, source
    patched = source.replace(marker_line, f"    {line}\n" + marker_line, 1)
    out.write_bytes(rebuild_zip(path.read_bytes(), {name: patched.encode()}))
    return out


def test_benign_torchscript_is_reported_as_code(tmp_path: Path) -> None:
    report = scan_one(_scripted(tmp_path))
    code = [f for f in report.findings if f.rule == "torchscript.code"]
    assert len(code) == 1 and code[0].severity is Severity.SUSPICIOUS
    assert "code/__torch__/torch/nn/modules/linear.py" in code[0].message
    assert "torchscript.dangerous-op" not in rules(report)
    assert report.verdict is not Verdict.CLEAN


def test_cve_2025_32434_torchscript_writing_a_file(tmp_path: Path) -> None:
    target = tmp_path / "written-by-model"
    evil = _inject(_scripted(tmp_path), f'torch.save(x, "{target}")', tmp_path / "evil.pt")
    report = scan_one(evil)
    hits = [f for f in report.findings if f.rule == "torchscript.dangerous-op"]
    assert report.verdict is Verdict.MALICIOUS
    assert [h.callable for h in hits] == ["aten::save"]
    assert hits[0].evidence is not None and str(target) in hits[0].evidence
    assert not target.exists()


def test_the_crafted_torchscript_is_a_real_attack(tmp_path: Path) -> None:
    """In a throwaway process, torch.jit.load + forward really writes the file (so the test above is honest)."""
    target = tmp_path / "written-by-model"
    evil = _inject(_scripted(tmp_path), f'torch.save(x, "{target}")', tmp_path / "evil.pt")
    code = f"import torch; m = torch.jit.load({str(evil)!r}); m(torch.ones(1, 3))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert target.exists()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('torch.save(x, "/tmp/p")', ["aten::save"]),
        ("y = torch.ops.aten.from_file(p, True, 10)", ["aten::from_file"]),
        ("y = ops.aten.save(x, p)", ["aten::save"]),
        ("f = torch.save\nf(x, p)", ["aten::save"]),
        ("ops._c10d_functional.isend(t, 1, 0, g)", ["_c10d_functional::isend"]),
        ("torch . ops . debugprims . load_tensor(n, s, t)", ["debugprims::load_tensor"]),
        ("# torch.save(x, p)\ns = 'torch.from_file'\nreturn torch.relu(x)", []),
        ("return torch.add(x, torch.sum(y))", []),
        ("def broken(:\n  torch.save(x, '", ["aten::save"]),  # does not tokenise: plain text scan
    ],
)
def test_dangerous_ops(source: str, expected: list[str]) -> None:
    assert [use.op for use in dangerous_ops(source)] == expected


# Outside review 17: torch's importer resolves `.autograd` on any namespace to aten, and a namespace
# is a value (parentheses, assignment): each form below reaches aten::save/from_file in a real
# torch.jit.load, and each was only SUSPICIOUS (torchscript.code) before.
_INDIRECT_FORMS = [
    ('torch.autograd.save(x, "{t}")', "aten::save"),
    ('ops.foo.autograd.save(x, "{t}")', "aten::save"),
    ('torch.autograd.autograd.save(x, "{t}")', "aten::save"),
    ('(torch).save(x, "{t}")', "aten::*"),
    ('n = torch\n    n.save(x, "{t}")', "aten::*"),
    ('n = ops.aten\n    n.save(x, "{t}")', "aten::*"),
    ('(torch\n      .save)(x, "{t}")', "aten::save"),
]


@pytest.mark.parametrize(("line", "op"), _INDIRECT_FORMS)
def test_review17_namespace_aliases_reach_save(tmp_path: Path, line: str, op: str) -> None:
    target = tmp_path / "written-by-model"
    evil = _inject(_scripted(tmp_path), line.format(t=target), tmp_path / "evil.pt")
    code = f"import torch; m = torch.jit.load({str(evil)!r}); m(torch.ones(1, 3))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert target.exists(), "the real torch.jit.load did not write the file"
    target.unlink()
    report = scan_one(evil)
    hits = [f for f in report.findings if f.rule == "torchscript.dangerous-op"]
    assert report.verdict is Verdict.MALICIOUS
    assert [h.callable for h in hits] == [op]
    first = line.format(t=target).splitlines()[0].strip()
    assert hits[0].evidence == first and hits[0].message.endswith(
        "writes a file" if op == "aten::save" else "file and network ones too"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("torch.autograd.from_file(p, None, 4)", ["aten::from_file"]),
        ("ops.x.autograd.autograd.from_file(p)", ["aten::from_file"]),
        ("ops.c10d.autograd.save(x, p)", ["aten::save"]),
        ("t = ops\nt.aten.save(x, p)", ["ops::*"]),
        ("f(torch)", ["aten::*"]),
        ("y = ops.prim", ["prim::*"]),
        # near misses: ordinary operators through the same namespaces stay quiet
        ("return torch.autograd.grad([y], [x])", []),
        ("return ops.prim.RaiseException('torch is not ops')", []),
        ("return __torch__.torch.nn.functional.relu(x)", []),
        ("return torch.add(x, ops.aten.relu(x))", []),
    ],
)
def test_review17_resolution(source: str, expected: list[str]) -> None:
    assert [use.op for use in dangerous_ops(source)] == expected


def test_review17_real_models_have_no_indirect_use(tmp_path: Path) -> None:
    class _Rich(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 4, batch_first=True)
            self.att = torch.nn.MultiheadAttention(4, 2, batch_first=True)
            self.norm = torch.nn.LayerNorm(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[name-defined]
            y, _ = self.lstm(x)
            z, _ = self.att(y, y, y)
            return torch.nn.functional.gelu(self.norm(z)).softmax(-1)

    path = tmp_path / "rich.pt"
    torch.jit.save(torch.jit.script(_Rich()), str(path))
    report = scan_one(path)
    assert "torchscript.dangerous-op" not in rules(report)
    assert "torchscript.code" in rules(report)
