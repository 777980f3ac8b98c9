"""The command-line shell: missing extras, Ctrl-C, progress on a terminal, error output, exit codes."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from airlock._cli import COMMANDS, main
from airlock._cli._extras import EXTRA_MODULES, MODULE_EXTRA
from tests.fixtures.attacks import ATTACKS

ROOT = Path(__file__).resolve().parents[2]

# Runs airlock's CLI with some top-level modules made unimportable, as on an install without the
# extras that provide them (an import hook refuses exactly those names; everything else is real).
_HIDE = """
import sys, importlib.abc
HIDDEN = set(sys.argv[1].split(','))
def _hidden(name):
    return any(name == h or name.startswith(h + '.') for h in HIDDEN)
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _hidden(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Hide())
import importlib.util
_orig = importlib.util.find_spec
def _find_spec(name, package=None):
    if _hidden(name):
        return None
    return _orig(name, package)
importlib.util.find_spec = _find_spec
from airlock._cli import main
sys.exit(main(sys.argv[2:]))
"""


def _without(hidden: list[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _HIDE, ",".join(hidden), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


#: Every optional import name: what a core install (jinja2 + cryptography only) lacks.
_ALL_OPTIONAL = sorted(MODULE_EXTRA)

#: One argument list per command, each valid enough to get past argparse.
_ARGS = {
    "load": ["load", "m.pkl"],
    "convert": ["convert", "m.pkl", "-o", "out.safetensors"],
    "run": ["run", "m.pkl"],
    "chat": ["chat", "m.gguf"],
    "doctor": ["doctor"],
    "serve": ["serve", "--config", "c.toml"],
    "tenant": ["tenant", "list", "--config", "c.toml"],
    "key": ["key", "list", "--config", "c.toml"],
    "audit": ["audit", "verify", "--config", "c.toml"],
    "guard": ["guard", "hello"],
    "probe": ["probe", "https://127.0.0.1:1/v1", "--model", "m"],
}


def test_extras_table_matches_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRA_MODULES) <= set(extras), "every extra the CLI names must exist in pyproject.toml"
    for entry in COMMANDS:
        assert set(entry.extras) <= set(extras), entry.name


@pytest.mark.parametrize("name", sorted(_ARGS))
def test_command_needing_a_missing_extra_prints_one_line_and_exits_2(name: str, tmp_path: Path) -> None:
    entry = next(e for e in COMMANDS if e.name == name)
    proc = _without(_ALL_OPTIONAL, _ARGS[name], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for extra in entry.extras:
        assert extra in lines[0]
    assert lines[0].startswith(f"airlock {name}: needs the ")
    assert "pip install 'model-airlock[" in lines[0]


def test_optional_module_missing_at_run_time_names_its_extra(tmp_path: Path) -> None:
    """hash needs no extra, but --algorithm blake3 does: found while it runs, same one line."""
    (tmp_path / "f.bin").write_bytes(b"x")
    proc = _without(["blake3"], ["hash", "--algorithm", "blake3", "f.bin"], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "model-airlock[integrity]" in proc.stderr


def test_cyclonedx_without_sbom_extra_names_it(tmp_path: Path) -> None:
    (tmp_path / "f.json").write_text("{}")
    proc = _without(["cyclonedx"], ["scan", "f.json", "--format", "cyclonedx"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "airlock scan: needs the 'sbom' extra, not installed: pip install 'model-airlock[sbom]'"
    )


def test_certs_dev_needs_no_numpy(tmp_path: Path) -> None:
    proc = _without(_ALL_OPTIONAL, ["certs", "dev", "--out", "certs"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "certs" / "ca.pem").is_file()


def test_a_missing_module_no_extra_provides_keeps_its_traceback(tmp_path: Path) -> None:
    """Only optional pieces are softened: anything else missing is a bug and must stay loud."""
    proc = _without(["airlock._render.json_report"], ["scan", str(tmp_path), "--format", "json"], tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr


# --- usage and output errors ----------------------------------------------------------------


def test_usage_error_under_format_json_prints_a_json_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--format", "json", "--jobs", "zero", "x"]) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["exit_code"] == 2
    assert doc["error"]["kind"] == "usage"
    assert doc["error"]["command"] == "scan"
    assert "--jobs" in doc["error"]["message"]
    assert "usage:" in captured.err


def test_usage_error_without_json_prints_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--jobs", "zero", "x"]) == 2
    assert capsys.readouterr().out == ""


def test_unwritable_output_is_an_error_not_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f.bin").write_bytes(b"abc")
    target = str(tmp_path / "missing-dir" / "out")
    for args in (["scan", str(tmp_path / "f.bin"), "-o", target], ["hash", str(tmp_path), "-o", target]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"error: cannot write {target}" in err
        assert "usage error" not in err


def _without_read_override() -> list[str]:
    """A command prefix under which a mode-0 file is unreadable, even for root (CI runs as root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("as root every file is readable, and setpriv (util-linux) is not installed")
    # root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH obeys the file's mode like anyone else
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def test_hash_of_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "ok.bin").write_bytes(b"ok")
    secret = folder / "secret.bin"
    secret.write_bytes(b"secret")
    secret.chmod(0)
    proc = subprocess.run(
        [*_without_read_override(), sys.executable, "-m", "airlock", "hash", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 2, proc.stderr
    assert "secret.bin" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hash_of_a_symlink_still_exits_1(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "link.bin").symlink_to("a.bin")
    assert main(["hash", str(tmp_path)]) == 1


# --- Ctrl-C and progress, through a pseudo-terminal ----------------------------------------


def _spawn_on_pty(args: list[str]) -> tuple[int, subprocess.Popen[bytes]]:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airlock", *args],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=secondary,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    os.close(secondary)
    return primary, proc


def _read_all(fd: int, proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return data


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file big enough that hashing and scanning it take a while (content of no known format)."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for _ in range(768):
            fh.write(block)
    return path


def _pickle_stream(folder: Path) -> Path:
    """Many small pickles back to back: a long scan of one file (every opcode is analysed)."""
    path = folder / "long.pkl"
    one = b"\x80\x02]q\x00(" + b"(K\x01K\x02t" * 200_000 + b"e."
    path.write_bytes(one * 40)  # about 7 s of analysis (lists of ints alone are counted in 0.3 s)
    return path


@pytest.mark.parametrize("command", ["hash", "scan"])
def test_sigint_exits_130_with_one_line(command: str, big_file: Path, tmp_path: Path) -> None:
    if command == "hash":
        args = ["hash", "--workers", "1", str(big_file)]
    else:
        args = ["scan", str(_pickle_stream(tmp_path))]
    fd, proc = _spawn_on_pty(args)
    try:
        time.sleep(0.4)
        assert proc.poll() is None, "finished before the signal: make the input bigger"
        os.killpg(proc.pid, signal.SIGINT)
        out = _read_all(fd, proc, time.monotonic() + 30)
        code = proc.wait(timeout=30)
    finally:
        os.close(fd)
        if proc.poll() is None:
            proc.kill()
    text = out.decode(errors="replace").replace("\r", "\n")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert code == 130, text
    assert "Traceback" not in text
    assert lines[-1] == f"airlock {command}: interrupted"
    assert proc.stdout is not None and proc.stdout.read() == b""


def test_progress_is_shown_on_a_terminal_only(big_file: Path) -> None:
    fd, proc = _spawn_on_pty(["hash", "--workers", "1", str(big_file)])
    try:
        out = _read_all(fd, proc, time.monotonic() + 60)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(fd)
    text = out.decode(errors="replace")
    assert "hashing: 0/1 files" in text
    assert re.search(r"\d(\.\d)? [KMGT]?i?B/s", text), text  # a rate, in whatever unit it reaches
    assert "ETA" in text
    assert proc.stdout is not None
    assert b"hashing" not in proc.stdout.read()  # the manifest on stdout is untouched

    # --quiet on a terminal: nothing on stderr.
    fd, proc = _spawn_on_pty(["hash", "--quiet", "--workers", "1", str(big_file)])
    try:
        quiet = _read_all(fd, proc, time.monotonic() + 60)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(fd)
    assert b"hashing" not in quiet

    # Not a terminal: nothing on stderr either.
    proc2 = subprocess.run(
        [sys.executable, "-m", "airlock", "hash", "--workers", "1", str(big_file)],
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc2.stderr == b""


def test_scan_progress_on_a_terminal(tmp_path: Path) -> None:
    attack = next(a for a in ATTACKS if a.id == "os-system")
    attack.build(tmp_path, tmp_path / "pwned")
    _pickle_stream(tmp_path)
    fd, proc = _spawn_on_pty(["scan", str(tmp_path)])
    try:
        out = _read_all(fd, proc, time.monotonic() + 60)
        assert proc.wait(timeout=60) == 1
    finally:
        os.close(fd)
    assert proc.stdout is not None
    report = proc.stdout.read().decode()
    assert "os.system" in report or "posix.system" in report
    assert "scanning" not in report
    text = out.decode(errors="replace")
    assert f"scanning {tmp_path}: " in text
    assert "files" in text and "/s" in text
    assert "Traceback" not in text
