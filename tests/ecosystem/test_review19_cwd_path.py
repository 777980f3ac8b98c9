"""Outside review 19: nothing in the current directory changes what airlock runs.

``shutil.which("bwrap")`` honoured relative PATH entries (``.``, ``bin``): a ``bwrap`` lying in the
folder the command ran from (a downloaded model's folder) was run by ``airlock doctor``/``run``,
as the caller, and chosen as the sandbox itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_CODE = "from airlock.sandbox import _layers\nprint(_layers.bwrap_source()[0])\n"


@pytest.mark.parametrize("entry", [".", "bin", "./bin", ""])
def test_a_bwrap_in_the_current_directory_is_never_run(tmp_path: Path, entry: str) -> None:
    marker = tmp_path / "FAKE_BWRAP_RAN"
    for folder in (tmp_path, tmp_path / "bin"):
        folder.mkdir(exist_ok=True)
        fake = folder / "bwrap"
        fake.write_text(f"#!/bin/sh\ntouch {marker}\necho 'bubblewrap 0.9.0'\n")
        fake.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-c", _CODE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{entry}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(str(ROOT / "src")),
        },
    )
    chosen = done.stdout.strip()
    assert not marker.exists(), chosen
    assert not chosen.endswith(("./bwrap", "bin/bwrap")) or os.path.isabs(chosen), chosen
    assert not os.path.realpath(os.path.join(tmp_path, chosen)).startswith(str(tmp_path)), chosen


def test_an_absolute_path_entry_is_still_searched(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bubblewrap 0.9.0'\n")
    fake.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-c", _CODE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
        env={
            **os.environ,
            "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(str(ROOT / "src")),
        },
    )
    assert done.stdout.strip() == str(fake)


def test_the_command_line_drops_relative_path_entries(tmp_path: Path) -> None:
    """Libraries look programs up on PATH too (``ctypes.util.find_library`` runs ``gcc`` and
    ``objdump`` when the loader cache lacks a library, as pyseccomp's lookup does on a host without
    libseccomp): the entry point leaves no relative entry for them. The lookup runs at exit, after
    the real entry point handled ``--version``."""
    marker = tmp_path / "FAKE_TOOL_RAN"
    for tool in ("gcc", "cc", "objdump", "ld"):
        fake = tmp_path / tool
        fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
        fake.chmod(0o755)
    code = (
        "import atexit, ctypes.util, sys\n"
        "from airlock._cli import entry_point\n"
        "atexit.register(lambda: print('found', ctypes.util.find_library('airlock-review19-none')))\n"
        "sys.argv = ['airlock', '--version']\n"
        "entry_point()\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PATH": f".{os.pathsep}{os.environ['PATH']}"},
    )
    assert "found None" in done.stdout, done.stdout + done.stderr
    assert not marker.exists()


_SHADOWED = ("struct", "json", "argparse", "hashlib", "zipfile", "numpy", "httpx", "textwrap")


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "airlock", "scan", "model.safetensors"],
        ["-X", "utf8", "-Bm", "airlock", "scan", "model.safetensors"],
        ["-m", "airlock.probe.memorization", "--help"],
    ],
)
def test_python_dash_m_from_a_model_folder_imports_nothing_from_it(tmp_path: Path, argv: list[str]) -> None:
    """README's ``python -m airlock scan ...`` run inside a model's folder: Python puts that folder
    first on sys.path, and its ``struct.py`` ran in the trusted process at airlock's first lazy
    import of struct."""
    marker = tmp_path / "SHADOW_RAN"
    for name in _SHADOWED:
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n")
    (tmp_path / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    done = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert not marker.exists(), marker.read_text() + done.stderr[-2000:]
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_program_importing_airlock_keeps_its_own_path(tmp_path: Path) -> None:
    """Only ``python -m airlock...`` loses the current directory; a user's script keeps it."""
    (tmp_path / "mine.py").write_text("VALUE = 7\n")
    done = subprocess.run(
        [sys.executable, "-c", "import airlock, mine; print(mine.VALUE)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.stdout.strip() == "7", done.stderr
