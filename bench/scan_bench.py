"""Side-by-side scan benchmark: airlock vs picklescan, modelscan, fickling and ModelAudit.

Builds, under bench/.work/ (git-ignored):

* big files: a 1 GiB PyTorch zip checkpoint and a 1 GiB legacy checkpoint (~300 tensors each),
  a 1 GiB safetensors file, a 1 GiB GGUF file, and a pickle of one million small dicts (~22 MB:
  the shape of vocabularies and pickled datasets; goal <= 0.5x picklescan's time, <= 150 MB);
* the corpus: airlock's pickle attack fixtures (tests/fixtures/attacks.py, each with the name of
  its payload), malicious PyTorch zip checkpoints, the ordinary files of tests/fixtures/benign.py,
  and the peer corpus ../shared/corpora/picklescan-tests (labels from its manifest);

installs each peer tool from PyPI, pinned, into its own venv under bench/.work/venvs/ (picklescan,
pinned in requirements/dev.lock, is used from the running interpreter's environment when that
environment holds exactly the pinned version), runs every tool on every file as a CLI (process
start included for all), and prints per tool: malicious blocked (verdict not clean), malicious
named (the payload's dotted name appears in the output; only for fixtures whose payload is known),
benign flagged, and for each big file wall seconds and CPU seconds (medians of --runs) and peak
RSS of the tool's process, with the goals of the acceptance (torch zip: airlock <= 0.6x
picklescan's wall time; 1M dicts: <= 0.5x and <= 150 MB). A start-up table compares
``airlock --version`` and ``airlock scan`` of a small checkpoint with a bare interpreter start
(``python -c pass``) and with picklescan on the same small file.

airlock runs from this checkout, whatever the interpreter: ``src/`` of the checkout the bench lives
in is put first on PYTHONPATH (an existing PYTHONPATH is kept after it), and airlock is started as
the ``airlock`` script next to ``sys.executable`` (``sys.executable -m airlock`` without one). The
bench prints the airlock package it measured. ``--baseline-src DIR`` adds a second airlock (another
checkout's ``src/``, e.g. ``git archive HEAD~3 src | tar -x -C /tmp/old``) to the big-file and
start-up tables, run round-robin with the others, for before/after comparisons on a shared machine;
the load average is printed with every table. ``--cold`` drops each big file from the page cache
before every timed run (a model just downloaded, or scanned once long ago), and the "disk MB"
column shows what each tool read from disk.

"Blocked" for each tool: airlock exit code != 0; picklescan exit code != 0; modelscan exit code 1
or 2 (3 means "no supported files": skipped, not blocked); fickling --check-safety exit code != 0;
ModelAudit exit code != 0. ModelAudit's telemetry is switched off (PROMPTFOO_DISABLE_TELEMETRY=1).

``--instructions`` also runs each big-file command once under valgrind (callgrind) and prints the
ratio of the user-space instructions executed: on a shared machine wall times move with the load,
instruction counts do not (for the 1 GiB torch zip the instruction ratio matched the wall ratio of
a quiet machine within 0.01).

Usage: python bench/scan_bench.py [--runs 3] [--skip-big] [--skip-corpus] [--skip-startup] [--keep] [--cold]
                                  [--only LABEL] [--tools airlock,picklescan] [--baseline-src DIR]
                                  [--instructions]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORK = REPO / "bench" / ".work" / "scan"
VENVS = REPO / "bench" / ".work" / "venvs"
#: the peer corpus: shared/corpora/picklescan-tests next to the checkout or next to a folder above
#: it (a worktree under wt/ finds the one the main checkout sees); --corpus names another
CORPUS = next(
    (
        folder / "shared" / "corpora" / "picklescan-tests"
        for folder in REPO.parents
        if (folder / "shared" / "corpora" / "picklescan-tests" / "manifest.json").exists()
    ),
    REPO.parent / "shared" / "corpora" / "picklescan-tests",
)
GIB = 1024**3

PEERS = {
    "picklescan": ["picklescan==1.0.5"],  # the version requirements/dev.lock pins
    "modelscan": ["modelscan==0.8.8"],
    "fickling": ["fickling==0.1.12", "typing_extensions"],  # fickling 0.1.12 imports it undeclared
    "modelaudit": ["modelaudit==0.2.54"],
}


def _with_src(src: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``src`` first on PYTHONPATH (what was there stays, after it)."""
    rest = env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(src), rest) if p)}


BASE_ENV = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_COLOR": "1"}
# Every tool runs with bytecode caching on: pip compiled the peers' bytecode when it installed
# them, and airlock (an editable install here) gets the same by compileall before the timings.
BASE_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
#: airlock from this checkout: its src/ first on the path, whatever the interpreter's install says
ENV = _with_src(REPO / "src", BASE_ENV)
GNU_TIME = "/usr/bin/time"
_RSS_MARK = "__bench_max_rss_kb__"


@dataclass
class Run:
    code: int
    output: str
    seconds: float
    max_rss_mb: float
    cpu_seconds: float = 0.0
    #: bytes the process read from disk (``ru_inblock``; 0 when everything came from the page cache)
    disk_bytes: int = 0


def run(argv: list[str], timeout: float = 600, env: dict[str, str] | None = None) -> Run:
    """Run a command and measure its wall time, CPU time (user + system) and peak RSS.

    The peak RSS comes from GNU time (``%M``) when it is installed: the kernel carries a forked
    child's pre-exec peak into ``ru_maxrss``, so a child forked straight from this (large) bench
    process would report this process's size; GNU time's own child is forked from a small process.
    CPU time counts the tool and its children (``wait4`` of the direct child, which waits for its
    own); it moves less than wall time when the machine is shared.
    """
    if os.path.exists(GNU_TIME):
        argv = [GNU_TIME, "-f", f"{_RSS_MARK} %M", *argv]
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        # A scratch working directory: some tools write result files into it (fickling writes
        # safety_results.json).
        scratch = WORK / "cwd"
        scratch.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=ENV if env is None else env, cwd=scratch
        )
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    rss_kb = float(usage.ru_maxrss)
    marks = [line for line in text.splitlines() if line.startswith(_RSS_MARK)]
    if marks:
        rss_kb = float(marks[-1].split()[-1])
        text = "\n".join(line for line in text.splitlines() if not line.startswith(_RSS_MARK))
    cpu = usage.ru_utime + usage.ru_stime
    return Run(proc.returncode, text, seconds, rss_kb / 1024, cpu, usage.ru_inblock * 512)


def drop_from_page_cache(path: Path) -> None:
    """Evict one file's pages (only this file: nothing else on a shared machine is disturbed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


# -- tools ---------------------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    argv: Callable[[Path], list[str]]
    blocked: Callable[[Run], bool]
    env: dict[str, str] | None = None


def _venv_bin(name: str, exe: str) -> str:
    return str(VENVS / name / "bin" / exe)


def airlock_command(python: str = sys.executable) -> list[str]:
    """The ``airlock`` script next to the interpreter (what a user runs), else ``python -m airlock``."""
    script = Path(python).parent / "airlock"
    return [str(script)] if script.is_file() else [python, "-m", "airlock"]


def _installed_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def peer_bin(name: str, exe: str) -> str:
    """A peer's CLI: next to the running interpreter when that environment holds exactly the pinned
    version (picklescan is pinned in requirements/dev.lock), else from its own bench venv."""
    pinned = PEERS[name][0].split("==")[1]
    local = Path(sys.executable).parent / exe
    if local.is_file() and _installed_version(name) == pinned:
        return str(local)
    return _venv_bin(name, exe)


def airlock_tool(name: str = "airlock", env: dict[str, str] | None = None) -> Tool:
    return Tool(
        name, lambda p: [*airlock_command(), "scan", str(p), "--format", "json"], lambda r: r.code != 0, env
    )


TOOLS = [
    airlock_tool(),
    Tool("picklescan", lambda p: [peer_bin("picklescan", "picklescan"), "--path", str(p)], lambda r: r.code != 0),
    Tool("modelscan", lambda p: [_venv_bin("modelscan", "modelscan"), "-p", str(p)], lambda r: r.code in (1, 2)),
    Tool("fickling", lambda p: [_venv_bin("fickling", "fickling"), "--check-safety", str(p)], lambda r: r.code != 0),
    Tool("modelaudit", lambda p: [_venv_bin("modelaudit", "modelaudit"), "scan", str(p)], lambda r: r.code != 0),
]  # fmt: skip


def ensure_peers(names: set[str]) -> None:
    for name, specs in PEERS.items():
        if name not in names or not peer_bin(name, name).startswith(str(VENVS)):
            continue
        venv = VENVS / name
        stamp = venv / ".installed"
        if stamp.exists() and stamp.read_text() == " ".join(specs):
            continue
        print(f"installing {' '.join(specs)} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *specs], check=True, env=BASE_ENV)
        stamp.write_text(" ".join(specs))


def measured_airlock(env: dict[str, str]) -> str:
    """Where the airlock package that ``env`` runs comes from (printed with the results)."""
    probe = [sys.executable, "-c", "import airlock; print(airlock.__file__)"]
    done = subprocess.run(probe, capture_output=True, text=True, env=env, check=True)
    return str(Path(done.stdout.strip()).parent)


_ALIASES = {"os": ("os", "posix", "nt")}


def named(expected: str, output: str) -> bool:
    """Does the tool's output name the payload? Dotted names are matched after folding the usual
    separators (space, quotes, colon) into dots; ``os.x`` also matches ``posix.x``."""
    folded = re.sub(r"[\s'\":,()]+", ".", output)
    module, _, name = expected.rpartition(".")
    heads = _ALIASES.get(module, (module,))
    for head in heads:
        if f"{head}.{name}" in folded:
            return True
        if re.search(rf"'{re.escape(name)}'\s+from\s+module\s+'{re.escape(head)}'", output):
            return True
    return False


# -- corpus ----------------------------------------------------------------------------------------


@dataclass
class Sample:
    path: Path
    malicious: bool
    payload: str | None  # dotted name of the payload, when known
    source: str


class _Payload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def build_corpus(folder: Path, corpus: Path = CORPUS) -> list[Sample]:
    from tests.fixtures.attacks import ATTACKS
    from tests.fixtures.benign import BENIGN

    samples: list[Sample] = []
    attacks = folder / "attacks"
    attacks.mkdir(parents=True)
    marker = folder / "PWNED"
    for attack in ATTACKS:
        sub = attacks / attack.id
        sub.mkdir()
        samples.append(Sample(attack.build(sub, marker), True, attack.names, f"airlock:{attack.id}"))
    import torch

    zips = folder / "torch_zip_attacks"
    zips.mkdir()
    for name, obj in {
        "payload_in_state_dict.pt": {"w": torch.zeros(2), "x": _Payload(f"touch {marker}")},
        "payload_as_root.pt": _Payload(f"touch {marker}"),
    }.items():
        torch.save(obj, zips / name)
        samples.append(Sample(zips / name, True, "os.system", f"airlock:{name}"))
    benign = folder / "benign"
    for key, builder in BENIGN.items():
        sub = benign / key
        sub.mkdir(parents=True)
        for path in builder(sub):
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            samples.extend(Sample(f, False, None, f"airlock:{key}") for f in files if f.suffix != ".json")
    if corpus.exists():
        manifest = json.loads((corpus / "manifest.json").read_text())
        for item in manifest["samples"]:
            samples.append(
                Sample(corpus / item["file"], item["kind"] == "malicious", None, "picklescan-corpus")
            )
    else:
        print(f"NOTE: {corpus} is absent: the peer corpus is not part of this run", flush=True)
    if marker.exists():
        raise SystemExit("a payload ran while building the corpus")
    return samples


def corpus_table(samples: list[Sample], tools: list[Tool]) -> None:
    mal = [s for s in samples if s.malicious]
    ben = [s for s in samples if not s.malicious]
    known = [s for s in mal if s.payload]
    print(f"\ncorpus: {len(mal)} malicious ({len(known)} with a known payload name), {len(ben)} benign\n")
    header = f"{'tool':<11} {'blocked':>13} {'named':>13} {'benign flagged':>15}  misses (first 6)"
    print(header)
    print("-" * len(header))
    for tool in tools:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(
                pool.map(lambda s, t=tool: (s, run(t.argv(s.path), timeout=300, env=t.env)), samples)
            )
        blocked = [s for s, r in results if s.malicious and tool.blocked(r)]
        missed = [s for s, r in results if s.malicious and not tool.blocked(r)]
        named_ok = [s for s, r in results if s.payload and named(s.payload, r.output)]
        flagged = [s for s, r in results if not s.malicious and tool.blocked(r)]
        misses = ", ".join(s.path.name for s in missed[:6])
        print(
            f"{tool.name:<11} {len(blocked):>6}/{len(mal):<6} {len(named_ok):>6}/{len(known):<6} "
            f"{len(flagged):>7}/{len(ben):<7}  {misses}"
        )
        if tool.name == "airlock" and flagged:
            print("   airlock flagged benign: " + ", ".join(str(s.path) for s in flagged))


# -- big files ---------------------------------------------------------------------------------------


def _tensors(total: int, count: int) -> list[tuple[str, tuple[int, ...]]]:
    per = total // count // 4
    side = int(per**0.5)
    return [(f"layers.{i}.weight", (side, per // side)) for i in range(count)]


def build_big(folder: Path, only: str = "") -> dict[str, Path]:
    """The big files whose label starts with ``only``, built once under ``folder``."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    shapes = _tensors(GIB, 300)
    paths = {
        "torch zip 1 GiB": folder / "big_zip.pt",
        "torch legacy 1 GiB": folder / "big_legacy.pt",
        "safetensors 1 GiB": folder / "big.safetensors",
        "gguf 1 GiB": folder / "big.gguf",
        "pickle 1M dicts": folder / "dicts.pkl",
    }
    paths = {label: path for label, path in paths.items() if label.startswith(only)}
    missing = {label for label, path in paths.items() if not path.exists()}
    if missing & {"torch zip 1 GiB", "torch legacy 1 GiB", "safetensors 1 GiB"}:
        import torch
        from safetensors.numpy import save_file

        state = {name: torch.ones(shape) for name, shape in shapes}
        if "torch zip 1 GiB" in missing:
            torch.save(state, paths["torch zip 1 GiB"])
        if "torch legacy 1 GiB" in missing:
            torch.save(state, paths["torch legacy 1 GiB"], _use_new_zipfile_serialization=False)
        if "safetensors 1 GiB" in missing:
            save_file({k: v.numpy() for k, v in state.items()}, str(paths["safetensors 1 GiB"]))
        del state
    if "gguf 1 GiB" in missing:
        import gguf

        writer = gguf.GGUFWriter(str(paths["gguf 1 GiB"]), "llama")
        writer.add_chat_template(_LLAMA3_TEMPLATE)
        for name, shape in shapes:
            writer.add_tensor(name, np.ones(shape, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    if "pickle 1M dicts" in missing:
        rows = [{"id": i, "token": f"w{i}"} for i in range(1_000_000)]
        with open(paths["pickle 1M dicts"], "wb") as handle:
            pickle.dump(rows, handle, protocol=4)
        del rows
    os.sync()  # flush the new files now, not during the timings
    return paths


_LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_HEADER_READERS = {
    "safetensors 1 GiB": "from safetensors import safe_open; import sys; safe_open(sys.argv[1], 'np').keys()",
    "gguf 1 GiB": "import gguf, sys; r = gguf.GGUFReader(sys.argv[1]); len(r.tensors)",
}


#: the acceptance goals of issue 10: airlock's wall time / picklescan's, and airlock's peak MB
_GOALS = {"torch zip 1 GiB": (0.6, None), "pickle 1M dicts": (0.5, 150.0)}


def _verdict(name: str, result: Run) -> str:
    if name.startswith("airlock"):
        try:
            return str(json.loads(result.output)["verdict"])
        except (ValueError, KeyError, TypeError):
            return f"exit {result.code}"
    return str(result.code)


def timed_rounds(
    commands: list[tuple[str, list[str], dict[str, str] | None]], runs: int, cold: Path | None = None
) -> dict[str, list[Run]]:
    """One untimed warm-up run of each command (page cache, bytecode), then ``runs`` round-robin
    rounds, so drift on a shared machine hits every command alike. ``cold``: a file dropped from
    the page cache before every timed run."""
    for _name, argv, env in commands:
        run(argv, env=env)
    rounds: dict[str, list[Run]] = {name: [] for name, _argv, _env in commands}
    for _ in range(runs):
        for name, argv, env in commands:
            if cold is not None:
                drop_from_page_cache(cold)
            rounds[name].append(run(argv, env=env))
    return rounds


def instructions_of(argv: list[str], env: dict[str, str] | None) -> int | None:
    """User-space instructions one run executes (valgrind's callgrind ``Ir``; None without
    valgrind): what the CPU must do, whatever else the machine is doing."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    scratch = WORK / "cwd"
    scratch.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True, text=True, env=ENV if env is None else env, cwd=scratch, timeout=600, check=False,
    )  # fmt: skip
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    return int(found.group(1)) if found else None


def instruction_ratios(
    label: str, commands: list[tuple[str, list[str], dict[str, str] | None]], ref: str
) -> None:
    """--instructions: each command once under valgrind, and airlock's instructions / the
    reference's. On a shared machine wall ratios move with the load; this one does not (the
    quiet-machine wall ratio of issue 10 tracked it within 0.01)."""
    counts = {name: instructions_of(argv, env) for name, argv, env in commands}
    base = counts.get(ref)
    if base is None:
        print(f"{label:<20} instructions: valgrind is not installed or failed")
        return
    for name, count in counts.items():
        if name.startswith("airlock") and count is not None:
            print(
                f"{label:<20} instructions {name} / {ref}: {count / 1e6:.0f}M / {base / 1e6:.0f}M "
                f"= {count / base:.2f}"
            )


def big_table(
    paths: dict[str, Path], runs: int, tools: list[Tool], cold: bool = False, instructions: bool = False
) -> None:
    cache = "each file dropped from the page cache before every run" if cold else "page cache warm"
    print(
        f"\nbig files (medians of {runs} round-robin runs after one warm-up; {cache}; wall and CPU "
        f"seconds (user + system); MB read from disk; peak RSS of the tool's process; "
        f"{load_average()} at the start)\n"
    )
    header = (
        f"{'file':<20} {'tool':<23} {'seconds':>8} {'cpu s':>7} {'disk MB':>8} {'peak MB':>8} "
        f"{'verdict/exit':>13}"
    )
    print(header)
    print("-" * len(header))
    for label, path in paths.items():
        times: dict[str, float] = {}
        cpus: dict[str, float] = {}
        peaks: dict[str, float] = {}
        commands = [(t.name, t.argv(path), t.env) for t in tools]
        if label in _HEADER_READERS:
            reader = [sys.executable, "-c", _HEADER_READERS[label], str(path)]
            commands.append(("header read (reference)", reader, None))
        rounds = timed_rounds(commands, runs, path if cold else None)
        for name, results in rounds.items():
            seconds = statistics.median(r.seconds for r in results)
            cpu = statistics.median(r.cpu_seconds for r in results)
            disk = statistics.median(r.disk_bytes for r in results) / 1e6
            peaks[name] = max(r.max_rss_mb for r in results)
            times[name] = seconds
            cpus[name] = cpu
            verdict = _verdict(name, results[0])
            print(
                f"{label:<20} {name:<23} {seconds:>8.3f} {cpu:>7.3f} {disk:>8.1f} {peaks[name]:>8.1f} "
                f"{verdict:>13}"
            )
        ref = "picklescan" if label.startswith(("torch", "pickle")) else "header read (reference)"
        for name, seconds in times.items():
            if not name.startswith("airlock") or ref not in times:
                continue
            ratio = seconds / times[ref]
            # the goal is on wall time; CPU time is the steadier witness on a loaded machine
            cpu_ratio = cpus[name] / cpus[ref] if cpus[ref] else float("nan")
            line = f"{label:<20} ratio {name} / {ref}: {ratio:.2f} (CPU {cpu_ratio:.2f})"
            goal_ratio, goal_mb = _GOALS.get(label, (None, None))
            if goal_ratio is not None:
                met = ratio <= goal_ratio and (goal_mb is None or peaks[name] <= goal_mb)
                mb = f" and <= {goal_mb:.0f} MB" if goal_mb is not None else ""
                line += f" (goal <= {goal_ratio}{mb}: {'met' if met else 'NOT met'})"
            print(line)
        print(f"{'':<20} ({load_average()} after)")
        if instructions:
            instruction_ratios(label, commands, ref)
        print()


#: the standard-library modules that airlock's scan path cannot do without (paths are pathlib, the
#: report is json; the records are airlock's own, typing is for type checkers only and the common
#: command lines are read without argparse): a floor for the start-up of ``airlock scan``
_SCAN_STDLIB = "pathlib, json"


def startup_table(folder: Path, runs: int, tools: list[Tool]) -> None:
    """Process start-up: ``airlock --version`` and a scan of a small pickle checkpoint, against a
    bare interpreter start and picklescan on the same file."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    small = folder / "small.pt"
    torch.save({"w": torch.zeros(4, 4), "b": torch.zeros(4)}, small)
    commands: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("python -c pass", [sys.executable, "-c", "pass"], None),
        # what importing the standard-library modules every airlock scan needs costs by itself
        ("python: import " + _SCAN_STDLIB, [sys.executable, "-c", f"import {_SCAN_STDLIB}"], None),
    ]
    for tool in tools:
        if tool.name.startswith("airlock"):
            commands.append((f"{tool.name} --version", [*airlock_command(), "--version"], tool.env))
    commands += [(f"{t.name} scan small.pt", t.argv(small), t.env) for t in tools if t.name != "modelaudit"]
    rounds = timed_rounds(commands, runs)
    print(f"\nstart-up (medians of {runs} round-robin runs; {load_average()})\n")
    header = f"{'command':<54} {'seconds':>8} {'cpu s':>7} {'x python':>9} {'exit':>5}"
    print(header)
    print("-" * len(header))
    bare = statistics.median(r.seconds for r in rounds["python -c pass"])
    for name, results in rounds.items():
        seconds = statistics.median(r.seconds for r in results)
        cpu = statistics.median(r.cpu_seconds for r in results)
        print(f"{name:<54} {seconds:>8.3f} {cpu:>7.3f} {seconds / bare:>9.2f} {results[0].code:>5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per big file and tool (median is shown)")
    parser.add_argument("--skip-big", action="store_true", help="skip the 1 GiB files")
    parser.add_argument("--skip-corpus", action="store_true", help="skip the corpus")
    parser.add_argument("--skip-startup", action="store_true", help="skip the start-up table")
    parser.add_argument(
        "--only", default="", help="big files whose label starts with this (e.g. 'pickle', 'torch zip')"
    )
    parser.add_argument(
        "--tools",
        default=",".join(t.name for t in TOOLS),
        help="comma-separated tools to run (default all; airlock is always run)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        metavar="DIR",
        help="also time the airlock package in DIR (another checkout's src/), round-robin with the others",
    )
    parser.add_argument(
        "--corpus", type=Path, default=CORPUS, help=f"the peer corpus folder (default {CORPUS})"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop each big file from the page cache before every timed run (posix_fadvise; that file only)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep bench/.work/scan (the big files) afterwards"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count each big-file command's instructions once under valgrind (a load-independent ratio)",
    )
    args = parser.parse_args()
    wanted = set(args.tools.split(",")) | {"airlock"}
    tools = [t for t in TOOLS if t.name in wanted]
    if args.baseline_src is not None:
        baseline_env = _with_src(args.baseline_src.resolve(), BASE_ENV)
        tools.insert(1, airlock_tool("airlock (baseline)", baseline_env))
    ensure_peers(wanted)
    for tool in tools:
        if tool.name.startswith("airlock"):
            env = ENV if tool.env is None else tool.env
            src = Path(env["PYTHONPATH"].split(os.pathsep)[0])
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(src / "airlock")], check=True, env=env
            )
            print(f"{tool.name}: {' '.join(airlock_command())} with {measured_airlock(env)}")
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_startup:
            startup_table(WORK / "startup", max(args.runs, 5), tools)
        if not args.skip_corpus:
            corpus_dir = WORK / "corpus"
            shutil.rmtree(corpus_dir, ignore_errors=True)
            corpus_table(build_corpus(corpus_dir, args.corpus), tools)
        if not args.skip_big:
            big_table(build_big(WORK / "big", args.only), args.runs, tools, args.cold, args.instructions)
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
