"""The command table: lazy entries match their modules, and start-up and scanning import nothing else."""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import airlock
from airlock._cli import COMMANDS, build_parser, main


def test_entries_match_their_modules() -> None:
    for entry in COMMANDS:
        command = entry.load()
        assert command.name == entry.name
        assert command.help == entry.help, f"{entry.name}: update the help line in airlock._cli.COMMANDS"


def test_full_parser_builds_and_every_flag_has_help() -> None:
    parser = build_parser("*")
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers) == 1
    choices: dict[str, argparse.ArgumentParser] = subparsers[0].choices
    assert set(choices) == {entry.name for entry in COMMANDS}
    for name, sub in choices.items():
        for option in sub._actions:
            if option.option_strings and option.dest != "help":
                assert option.help, f"airlock {name} {option.option_strings[0]} has no help text"


def test_top_level_help_and_unknown_command(capsys: object) -> None:
    assert main(["--help"]) == 0
    assert main(["no-such-command"]) == 2
    assert main([]) == 2


def test_scan_command_imports_no_other_command() -> None:
    code = (
        "import sys\n"
        "from airlock._cli import main\n"
        "main(['scan', '--help'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('airlock.gateway', 'airlock.sandbox', "
        "'airlock.integrity._hash', 'numpy', 'jinja2', 'starlette', 'torch')))\n"
        "print(loaded, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stderr.strip().splitlines()[-1] == "[]"


# -- start-up: what a command imports (non-timing: the modules themselves) ------------------------

#: Runs the real entry point (what the ``airlock`` script runs) and writes the modules it added
#: to ``sys.modules`` to argv[1]; nothing but ``sys`` and ``atexit`` is imported before it.
_PROBE = (
    "import sys, atexit\n"
    "before = set(sys.modules)\n"
    "out, sys.argv = sys.argv[1], ['airlock', *sys.argv[2:]]\n"
    "def dump():\n"
    "    with open(out, 'w') as fh:\n"
    "        fh.write('\\n'.join(sorted(set(sys.modules) - before)))\n"
    "atexit.register(dump)\n"
    "from airlock._cli import entry_point\n"
    "entry_point()\n"
)

#: Packages no start-up and no scan of a plain pickle or a PyTorch checkpoint may import: ML
#: frameworks, the gateway's and the signing stack's dependencies, parsers of other formats, and
#: standard-library machinery a scan never needs (spawning, networking, logging, temp files).
HEAVY = frozenset(
    {
        "torch", "numpy", "scipy", "pandas", "ml_dtypes", "safetensors", "gguf", "onnx", "onnxruntime",
        "google", "h5py", "tensorflow", "keras", "sklearn", "joblib", "transformers", "jinja2",
        "markupsafe", "yaml", "starlette", "uvicorn", "anyio", "httpx", "h11", "prometheus_client",
        "cryptography", "sigstore", "model_signing", "pydantic", "cyclonedx", "blake3", "pyseccomp",
        "pickle", "zipfile", "tarfile", "subprocess", "multiprocessing", "concurrent", "asyncio",
        "socket", "ssl", "http", "email", "logging", "tempfile", "random", "sqlite3", "xml",
    }
)  # fmt: skip

#: Standard-library modules a scan of a pickle or a checkpoint has no use for, whose import was a
#: third of its start-up: ``dataclasses`` (and the ``inspect``, ``ast``, ``dis``, ``tokenize`` it
#: imports; airlock's records are ``airlock._record``), ``shutil`` (argparse's terminal width; it
#: imports bz2 and lzma), the zip methods' decompressors and ``textwrap`` (help texts only); and
#: ``typing`` (a tenth of the start-up of a checkpoint scan, issue 10: the scan path imports
#: ``typing`` for type checkers only, and its named tuples are ``airlock._record.NamedTuple``).
STARTUP_SLOW = frozenset(
    {
        "dataclasses",
        "inspect",
        "ast",
        "dis",
        "tokenize",
        "shutil",
        "bz2",
        "lzma",
        "textwrap",
        "copy",
        "typing",
    }
)

#: What ``airlock scan PATH [--format F] [-q]`` no longer imports (issue 10: a twentieth of the scan
#: of one checkpoint): argparse and its gettext and locale (the command's own reader answers these
#: command lines, airlock._cli.scan_cmd.ScanCommand.parse_common), the parser module and the
#: optional-extras table (scan needs no extra).
COMMON_SCAN_SKIPS = frozenset(
    {"argparse", "gettext", "locale", "airlock._cli._parser", "airlock._cli._extras"}
)

#: airlock modules a scan of one format must not import: the other formats' readers and
#: analyses, and the machinery of the other commands.
_OTHER_FORMATS = (
    "airlock._formats.keras", "airlock._formats.onnx", "airlock._formats.gguf",
    "airlock._formats.savedmodel", "airlock._formats.safetensors", "airlock._formats.npy",
    "airlock._formats.tar", "airlock._formats.compressed", "airlock._analysis.template",
    "airlock.gateway", "airlock.sandbox", "airlock.integrity", "airlock._load", "airlock.loading",
)  # fmt: skip
_ZIP = ("airlock._formats.zip", "airlock._formats.torchscript")


def _imported(tmp_path: Path, *args: str) -> tuple[set[str], str]:
    out = tmp_path / "modules.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.exists(), proc.stderr
    return set(filter(None, out.read_text().split("\n"))), proc.stdout


def _matching(modules: set[str], prefixes: tuple[str, ...] | frozenset[str]) -> list[str]:
    return sorted(
        m for m in modules if any(m == p or m.startswith(p + ".") or m.startswith(p + "_") for p in prefixes)
    )


def test_version_imports_only_the_command_line(tmp_path: Path) -> None:
    modules, stdout = _imported(tmp_path, "--version")
    assert stdout == f"airlock {airlock.__version__}\n"
    # not argparse, typing, json, re or collections: a bare interpreter start plus airlock's own
    # (and modules built into the interpreter, such as gc, which cost nothing to import)
    added = {m for m in modules if m not in sys.builtin_module_names} - {"__future__"}
    assert added <= {"airlock", "airlock.errors", "airlock._cli"}, sorted(added)


def test_only_a_lone_version_flag_skips_the_parser(tmp_path: Path) -> None:
    modules, stdout = _imported(tmp_path, "--version", "--help")
    assert "argparse" in modules  # argparse answers it, and acts on --version first
    assert stdout == f"airlock {airlock.__version__}\n"


def test_an_uncommon_scan_command_line_still_gets_argparse(tmp_path: Path) -> None:
    path = tmp_path / "rows.pkl"
    path.write_bytes(pickle.dumps([1], protocol=4))
    modules, stdout = _imported(tmp_path, "scan", str(path), "--max-pickle-opcodes", "1000")
    assert "verdict: CLEAN" in stdout
    assert "argparse" in modules  # the probe sees the parser when it is used
    modules, stdout = _imported(tmp_path, "scan", str(path), "--jobs", "1", "-o", str(tmp_path / "r.txt"))
    assert "verdict: CLEAN" in (tmp_path / "r.txt").read_text() and stdout == ""
    assert "argparse" not in modules  # --jobs and -o are common: read without it


def test_scan_of_a_plain_pickle_imports_nothing_heavy(tmp_path: Path) -> None:
    path = tmp_path / "rows.pkl"
    path.write_bytes(pickle.dumps([{"id": 1, "token": "a"}], protocol=4))
    modules, stdout = _imported(tmp_path, "scan", str(path), "--format", "json")
    assert '"verdict": "CLEAN"' in stdout
    assert _matching(modules, HEAVY) == []
    assert sorted(modules & STARTUP_SLOW) == []
    assert sorted(modules & COMMON_SCAN_SKIPS) == []
    assert _matching(modules, _OTHER_FORMATS + _ZIP) == []
    assert "airlock._analysis.pickle_vm" in modules  # the probe does see what a scan imports


def test_scan_of_a_torch_checkpoint_imports_nothing_heavy(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "small.pt"
    torch.save({"w": torch.zeros(2, 2)}, path)
    modules, stdout = _imported(tmp_path, "scan", str(path), "--format", "json")
    assert '"verdict": "CLEAN"' in stdout
    assert _matching(modules, HEAVY) == []
    assert sorted(modules & STARTUP_SLOW) == []
    assert sorted(modules & COMMON_SCAN_SKIPS) == []
    assert _matching(modules, _OTHER_FORMATS) == []
    # one file whose name no folder check reads: the Hugging Face check is not even imported
    assert _matching(modules, ("airlock._formats.hf_folder", "airlock._strictjson")) == []
    assert "airlock._formats.torchscript" not in modules  # not a TorchScript archive
    assert "airlock._formats.zip_reader" in modules


def test_text_report_scan_imports_no_more(tmp_path: Path) -> None:
    """``airlock scan FILE`` (the text report, no flag): the same start-up as with --format json."""
    path = tmp_path / "rows.pkl"
    path.write_bytes(pickle.dumps([{"id": 1}], protocol=4))
    modules, stdout = _imported(tmp_path, "scan", str(path))
    assert "verdict: CLEAN" in stdout
    assert sorted(modules & (STARTUP_SLOW | COMMON_SCAN_SKIPS)) == []
    assert _matching(modules, HEAVY) == []


def test_scan_of_a_mixed_tree_with_jobs_imports_nothing_heavy(tmp_path: Path) -> None:
    """``airlock scan --jobs N TREE`` of the bench's kinds of files (bench/scale_bench.py): PyTorch
    checkpoints (one storage starting like a zlib stream, which the compressed reader sniffs),
    safetensors files and pickles. Neither typing nor argparse: each was milliseconds of every
    process (the parent's imports are serial under --jobs)."""
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tree = tmp_path / "tree"
    tree.mkdir()
    zlib_like = torch.tensor([0x78, 0x9C, 1, 2, 3, 4, 5, 6], dtype=torch.uint8)
    for i in range(300):
        torch.save({"w": zlib_like if i % 2 else torch.zeros(2, 2)}, tree / f"m{i:03d}.pt")
    for i in range(20):
        safetensors_torch.save_file({"w": torch.ones(2, 2)}, str(tree / f"s{i:03d}.safetensors"))
        (tree / f"p{i:03d}.pkl").write_bytes(pickle.dumps({"i": i}, protocol=4))
    for jobs in ("1", "2"):  # one process reads every file; with two, which reads what is a race
        modules, stdout = _imported(tmp_path, "scan", "-q", "--jobs", jobs, str(tree))
        assert stdout.endswith("verdict: CLEAN (340 clean; 0 skipped) exit code 0\n")
        if jobs == "1":
            assert "airlock._formats.compressed" in modules and "airlock._formats.safetensors" in modules
        # (lzma: the compressed reader imports it once it decompresses something, as it does here)
        assert sorted(modules & (STARTUP_SLOW | COMMON_SCAN_SKIPS) - {"lzma"}) == []
        assert "typing" not in modules and "argparse" not in modules
        # the workers are killed and reaped on the way to the report: not through ``signal``,
        # whose enums cost milliseconds to build (the pool sends SIGKILL by its number)
        assert "signal" not in modules
        assert _matching(modules, HEAVY) == []
