"""Side-by-side scan benchmark: airlock vs picklescan, modelscan, fickling and ModelAudit.

Builds, under bench/.work/ (git-ignored):

* big files: a 1 GiB PyTorch zip checkpoint and a 1 GiB legacy checkpoint (~300 tensors each),
  a 1 GiB safetensors file, a 1 GiB GGUF file, and a pickle of one million small dicts (~22 MB:
  the shape of vocabularies and pickled datasets; goal <= 0.5x picklescan's time, <= 150 MB);
* the corpus: airlock's pickle attack fixtures (tests/fixtures/attacks.py, each with the name of
  its payload), malicious PyTorch zip checkpoints, the ordinary files of tests/fixtures/benign.py,
  and the peer corpus ../shared/corpora/picklescan-tests (labels from its manifest);

installs each peer tool from PyPI, pinned, into its own venv under bench/.work/venvs/, runs every
tool on every file as a CLI (process start included for all), and prints per tool: malicious
blocked (verdict not clean), malicious named (the payload's dotted name appears in the output; only
for fixtures whose payload is known), benign flagged, and for each big file seconds (median of
--runs) and peak RSS of the tool's process.

"Blocked" for each tool: airlock exit code != 0; picklescan exit code != 0; modelscan exit code 1
or 2 (3 means "no supported files": skipped, not blocked); fickling --check-safety exit code != 0;
ModelAudit exit code != 0. ModelAudit's telemetry is switched off (PROMPTFOO_DISABLE_TELEMETRY=1).

Usage: .venv/bin/python bench/scan_bench.py [--runs 3] [--skip-big] [--skip-corpus] [--keep]
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
CORPUS = REPO.parent / "shared" / "corpora" / "picklescan-tests"
GIB = 1024**3

PEERS = {
    "picklescan": ["picklescan==1.0.5"],
    "modelscan": ["modelscan==0.8.8"],
    "fickling": ["fickling==0.1.12", "typing_extensions"],  # fickling 0.1.12 imports it undeclared
    "modelaudit": ["modelaudit==0.2.54"],
}
ENV = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_COLOR": "1"}
# Every tool runs with bytecode caching on: pip compiled the peers' bytecode when it installed
# them, and airlock (an editable install here) gets the same by compileall before the timings.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
GNU_TIME = "/usr/bin/time"
_RSS_MARK = "__bench_max_rss_kb__"


@dataclass
class Run:
    code: int
    output: str
    seconds: float
    max_rss_mb: float


def run(argv: list[str], timeout: float = 600) -> Run:
    """Run a command and measure its time and peak RSS.

    The peak RSS comes from GNU time (``%M``) when it is installed: the kernel carries a forked
    child's pre-exec peak into ``ru_maxrss``, so a child forked straight from this (large) bench
    process would report this process's size; GNU time's own child is forked from a small process.
    """
    if os.path.exists(GNU_TIME):
        argv = [GNU_TIME, "-f", f"{_RSS_MARK} %M", *argv]
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        # A scratch working directory: some tools write result files into it (fickling writes
        # safety_results.json).
        scratch = WORK / "cwd"
        scratch.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=scratch)
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
    return Run(proc.returncode, text, seconds, rss_kb / 1024)


# -- tools ---------------------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    argv: Callable[[Path], list[str]]
    blocked: Callable[[Run], bool]


def _venv_bin(name: str, exe: str) -> str:
    return str(VENVS / name / "bin" / exe)


TOOLS = [
    Tool("airlock", lambda p: [str(REPO / ".venv" / "bin" / "airlock"), "scan", str(p), "--format", "json"], lambda r: r.code != 0),
    Tool("picklescan", lambda p: [_venv_bin("picklescan", "picklescan"), "--path", str(p)], lambda r: r.code != 0),
    Tool("modelscan", lambda p: [_venv_bin("modelscan", "modelscan"), "-p", str(p)], lambda r: r.code in (1, 2)),
    Tool("fickling", lambda p: [_venv_bin("fickling", "fickling"), "--check-safety", str(p)], lambda r: r.code != 0),
    Tool("modelaudit", lambda p: [_venv_bin("modelaudit", "modelaudit"), "scan", str(p)], lambda r: r.code != 0),
]  # fmt: skip


def ensure_peers() -> None:
    for name, specs in PEERS.items():
        venv = VENVS / name
        stamp = venv / ".installed"
        if stamp.exists() and stamp.read_text() == " ".join(specs):
            continue
        print(f"installing {' '.join(specs)} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *specs], check=True, env=ENV)
        stamp.write_text(" ".join(specs))


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


def build_corpus(folder: Path) -> list[Sample]:
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
    if CORPUS.exists():
        manifest = json.loads((CORPUS / "manifest.json").read_text())
        for item in manifest["samples"]:
            samples.append(
                Sample(CORPUS / item["file"], item["kind"] == "malicious", None, "picklescan-corpus")
            )
    else:
        print(f"NOTE: {CORPUS} is absent: the peer corpus is not part of this run", flush=True)
    if marker.exists():
        raise SystemExit("a payload ran while building the corpus")
    return samples


def corpus_table(samples: list[Sample]) -> None:
    mal = [s for s in samples if s.malicious]
    ben = [s for s in samples if not s.malicious]
    known = [s for s in mal if s.payload]
    print(f"\ncorpus: {len(mal)} malicious ({len(known)} with a known payload name), {len(ben)} benign\n")
    header = f"{'tool':<11} {'blocked':>13} {'named':>13} {'benign flagged':>15}  misses (first 6)"
    print(header)
    print("-" * len(header))
    for tool in TOOLS:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda s, t=tool: (s, run(t.argv(s.path), timeout=300)), samples))
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


def big_table(paths: dict[str, Path], runs: int) -> None:
    print(
        f"\nbig files (median of {runs} round-robin runs after one warm-up; peak RSS of the tool's process)\n"
    )
    header = f"{'file':<20} {'tool':<22} {'seconds':>8} {'peak MB':>8} {'verdict/exit':>13}"
    print(header)
    print("-" * len(header))
    for label, path in paths.items():
        times: dict[str, float] = {}
        tools: list[tuple[str, list[str]]] = [(t.name, t.argv(path)) for t in TOOLS]
        if label in _HEADER_READERS:
            tools.append(
                (
                    "header read (reference)",
                    [str(REPO / ".venv" / "bin" / "python"), "-c", _HEADER_READERS[label], str(path)],
                )
            )
        for _name, argv in tools:  # one untimed warm-up run each: page cache, bytecode
            run(argv)
        rounds: dict[str, list[Run]] = {name: [] for name, _argv in tools}
        for _ in range(runs):  # round-robin, so drift on a shared machine hits every tool alike
            for name, argv in tools:
                rounds[name].append(run(argv))
        for name, _argv in tools:
            results = rounds[name]
            seconds = statistics.median(r.seconds for r in results)
            rss = max(r.max_rss_mb for r in results)
            times[name] = seconds
            verdict = str(results[0].code)
            if name == "airlock":
                try:
                    verdict = json.loads(results[0].output)["verdict"]
                except (ValueError, KeyError):
                    verdict = f"exit {results[0].code}"
            print(f"{label:<20} {name:<22} {seconds:>8.3f} {rss:>8.1f} {verdict:>13}")
        ref = "picklescan" if label.startswith(("torch", "pickle")) else "header read (reference)"
        print(f"{label:<20} ratio airlock / {ref}: {times['airlock'] / times[ref]:.2f}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per big file and tool (median is shown)")
    parser.add_argument("--skip-big", action="store_true", help="skip the 1 GiB files")
    parser.add_argument("--skip-corpus", action="store_true", help="skip the corpus")
    parser.add_argument(
        "--only", default="", help="big files whose label starts with this (e.g. 'pickle', 'torch zip')"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep bench/.work/scan (the big files) afterwards"
    )
    args = parser.parse_args()
    ensure_peers()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "airlock")], check=True, env=ENV
    )
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_corpus:
            corpus_dir = WORK / "corpus"
            shutil.rmtree(corpus_dir, ignore_errors=True)
            corpus_table(build_corpus(corpus_dir))
        if not args.skip_big:
            big_table(build_big(WORK / "big", args.only), args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
