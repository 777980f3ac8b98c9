"""Memory and task limits for a whole worker tree through cgroups, v2 or v1, when this host allows it.

v2: needs ``memory`` and ``pids`` enabled in the subtree of airlock's own cgroup and write access.
v1 (hybrid hosts): needs writable ``memory`` and ``pids`` hierarchies. Groups are created under
airlock's own cgroup so outer limits still apply. When neither works, the layer is reported as
inactive with the reason; it is never silently assumed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CgroupSet", "cgroup_support"]

_ROOT: Final = Path("/sys/fs/cgroup")


def _own_path(controller: str | None) -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller is None and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    return None


def _v2_base() -> Path | None:
    own = _own_path(None)
    if own is None or not (_ROOT / "cgroup.controllers").exists():
        return None
    base = _ROOT / own.lstrip("/")
    try:
        enabled = (base / "cgroup.subtree_control").read_text().split()
    except OSError:
        return None
    if {"memory", "pids"} <= set(enabled) and os.access(base, os.W_OK):
        return base
    return None


def _v1_bases() -> tuple[Path, Path] | None:
    bases = []
    for controller in ("memory", "pids"):
        own = _own_path(controller)
        root = _ROOT / controller
        if own is None or not (root / "cgroup.procs").exists():
            return None
        base = root / own.lstrip("/")
        if not os.access(base, os.W_OK):
            return None
        bases.append(base)
    return bases[0], bases[1]


def cgroup_support() -> tuple[str | None, str]:
    """("v2" | "v1" | None, explanation)."""
    if _v2_base() is not None:
        return "v2", "cgroup v2 memory.max and pids.max under airlock's own cgroup"
    if _v1_bases() is not None:
        return "v1", "cgroup v1 memory.limit_in_bytes and pids.max (hybrid hierarchy)"
    return None, "no writable cgroup with memory and pids controllers (not root, or not delegated)"


@dataclass
class CgroupSet:
    """The groups of one worker. ``procs_files`` are what the launcher writes its pid into."""

    dirs: list[Path]
    procs_files: list[bytes]

    @classmethod
    def create(cls, memory_bytes: int, tasks: int) -> CgroupSet | None:
        name = f"airlock-{os.getpid()}-{time.monotonic_ns()}"
        v2 = _v2_base()
        if v2 is not None:
            group = v2 / name
            group.mkdir()
            (group / "memory.max").write_text(str(memory_bytes))
            (group / "memory.swap.max").write_text("0") if (group / "memory.swap.max").exists() else None
            (group / "pids.max").write_text(str(tasks))
            return cls([group], [str(group / "cgroup.procs").encode()])
        v1 = _v1_bases()
        if v1 is None:
            return None
        memory, pids = v1[0] / name, v1[1] / name
        memory.mkdir()
        pids.mkdir()
        (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        (pids / "pids.max").write_text(str(tasks))
        return cls(
            [memory, pids], [str(memory / "cgroup.procs").encode(), str(pids / "cgroup.procs").encode()]
        )

    def join_self(self) -> None:
        """Called in the launcher child before exec (no allocation-heavy work)."""
        pid = str(os.getpid()).encode()
        for path in self.procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for group in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (group / "cgroup.procs").read_text().split())
        return sorted(found)

    def kill_and_remove(self) -> None:
        for group in self.dirs:
            kill = group / "cgroup.kill"
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
        deadline = time.monotonic() + 5
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        for group in self.dirs:
            for _ in range(100):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
