"""The catalogue names what it claims, under every name a pickle can use.

* Every entry (hand-written and derived) names something that exists in the pinned environment,
  resolved the unpickler's way (import the module, then walk attributes), except the names listed
  below with the reason they cannot; a misspelt entry fails.
* ``lookup`` resolves re-exports: the defining module's name and the public one both match.
* Gadgets through less-known functions (savers, memmaps, compressors, loaders of another pickle)
  are proven with the real ``pickle.load`` in a subprocess, then reported MALICIOUS and named.
"""

from __future__ import annotations

import importlib
import json
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import airlock
from airlock import Severity, Verdict
from airlock._analysis.catalogue import DANGEROUS_MODULES, DANGEROUS_NAMES, NESTED_LOADERS, lookup
from airlock._analysis.catalogue_derived import DERIVED
from airlock._render.text import render as render_text
from tests.fixtures.loaders import runs_payload
from tests.fixtures.picklegen import call, const, program, sglob, tuple_of

#: Hand-written entries that cannot resolve here, and why they are kept.
ABSENT: dict[str, str] = {
    **dict.fromkeys(
        ["commands", "popen2", "httplib", "urllib2", "cPickle", "cPickle.loads", "builtins.apply",
         "builtins.execfile", "builtins.reload"],
        "Python 2 names a pickle may still carry",
    ),
    **dict.fromkeys(["nt"], "Windows only"),
    # the pinned torch 2.13 no longer ships it; older ones do (GHSA-4r9r-ch6f-vxmx)
    **dict.fromkeys(["torch.utils.bottleneck"], "older versions of a pinned library"),
    **dict.fromkeys(["_interpreters", "interpreters", "_pyrepl"], "newer Pythons than the pinned 3.11"),
    **dict.fromkeys(
        ["aiohttp", "dill", "dill._dill.loads", "dill.loads", "fabric", "jsonpickle", "keras.models.load_model",
         "pandas.io.pickle", "pandas.read_pickle",
         "paramiko", "pexpect", "plumbum", "sh", "tensorflow"],
        "third-party packages not in the pinned environment",
    ),
}  # fmt: skip


def resolve(dotted: str) -> Any:
    """Import the longest importable module prefix of ``dotted``, then walk the attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(f"no module of {dotted} can be imported")


ROOT = Path(__file__).resolve().parents[2]

_RESOLVER = """
import json, sys
from tests.analysis.test_catalogue import resolve
unresolved = {}
for name in json.loads(sys.stdin.read()):
    try:
        resolve(name)
    except (ImportError, AttributeError) as exc:
        unresolved[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(unresolved))
"""


def _unresolved(names: list[str]) -> dict[str, str]:
    """:func:`resolve` each name, in order, in a throwaway interpreter; the names that raise
    ImportError or AttributeError, with the error (any other exception fails the run). Not in the
    test process: the imports (torch, scipy, scikit-learn, lib2to3, ... thousands of modules) would
    stay there for the rest of the run, with their import-time side effects, and every later
    garbage collection would walk their objects (the scans and fuzz tests after them ran 5-10x
    slower)."""
    done = subprocess.run(
        [sys.executable, "-c", _RESOLVER],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    unresolved: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return unresolved


def test_every_hand_entry_exists() -> None:
    names = sorted(set(DANGEROUS_MODULES) | set(DANGEROUS_NAMES) | NESTED_LOADERS)
    checked = [name for name in names if name not in ABSENT]
    unresolved = _unresolved(checked + list(ABSENT))
    missing = [f"{name}: {unresolved[name]}" for name in checked if name in unresolved]
    assert not missing, missing
    # an ABSENT name that resolves after all belongs in the checked list
    assert [name for name in ABSENT if name not in unresolved] == []


def test_a_misspelt_entry_would_fail() -> None:
    for wrong in ("subproccess.Popen", "numpy.lib._npyio_impl.lod", "torch.serialisation.load"):
        with pytest.raises((ImportError, AttributeError)):
            resolve(wrong)


def test_every_derived_entry_exists_and_says_why() -> None:
    assert len(DERIVED) > 3000
    for name, reason in DERIVED.items():
        assert reason.split(":")[0] in {
            "code execution", "process creation", "native library loading", "import by name",
            "nested deserialisation", "network access", "file write",
        }, (name, reason)  # fmt: skip
    unresolved = _unresolved(list(DERIVED))
    missing = [f"{name}: {unresolved[name]}" for name in DERIVED if name in unresolved]
    assert not missing, missing[:20]


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("numpy.load", "nested deserialisation"),
        ("numpy.lib._npyio_impl.load", "nested deserialisation"),
        ("numpy.lib._npyio_impl.save", "file write"),
        ("numpy.lib._format_impl.open_memmap", "file write"),
        ("joblib.numpy_pickle.load", "nested deserialisation"),
        ("joblib.numpy_pickle.dump", "file write"),
        ("torch.serialization.load", "nested deserialisation"),
        ("accelerate.utils.other.save", "file write"),
        ("accelerate.utils.modeling.load_state_dict", "nested deserialisation"),
        ("fsspec.core.open", "file write"),
        ("fsspec.registry.filesystem", "import by name"),
        ("scipy.io.matlab._mio.savemat", "file write"),
        ("sklearn.datasets._svmlight_format_io.dump_svmlight_file", "file write"),
    ],
)
def test_lookup_names_reexports_and_defining_modules(name: str, category: str) -> None:
    hit = lookup(name)
    assert hit is not None and hit[0] == name, hit
    assert category in hit[1], hit


def test_lookup_near_misses_stay_unknown() -> None:
    for name in (
        "numpy.lib._npyio_impl.loadz",
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "numpy.lib.format.dtype_to_descr",
    ):
        assert lookup(name) is None, (name, lookup(name))


def _nested_pickle(folder: Path, marker: Path) -> Path:
    inner = folder / "inner.bin"
    inner.write_bytes(program(call(sglob("os", "system"), const(f"touch {marker}"))))
    return inner


def _shape1() -> bytes:
    return b"K\x01\x85"  # (1,)


#: id -> (build(folder, marker) -> pickle bytes, the dotted name that must be reported)
GADGETS: dict[str, tuple[Callable[[Path, Path], bytes], str]] = {
    "numpy-save-defining-module": (
        lambda f, m: program(call(sglob("numpy.lib._npyio_impl", "save"), const(str(m)), const([1]))),
        "numpy.lib._npyio_impl.save",
    ),
    "numpy-savetxt": (
        lambda f, m: program(call(sglob("numpy.lib._npyio_impl", "savetxt"), const(str(m)), const([1]))),
        "numpy.lib._npyio_impl.savetxt",
    ),
    "numpy-open-memmap": (
        lambda f, m: program(
            call(
                sglob("numpy.lib._format_impl", "open_memmap"),
                const(str(m)),
                const("w+"),
                const("uint8"),
                _shape1(),
            )
        ),
        "numpy.lib._format_impl.open_memmap",
    ),
    "joblib-dump": (
        lambda f, m: program(call(sglob("joblib.numpy_pickle", "dump"), const(1), const(str(m)))),
        "joblib.numpy_pickle.dump",
    ),
    "scipy-savemat": (
        lambda f, m: program(call(sglob("scipy.io.matlab._mio", "savemat"), const(str(m)), b"}")),
        "scipy.io.matlab._mio.savemat",
    ),
    "sklearn-dump-svmlight": (
        lambda f, m: program(
            call(
                sglob("sklearn.datasets._svmlight_format_io", "dump_svmlight_file"),
                b"](](K\x01ee",  # X = [[1]]
                const([1]),
                const(str(m)),
            )
        ),
        "sklearn.datasets._svmlight_format_io.dump_svmlight_file",
    ),
    "numpy-load-of-another-pickle": (
        lambda f, m: program(
            call(sglob("numpy.lib._npyio_impl", "load"), const(str(_nested_pickle(f, m))), b"N", b"\x88")
        ),
        "numpy.lib._npyio_impl.load",
    ),
    "joblib-load-of-another-pickle": (
        lambda f, m: program(call(sglob("joblib.numpy_pickle", "load"), const(str(_nested_pickle(f, m))))),
        "joblib.numpy_pickle.load",
    ),
    "accelerate-save": (
        lambda f, m: program(call(sglob("accelerate.utils.other", "save"), b"}", const(str(m)))),
        "accelerate.utils.other.save",
    ),
}


@pytest.mark.parametrize("gadget", sorted(GADGETS))
def test_less_known_gadgets_run_and_are_named(gadget: str, tmp_path: Path) -> None:
    build, expected = GADGETS[gadget]
    marker = tmp_path / "pwned.npy"  # numpy.save and scipy's savemat add a suffix to a name without one
    path = tmp_path / "model.pkl"
    path.write_bytes(build(tmp_path, marker))
    assert runs_payload("pickle.load(open)", path, marker), f"{gadget}: the fixture does not run"
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS, render_text(report)
    hits = [f for f in report.findings() if f.rule == "pickle.dangerous-global" and f.callable == expected]
    assert len(hits) == 1, render_text(report)
    assert hits[0].severity is Severity.MALICIOUS
    assert hits[0].location.offset == path.read_bytes().index(b"\x93")  # the STACK_GLOBAL
    assert not marker.exists()


def test_gadget_builders_are_pickles() -> None:
    """The picklegen helpers used above produce what pickle itself would (a sanity check)."""
    assert pickle.loads(program(tuple_of(const(1), const("a")))) == (1, "a")
    assert struct.calcsize("<Q") == 8
