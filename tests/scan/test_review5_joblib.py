"""joblib's old array placeholders load another file by the name the pickle gives.

``joblib.numpy_pickle.NDArrayWrapper`` was on the sklearn allowlist as a "joblib array wrapper".
It is not one whose bytes follow it: joblib.load's BUILD replaces it by
``numpy.load(os.path.join(<the pickle's folder>, state['filename']), allow_pickle=True)``, and
``numpy.load`` unpickles a file that is neither ``.npy`` nor zip. So a pickle that held only
allowlisted names was CLEAN while ``joblib.load`` ran a pickle outside the scanned folder
(``../x`` or an absolute path). The placeholders are catalogued as what they are: nested
deserialisation of a file named by the pickle (``ZNDArrayWrapper``: a file read).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock.results import Verdict


def _payload(marker: Path) -> bytes:
    return b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."


def _wrapper(module: bytes, name: bytes, filename: bytes) -> bytes:
    def short_unicode(text: bytes) -> bytes:
        return b"X" + len(text).to_bytes(4, "little") + text

    return (
        b"\x80\x02c" + module + b"\n" + name + b"\n)\x81}("
        + short_unicode(b"filename") + short_unicode(filename)
        + short_unicode(b"subclass") + b"cnumpy\nndarray\n"
        + short_unicode(b"allow_mmap") + b"\x89ub."
    )  # fmt: skip


def _layout(tmp_path: Path, module: bytes, name: bytes, filename: bytes) -> tuple[Path, Path]:
    (tmp_path / "model").mkdir()
    (tmp_path / "outside").mkdir()
    marker = tmp_path / "ran"
    (tmp_path / "outside" / "payload.pkl").write_bytes(_payload(marker))
    model = tmp_path / "model" / "model.joblib"
    model.write_bytes(_wrapper(module, name, filename))
    return model, marker


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (b"joblib.numpy_pickle", b"NDArrayWrapper"),
        (b"joblib.numpy_pickle_compat", b"NDArrayWrapper"),
    ],
)
def test_ndarraywrapper_loading_a_file_outside_is_malicious(
    tmp_path: Path, module: bytes, name: bytes
) -> None:
    pytest.importorskip("joblib")
    model, marker = _layout(tmp_path, module, name, b"../outside/payload.pkl")
    # the real loader runs the pickle the placeholder names (it fails afterwards: not an array)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import joblib, sys\ntry: joblib.load(sys.argv[1])\nexcept Exception: pass",
            model,
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert marker.is_dir()
    report = airlock.scan(model.parent)
    assert report.verdict is Verdict.MALICIOUS, [(f.rule, f.callable) for f in report.findings()]
    found = [(f.rule, f.callable) for f in report.findings()]
    assert ("pickle.dangerous-global", f"{module.decode()}.{name.decode()}") in found


def test_zndarraywrapper_and_load_compatibility_are_catalogued() -> None:
    from airlock._analysis import catalogue

    assert catalogue.lookup("joblib.numpy_pickle.ZNDArrayWrapper") is not None
    assert catalogue.lookup("joblib.numpy_pickle.load_compatibility") is not None
    assert catalogue.lookup("joblib.numpy_pickle_compat.read_zfile") is not None
    # the placeholder whose array bytes follow it in the stream stays allowed
    assert catalogue.lookup("joblib.numpy_pickle.NumpyArrayWrapper") is None


def test_numpyarraywrapper_joblib_dump_stays_clean(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    path = tmp_path / "arrays.joblib"
    joblib.dump({"w": np.arange(12, dtype=np.float32)}, path)
    assert airlock.scan(path).verdict is Verdict.CLEAN
