"""Outside attack: a job still reaches other pids through the calls that only *read* them.

Each job has a /proc of its own and every call that changes another pid (limits, priority,
affinity, signals) is refused. But the read-only calls that take a pid -- getsid, getpgid,
sched_getaffinity, sched_getparam, sched_getscheduler, sched_getattr, sched_rr_get_interval,
getpriority, ioprio_get, capget -- answered for pid 1 (the worker) and for every live sibling job,
and answered ESRCH for a pid that does not exist: a job could list the worker and its siblings
(their pids, when they start and end), and read state each sets on itself (its own nice value or
CPU affinity, which a job may change), a channel between jobs that are meant to share nothing.
Now each such call is refused (EPERM) for any pid but the job's own (0 or its pid), whether the
pid exists or not, in every configuration (root, uid 65534, no Landlock: seccomp alone).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from airlock.sandbox import Sandbox, SandboxPolicy
from tests.sandbox._payloads import bytes_tensor, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

pyseccomp = pytest.importorskip("pyseccomp", reason="the sandbox extra is part of airlock[dev]")

_CALLS = ("getsid", "getpgid", "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_getattr",
          "sched_rr_get_interval", "getpriority", "ioprio_get", "capget")  # fmt: skip


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as warm:
        yield warm


_PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {nr!r}
def run(name, pid):
    buf = ctypes.create_string_buffer(4096)
    header = (ctypes.c_uint32 * 2)(0x20080522, pid)
    args = {{
        "getsid": (pid,), "getpgid": (pid,), "sched_getaffinity": (pid, 128, buf),
        "sched_getparam": (pid, buf), "sched_getscheduler": (pid,), "sched_getattr": (pid, buf, 56, 0),
        "sched_rr_get_interval": (pid, buf), "getpriority": (0, pid), "ioprio_get": (1, pid),
        "capget": (header, buf),
    }}[name]
    ctypes.set_errno(0)
    result = libc.syscall(NR[name], *args)
    return 0 if result >= 0 else ctypes.get_errno()
def probe():
    me = os.getpid()
    targets = {{"worker": 1, "sibling": {sibling}, "absent": 4000000}}
    out = {{t: {{n: run(n, pid) for n in NR}} for t, pid in targets.items()}}
    out["self-0"] = {{n: run(n, 0) for n in NR}}
    out["self-pid"] = {{n: run(n, me) for n in NR}}
    return out
"""


def test_a_job_cannot_read_or_detect_other_pids(sandbox: Sandbox, tmp_path: Path) -> None:
    torch.save({"w": torch.ones(1)}, tmp_path / "sibling.pt")
    nr = {name: int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)) for name in _CALLS}
    with sandbox.open(tmp_path / "sibling.pt") as sibling:  # alive while the probe runs
        code = _PROBE.format(nr=nr, sibling=sibling._pid)
        setup = (
            f"namespace = {{}}\nexec({code!r}, namespace)\nimport builtins\n"
            "builtins.airlock_probe = lambda ns=namespace: __import__('json').dumps(ns['probe']()).encode()\n"
        )
        model = exec_then_eval_checkpoint(tmp_path / "pids.pt", setup, bytes_tensor("airlock_probe()"))
        with sandbox.open(model) as worker:
            seen: dict[str, Any] = json.loads(worker.state_dict()["evidence"].tobytes())
        assert sibling.state_dict()["w"].tolist() == [1.0]  # the sibling was alive all along
    # the job's own calls work: 0 and its own pid both name itself (capget names its pid in a
    # struct no filter can read: refused whoever it names; the job has no capability to ask about)
    readers = dict.fromkeys(_CALLS, 0) | {"capget": errno.EPERM}
    assert seen["self-0"] == readers, seen["self-0"]
    assert seen["self-pid"] == readers, seen["self-pid"]
    # any other pid, alive or not: refused alike, so not even its existence shows
    for target in ("worker", "sibling", "absent"):
        assert seen[target] == dict.fromkeys(_CALLS, errno.EPERM), (target, seen[target])
