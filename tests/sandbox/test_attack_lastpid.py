"""Outside attack: a job still sees other pids being made, through the pid namespace's counters.

A job's /proc has no pid but its own, and (test_attack_pids) no call tells it about another pid.
But ``/proc/sys/kernel/ns_last_pid`` and the last field of ``/proc/loadavg`` print the last pid
allocated in the pid namespace the job shares with the worker and its siblings: a job that polls
them saw each sibling job (and each thread of one) start, and its pid. Now the job's ``loadavg``
is a copy whose last field is its own pid and ``ns_last_pid`` reads empty (/dev/null over it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from airlock.sandbox import Sandbox, SandboxPolicy
from tests.sandbox._payloads import bytes_tensor, exec_checkpoint, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as warm:
        yield warm


_PROBE = """
import os, time
def last():
    out = []
    for path in ("/proc/sys/kernel/ns_last_pid", "/proc/loadavg"):
        try:
            with open(path) as f:
                out.append(int(f.read().split()[-1].split("/")[-1]))
        except (OSError, ValueError, IndexError):
            pass
    return out
def probe():
    me = os.getpid()
    seen = set()
    end = time.monotonic() + 8
    while time.monotonic() < end:
        seen.update(last())
        time.sleep(0.01)
    return {"me": me, "seen": sorted(seen)}
"""


def _run(sandbox: Sandbox, tmp_path: Path) -> tuple[dict[str, Any], int]:
    setup = (
        f"namespace = {{}}\nexec({_PROBE!r}, namespace)\nimport builtins\n"
        "builtins.airlock_probe = lambda ns=namespace: __import__('json').dumps(ns['probe']()).encode()\n"
    )
    model = exec_then_eval_checkpoint(tmp_path / "lastpid.pt", setup, bytes_tensor("airlock_probe()"))
    torch.save({"w": torch.ones(1)}, tmp_path / "sibling.pt")
    sibling: dict[str, int] = {}

    def start_sibling() -> None:
        time.sleep(3)  # the probe polls by now
        with sandbox.open(tmp_path / "sibling.pt") as other:
            sibling["pid"] = other._pid

    thread = threading.Thread(target=start_sibling)
    thread.start()
    try:
        with sandbox.open(model) as worker:
            seen = json.loads(worker.state_dict()["evidence"].tobytes())
    finally:
        thread.join(60)
    return seen, sibling["pid"]


def test_a_job_does_not_see_a_sibling_start(sandbox: Sandbox, tmp_path: Path) -> None:
    seen, sibling = _run(sandbox, tmp_path)
    assert sibling != seen["me"]
    assert sibling not in seen["seen"], seen
    assert seen["seen"] == [seen["me"]], seen  # not vacuous: loadavg was read, and names only the job


_LOCKER = """
import fcntl, os, time
fd = os.open("held", os.O_CREAT | os.O_RDWR, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX)
time.sleep(6)
"""

_LOCKS = """
import os, time
def probe():
    out = []
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            with open("/proc/locks") as f:
                out.append(f.read())
        except OSError as exc:
            return {"me": os.getpid(), "pids": [], "error": exc.errno}
        time.sleep(0.05)
    pids = sorted({int(line.split()[4]) for text in out for line in text.splitlines() if len(line.split()) > 4})
    return {"me": os.getpid(), "pids": pids}
"""


def test_a_job_does_not_see_a_siblings_locks(sandbox: Sandbox, tmp_path: Path) -> None:
    """``/proc/locks`` lists every lock of the system with its holder's pid (as the reader's pid
    namespace names it): a sibling job's lock showed its pid. Now the job's ``/proc/locks`` is empty."""
    locker = exec_checkpoint(tmp_path / "locker.pt", _LOCKER)
    setup = (
        f"namespace = {{}}\nexec({_LOCKS!r}, namespace)\nimport builtins\n"
        "builtins.airlock_probe = lambda ns=namespace: __import__('json').dumps(ns['probe']()).encode()\n"
    )
    model = exec_then_eval_checkpoint(tmp_path / "locks.pt", setup, bytes_tensor("airlock_probe()"))
    pids: list[int] = []

    def hold() -> None:
        with sandbox.open(locker) as other:
            pids.append(other._pid)

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(2)  # the locker holds its lock by now (it sleeps 6 s while it loads)
    try:
        with sandbox.open(model) as worker:
            seen = json.loads(worker.state_dict()["evidence"].tobytes())
    finally:
        thread.join(60)
    assert seen["pids"] == [], seen
