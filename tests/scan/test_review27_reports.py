"""Outside review 27: ``airlock scan`` end to end as a user's tool, outside the format parsers.

* A file name that is not UTF-8 (Linux names are bytes; Python holds the undecodable ones as lone
  surrogates) made ``--format sarif`` raise (``quote`` cannot encode a surrogate) and ``--format
  html -o FILE`` raise (the page written as strict UTF-8): no report, a traceback, exit 1.
* The text report showed the file ``a<newline>b.pkl`` and the file named ``a\\nb.pkl`` (a real
  backslash) as the same text; the HTML page showed names with bidi overrides reordered.
* A symbolic link that loops, in a scanned folder or named on the command line, ended the whole
  scan with a RuntimeError traceback (Python < 3.13's ``Path.resolve``): no report at all.
* A FIFO (or device, socket) named ``pytorch_model.bin`` or ``config.json`` was listed as skipped,
  so a folder holding it and clean files was CLEAN (exit 0), while a loader opens it by that name
  and loads whatever a writer puts into it (proven below with the real ``pickle`` in a subprocess).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airlock._cli import main
from tests._reports import run_cli, sarif_schema
from tests.fixtures.picklegen import call_global, program

UNDECODABLE = os.fsdecode(b"h\xff.pkl")


def _payload(marker: Path) -> bytes:
    """A pickle that, if loaded, creates ``marker``: harmless, and proof that it ran."""
    return program(call_global("os", "system", f"touch {marker}"))


def _clean() -> bytes:
    return program(b"}" + b"\x8c\x01a" + b"K\x01" + b"s")


def _uris(doc: dict[str, Any]) -> list[str]:
    return [
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in doc["runs"][0]["results"]
    ]


# --- names that are not UTF-8, or that hold control, bidi or backslash characters -----------------


def test_sarif_names_a_file_whose_name_is_not_utf8_by_its_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / UNDECODABLE).write_bytes(_payload(tmp_path / "marker"))
    (tmp_path / "\u00e9.pkl").write_bytes(_payload(tmp_path / "marker"))  # UTF-8: as before
    (tmp_path / "g\nh.pkl").write_bytes(_payload(tmp_path / "marker"))
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["scan", ".", "--format", "sarif"], capsys)
    assert code == 1
    doc = json.loads(out)
    jsonschema.validate(doc, sarif_schema(), format_checker=jsonschema.FormatChecker())
    assert sorted(_uris(doc)) == ["%C3%A9.pkl", "g%0Ah.pkl", "h%FF.pkl"]
    assert out.isascii()


def test_html_page_to_a_file_with_a_name_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / UNDECODABLE).write_bytes(_payload(tmp_path / "marker"))
    (models / "f\u202egnp.pkl").write_bytes(_payload(tmp_path / "marker"))  # shows as "fpkl.png"
    page = tmp_path / "report.html"
    code, _ = run_cli(["scan", str(models), "--format", "html", "-o", str(page)], capsys)
    assert code == 1
    html = page.read_bytes().decode("utf-8")  # strict: the page is UTF-8
    assert "/h\\udcff.pkl</code>" in html
    assert "/f\\u202egnp.pkl</code>" in html
    assert "\u202e" not in html


def test_text_report_shows_each_name_as_one_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a\nb.pkl").write_bytes(_payload(tmp_path / "marker"))
    (tmp_path / "a\\nb.pkl").write_bytes(_payload(tmp_path / "marker"))
    (tmp_path / "a\\b.pkl").write_bytes(_clean())  # a backslash, clean: named once too
    (tmp_path / "plain.pkl").write_bytes(_payload(tmp_path / "marker"))  # near miss: unchanged
    code, out = run_cli(["scan", str(tmp_path)], capsys)
    assert code == 1
    shown = [
        line.split(maxsplit=1)[1].removesuffix(" [pickle]") for line in out.splitlines() if line[:1].isupper()
    ]
    prefix = f"{tmp_path.as_posix()}/"
    assert sorted(s.removeprefix(prefix) for s in shown if s.startswith(prefix)) == [
        "a\\\\b.pkl",  # the clean name with a backslash
        "a\\\\nb.pkl",  # the name with a backslash: its backslash doubled
        "a\\nb.pkl",  # the name with a newline: \n
        "plain.pkl",
    ]
    assert all(line.isprintable() for line in out.splitlines())


# --- links that loop --------------------------------------------------------------------------


def test_a_link_loop_in_a_folder_is_reported_and_the_other_files_scanned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.pkl").write_bytes(_payload(tmp_path / "marker"))
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    os.symlink("self", tmp_path / "self")
    code, out = run_cli(["scan", str(tmp_path), "--format", "json"], capsys)
    assert code == 1
    files = {Path(f["path"]).name: f for f in json.loads(out)["files"]}
    assert files["model.pkl"]["verdict"] == "MALICIOUS"
    for name in ("loop1", "loop2", "self"):
        assert [x["rule"] for x in files[name]["findings"]] == ["fs.symlink-outside"]
        assert files[name]["verdict"] == "SUSPICIOUS"


def test_a_link_loop_named_on_the_command_line_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.symlink("b.pkl", tmp_path / "a.pkl")
    os.symlink("a.pkl", tmp_path / "b.pkl")
    code, out = run_cli(["scan", str(tmp_path / "a.pkl")], capsys)
    assert code == 3
    assert "fs.symlink-outside" in out


# --- special files with the names loaders open --------------------------------------------------


def test_a_fifo_named_like_a_checkpoint_is_loaded_by_pickle(tmp_path: Path) -> None:
    """The attack is real: a loader opening ``pytorch_model.bin`` loads what a writer puts in."""
    fifo = tmp_path / "pytorch_model.bin"
    os.mkfifo(fifo)
    marker = tmp_path / "marker"

    def write() -> None:
        with open(fifo, "wb") as fh:
            fh.write(_payload(marker))

    writer = threading.Thread(target=write)
    writer.start()
    proc = subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.load(open({str(fifo)!r}, 'rb'))"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    writer.join(timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()


@pytest.mark.parametrize(
    "name",
    ["pytorch_model.bin", "training_args.bin", "optimizer.pt", "model.safetensors", "config.json",
     "modeling_x.py", "chat_template.jinja"],
)  # fmt: skip
def test_a_fifo_with_a_name_loaders_open_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    (tmp_path / "clean.pkl").write_bytes(_clean())
    os.mkfifo(tmp_path / name)
    code, out = run_cli(["scan", str(tmp_path), "--format", "json"], capsys)
    assert code == 2
    doc = json.loads(out)
    (special,) = [f for f in doc["files"] if f["path"].endswith("/" + name)]
    assert special["verdict"] == "ERROR"
    assert [x["rule"] for x in special["findings"]] == ["file.unreadable"]
    assert doc["skipped"] == []


@pytest.mark.parametrize("name", ["notes", "model.bin.lock", "README.md", "config.jsonx"])
def test_a_fifo_with_another_name_stays_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    (tmp_path / "clean.pkl").write_bytes(_clean())
    os.mkfifo(tmp_path / name)
    code, out = run_cli(["scan", str(tmp_path), "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert [s["path"] for s in doc["skipped"]] == [f"{tmp_path.as_posix()}/{name}"]


def test_a_link_gives_a_fifo_the_name_a_loader_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "clean.pkl").write_bytes(_clean())
    os.mkfifo(tmp_path / "pipe")
    os.symlink("pipe", tmp_path / "pytorch_model.bin")
    code, out = run_cli(["scan", str(tmp_path), "--format", "json"], capsys)
    assert code == 2
    (special,) = [f for f in json.loads(out)["files"] if f["path"].endswith("/pipe")]
    assert [x["rule"] for x in special["findings"]] == ["file.unreadable"]


# --- a report that cannot be written ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code"),
    [("malicious", 1), ("clean", 2), ("suspicious", 2)],
)
@pytest.mark.parametrize("fmt", ["sarif", "json", "text"])
def test_a_report_that_cannot_be_written_never_lowers_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, code: int, fmt: str
) -> None:
    """The action runs ``airlock scan --format sarif -o airlock.sarif`` in the checkout; a pull
    request that adds a folder of that name made the write fail, exit 2, which ``fail-on:
    malicious`` tolerates, although a malicious model was found."""
    body = {
        "malicious": _payload(tmp_path / "marker"),
        "clean": _clean(),
        "suspicious": program(call_global("mypkg.layers", "MyLayer")),
    }[content]
    (tmp_path / "model.pkl").write_bytes(body)
    (tmp_path / "airlock.sarif").mkdir()
    assert (
        main(["scan", "--format", fmt, "-o", str(tmp_path / "airlock.sarif"), str(tmp_path / "model.pkl")])
        == code
    )
    err = capsys.readouterr().err
    assert "cannot write" in err and "the report was not written" in err


@pytest.mark.parametrize("planted", ["airlock.sarif", "reports"])
def test_a_link_in_the_scanned_tree_does_not_choose_the_file_the_report_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """action.yml writes ``airlock.sarif`` into the checkout it scans; a pull request that adds the
    link ``airlock.sarif -> ~/.bashrc`` (or a folder link on the way) had the report overwrite it."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    victim = tmp_path / "home"
    victim.mkdir()
    (victim / "airlock.sarif").write_text("precious\n")
    (checkout / "model.pkl").write_bytes(_payload(tmp_path / "marker"))
    if planted == "airlock.sarif":
        os.symlink(victim / "airlock.sarif", checkout / "airlock.sarif")
        output = "airlock.sarif"
    else:
        os.symlink(victim, checkout / "reports")
        output = "reports/airlock.sarif"
    monkeypatch.chdir(checkout)
    code = main(["scan", "--quiet", "--format", "sarif", "-o", output, "--", "."])
    assert code == 1
    assert (victim / "airlock.sarif").read_text() == "precious\n"
    assert "not followed" in capsys.readouterr().err


def test_a_report_inside_the_tree_without_links_and_one_through_a_link_outside_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "out").mkdir(parents=True)
    (checkout / "model.pkl").write_bytes(_clean())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere / "r.json", tmp_path / "link.json")  # the caller's own link, outside the tree
    monkeypatch.chdir(checkout)
    assert main(["scan", "--format", "json", "-o", "out/r.json", "--", "."]) == 0
    assert json.loads((checkout / "out" / "r.json").read_text())["verdict"] == "CLEAN"
    assert main(["scan", "--format", "json", "-o", str(tmp_path / "link.json"), "--", "."]) == 0
    assert json.loads((elsewhere / "r.json").read_text())["verdict"] == "CLEAN"


# --- a folder this user may not list -------------------------------------------------------------


def _without_read_override() -> list[str]:
    """A command prefix under which permissions apply: none for a user; for root, its capabilities
    to bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) dropped with setpriv."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv: cannot make a folder unlistable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("depth", ["locked", "a/b/locked"])
def test_a_folder_that_cannot_be_listed_is_an_error_and_the_rest_is_scanned(
    tmp_path: Path, depth: str
) -> None:
    """``cannot list FOLDER`` ended the scan (exit 2, no report): every other file, a MALICIOUS
    one too, went unreported, and ``fail-on: malicious`` tolerates exit 2."""
    tree = tmp_path / "tree"
    locked = tree / depth
    locked.mkdir(parents=True)
    (locked / "hidden.pkl").write_bytes(_clean())
    (tree / "model.pkl").write_bytes(_payload(tmp_path / "marker"))
    locked.chmod(0)
    try:
        proc = subprocess.run(
            [
                *_without_read_override(),
                sys.executable,
                "-m",
                "airlock",
                "scan",
                "--format",
                "json",
                str(tree),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        locked.chmod(0o700)
    assert proc.returncode == 1, proc.stderr
    files = {f["path"]: f for f in json.loads(proc.stdout)["files"]}
    assert files[f"{tree}/model.pkl"]["verdict"] == "MALICIOUS"
    assert files[f"{tree}/{depth}"]["verdict"] == "ERROR"
    assert [x["rule"] for x in files[f"{tree}/{depth}"]["findings"]] == ["file.unreadable"]
    assert f"{tree}/{depth}/hidden.pkl" not in files


def test_a_root_folder_that_cannot_be_listed_is_still_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    tree.chmod(0)
    try:
        proc = subprocess.run(
            [*_without_read_override(), sys.executable, "-m", "airlock", "scan", str(tree)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        tree.chmod(0o700)
    assert proc.returncode == 2
    assert "cannot list" in proc.stderr


def test_the_place_a_planted_link_names_is_one_shown_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error names where the link leads; that is the tree's text, and a newline in it printed a
    fake summary line of its own on stderr, which CI logs show."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "model.pkl").write_bytes(_payload(tmp_path / "marker"))
    fake = "\nverdict: CLEAN (1 clean; 0 skipped) exit code 0"
    os.symlink(str(tmp_path / f"x{fake}"), checkout / "airlock.sarif")
    monkeypatch.chdir(checkout)
    assert main(["scan", "-o", "airlock.sarif", "--", "."]) == 1
    err = capsys.readouterr().err
    assert not any(line.startswith("verdict:") for line in err.splitlines()), err
    assert "x\\nverdict: CLEAN" in err


@pytest.mark.parametrize(("content", "code"), [("malicious", 1), ("clean", 2)])
@pytest.mark.parametrize("fmt", ["text", "sarif"])
def test_a_reader_that_went_away_never_changes_the_verdict_into_another(
    tmp_path: Path, content: str, code: int, fmt: str
) -> None:
    """``airlock scan . | head -1``: the reader has gone when the report is written. That was a
    BrokenPipeError traceback and exit 1 ("malicious") for a clean scan."""
    (tmp_path / "model.pkl").write_bytes(
        _payload(tmp_path / "marker") if content == "malicious" else _clean()
    )
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the report is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "airlock", "scan", "--format", fmt, str(tmp_path)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot write the report to standard output" in proc.stderr
