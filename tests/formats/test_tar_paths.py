"""Tar members an extracting loader writes outside its folder, or through a link, are MALICIOUS.

Each attack is first extracted for real with ``tarfile.extractall(filter='fully_trusted')`` (the
legacy behaviour, default before Python 3.14) in a throwaway subprocess, to prove it writes where
the test says; then airlock must name it with the exact rule.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from airlock.results import Verdict
from tests.formats.helpers import scan_one

_EXTRACT = (
    "import sys, tarfile\n"
    "with tarfile.open(sys.argv[1]) as t:\n"
    "    kw = {'filter': 'fully_trusted'} if hasattr(tarfile, 'fully_trusted_filter') else {}\n"
    "    t.extractall(sys.argv[2], **kw)\n"
)


def _member(
    name: str, data: bytes = b"", *, sym: str | None = None, hard: str | None = None
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    if sym is not None:
        info.type, info.linkname = tarfile.SYMTYPE, sym
    elif hard is not None:
        info.type, info.linkname = tarfile.LNKTYPE, hard
    elif name.endswith("/"):
        info.type = tarfile.DIRTYPE
    info.size = len(data)
    return info, data


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    path.write_bytes(out.getvalue())
    return path


def _extract(archive: Path, dest: Path) -> None:
    dest.mkdir()
    subprocess.run([sys.executable, "-c", _EXTRACT, str(archive), str(dest)], check=True, timeout=60)


def _rules(path: Path) -> dict[str, list[str | None]]:
    report = scan_one(path)
    found: dict[str, list[str | None]] = {}
    for f in report.findings:
        found.setdefault(f.rule, []).append(f.evidence)
    if any(r.startswith("tar.") and r not in {"tar.link", "tar.duplicate-name"} for r in found):
        assert report.verdict is Verdict.MALICIOUS, report
    return found


def test_dotdot_name_is_written_outside(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [_member("ok.txt", b"x"), _member("../escaped.txt", b"owned")])
    _extract(archive, tmp_path / "dest")
    assert (tmp_path / "escaped.txt").read_bytes() == b"owned"
    assert _rules(archive)["tar.bad-name"] == ["../escaped.txt"]


def test_absolute_name_is_written_where_it_points(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "planted.txt"
    archive = _tar(tmp_path / "a.tar", [_member(str(target), b"owned")])
    _extract(archive, tmp_path / "dest")
    assert target.read_bytes() == b"owned"
    assert _rules(archive)["tar.bad-name"] == [str(target)]


def test_write_through_escaping_symlink(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    archive = _tar(tmp_path / "a.tar", [_member("cfg", sym="../outside"), _member("cfg/x.txt", b"owned")])
    _extract(archive, tmp_path / "dest")
    assert (tmp_path / "outside" / "x.txt").read_bytes() == b"owned"
    found = _rules(archive)
    assert found["tar.link-escape"] == ["../outside"]
    assert found["tar.link-write"] == ["cfg/x.txt"]
    assert "tar.bad-name" not in found  # each name alone is harmless


def test_chain_of_links_that_each_look_inside(tmp_path: Path) -> None:
    # 'a' -> '.' and 'b' -> 'a/..' both normalise to the folder itself as text, but the kernel
    # resolves b through a: the folder's parent.
    archive = _tar(
        tmp_path / "a.tar",
        [_member("a", sym="."), _member("b", sym="a/.."), _member("b/chained.txt", b"owned")],
    )
    _extract(archive, tmp_path / "dest")
    assert (tmp_path / "chained.txt").read_bytes() == b"owned"
    found = _rules(archive)
    assert found["tar.link-escape"] == ["a/.."]
    assert found["tar.link-write"] == ["b/chained.txt"]


def test_write_through_hard_link_overwrites_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"original")
    archive = _tar(tmp_path / "a.tar", [_member("h", hard=str(victim)), _member("h", b"owned")])
    _extract(archive, tmp_path / "dest")
    assert victim.read_bytes() == b"owned"
    found = _rules(archive)
    assert found["tar.link-escape"] == [str(victim)]
    assert found["tar.link-write"] == ["h"]


def test_write_through_a_symlink_at_the_members_own_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"original")
    archive = _tar(
        tmp_path / "a.tar", [_member("model.bin", sym=str(victim)), _member("model.bin", b"owned")]
    )
    _extract(archive, tmp_path / "dest")
    assert victim.read_bytes() == b"owned"
    assert _rules(archive)["tar.link-write"] == ["model.bin"]


def test_write_through_an_inside_link_is_still_named(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "a.tar",
        [_member("real/"), _member("alias", sym="real"), _member("alias/weights.bin", b"w")],
    )
    found = _rules(archive)
    assert found["tar.link-write"] == ["alias/weights.bin"]
    assert found["tar.link"] == [None]
    assert "tar.link-escape" not in found


@pytest.mark.parametrize(
    "name", ["sub/../../x.txt", "..\\..\\evil.txt", "C:/Windows/evil.txt", "/etc/cron.d/x"]
)
def test_windows_and_absolute_forms(tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "a.tar", [_member(name, b"x")])
    assert _rules(archive)["tar.bad-name"] == [name]


@pytest.mark.parametrize("name", ["a/../b.txt", "..hidden", "dir/..x/y", "./model/notes.txt", "x..y"])
def test_near_miss_names_are_not_escapes(tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "a.tar", [_member(name, b"hello")])
    report = scan_one(archive)
    assert not [f for f in report.findings if f.rule.startswith("tar.")], report
    assert report.verdict is Verdict.CLEAN, report


def test_near_miss_links_stay_suspicious_only(tmp_path: Path) -> None:
    # a link that climbs into a subfolder and back stays inside; nothing is written through it
    archive = _tar(
        tmp_path / "a.tar",
        [
            _member("v1/"),
            _member("v1/w.bin", b"w"),
            _member("latest", sym="v1/../v1"),
            _member("up", sym="v1/.."),
        ],
    )
    found = _rules(archive)
    assert found["tar.link"] == [None, None]
    assert not {"tar.link-escape", "tar.link-write", "tar.bad-name"} & set(found)


def test_link_loop_is_not_an_escape(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [_member("a", sym="b"), _member("b", sym="a")])
    found = _rules(archive)
    assert found["tar.link"] == [None, None]
    assert "tar.link-escape" not in found


def test_ordinary_folder_tar_is_clean(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "README.md").write_text("hi")
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=".")
    report = scan_one(archive)
    assert report.verdict is Verdict.CLEAN, report


def test_huge_link_targets_are_bounded_and_not_clean(tmp_path: Path) -> None:
    # pax headers allow megabyte names: resolution stops after a fixed number of components
    chain = [_member(f"l{i}", sym="/".join([f"l{i + 1}"] * 2000)) for i in range(50)]
    archive = _tar(tmp_path / "a.tar", [*chain, _member("l0/x", b"owned")])
    started = time.perf_counter()
    report = scan_one(archive)
    assert time.perf_counter() - started < 20
    assert report.verdict is not Verdict.CLEAN
    assert "tar.link-write" in {f.rule for f in report.findings}
