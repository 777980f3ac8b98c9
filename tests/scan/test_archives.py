"""Archives of models: payloads inside tar.gz and zip-in-zip are found and located; depth is bounded."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import airlock
from airlock import Verdict
from tests.fixtures.picklegen import call_global, program


def _payload(marker: Path) -> bytes:
    return program(call_global("os", "system", f"touch {marker}"))


def _malicious_findings(report: airlock.Report) -> list[airlock.Finding]:
    return [f for f in report.findings() if f.severity is airlock.Severity.MALICIOUS]


def test_malicious_pickle_inside_a_tar_gz(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {"model/README.md": b"hello", "model/weights.bin": _payload(marker)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    [finding] = [f for f in _malicious_findings(report) if f.callable == "os.system"]
    assert finding.location.members[-1] == "model/weights.bin"
    assert "touch" in (finding.evidence or "")
    assert not marker.exists()


def test_malicious_pickle_inside_a_zip_inside_a_zip(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("optimizer.pt", _payload(marker))
    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("README.txt", "models inside")
        z.writestr("inner.zip", inner.getvalue())
    report = airlock.scan(path)
    assert report.verdict is Verdict.MALICIOUS
    [finding] = [f for f in _malicious_findings(report) if f.callable == "os.system"]
    assert finding.location.members == ("inner.zip", "optimizer.pt")
    assert not marker.exists()


def test_nesting_deeper_than_the_limit_is_an_error(tmp_path: Path) -> None:
    data = _payload(tmp_path / "pwned")
    for level in range(4):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr(f"level{level}.zip" if level else "payload.pkl", data)
        data = buffer.getvalue()
    path = tmp_path / "deep.zip"
    path.write_bytes(data)
    assert airlock.scan(path).verdict is Verdict.MALICIOUS  # within the default depth
    report = airlock.scan(path, limits=airlock.Limits(max_archive_depth=2))
    assert report.verdict is Verdict.ERROR
    assert any(f.rule == "limit.exceeded" and "max_archive_depth" in f.message for f in report.findings())


def test_compressed_model_file_of_unknown_content_is_not_clean(tmp_path: Path) -> None:
    """A decompressed stream is judged by the name it was compressed from: unknown content in
    model.bin.gz is an unsupported model file (ERROR), in notes.txt.gz merely not analysed."""
    import gzip

    model = tmp_path / "model.bin.gz"
    model.write_bytes(gzip.compress(b"\x00\x01\x02 not a format airlock knows"))
    report = airlock.scan(model)
    assert report.verdict is Verdict.ERROR
    assert any(f.rule == "format.unsupported" for f in report.findings())
    notes = tmp_path / "notes.txt.gz"
    notes.write_bytes(gzip.compress(b"just some text\n"))
    assert airlock.scan(notes).verdict is Verdict.CLEAN
