"""What the sandbox is asked to enforce: the isolation level and the resource limits, validated once."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Final

from airlock.errors import UsageError

__all__ = ["DEFAULT_SANDBOX_LIMITS", "SandboxLevel", "SandboxLimits", "SandboxPolicy"]

_MIB: Final = 1024 * 1024
_GIB: Final = 1024 * _MIB


class SandboxLevel(enum.Enum):
    """How many layers must be active before untrusted bytes are touched.

    STANDARD needs namespaces, an unprivileged host uid, both seccomp filters and rlimits; Landlock
    and cgroups are used when present. STRICT needs Landlock and cgroups too.
    """

    STANDARD = "standard"
    STRICT = "strict"


#: the highest NVIDIA GPU minor number: 254 and 255 are nvidia-modeset and nvidiactl
MAX_GPU_INDEX: Final = 253

#: tasks the worker may use beyond its jobs' ``tasks`` budget (itself and the jobs it forks)
TASK_RESERVE: Final = 16


@dataclass(frozen=True)
class SandboxLimits:
    """Resource bounds for one sandboxed worker. Every field must be positive."""

    #: address space of one job process (RLIMIT_AS) and, where cgroups work, the whole worker's memory
    memory_bytes: int = 8 * _GIB
    #: CPU seconds one job process may use (RLIMIT_CPU; SIGXCPU at the soft limit, SIGKILL one second later)
    cpu_seconds: int = 600
    #: wall-clock seconds one request (start, load, one inference) may take before the whole tree is killed
    wall_seconds: float = 300.0
    #: wall-clock seconds a cold start (launch plus runtime imports) may take
    start_seconds: float = 120.0
    #: bytes one file written inside the sandbox may reach (RLIMIT_FSIZE)
    file_size_bytes: int = 64 * _MIB
    #: size of the private tmpfs mounted on /tmp inside the sandbox
    tmpfs_bytes: int = 64 * _MIB
    #: open file descriptors per process (RLIMIT_NOFILE)
    open_files: int = 256
    #: tasks (processes and threads) all jobs of one sandbox may hold together (RLIMIT_NPROC, counted
    #: in the sandbox's own user namespace, so never shared with other sandboxes of the same uid);
    #: the worker and its pids cgroup have ``TASK_RESERVE`` more, so it can always fork and report
    tasks: int = 256
    #: bytes one frame (header plus tensor data) may carry over the channel, either direction;
    #: never more than ``memory_bytes`` in effect (see :attr:`frame_bytes`)
    max_frame_bytes: int = 8 * _GIB
    #: bytes of one frame's JSON header
    max_header_bytes: int = 4 * _MIB
    #: tensors in one frame
    max_tensors: int = 100_000
    #: dimensions of one tensor
    max_rank: int = 32
    #: compute threads the runtime may use inside the worker (torch / onnxruntime intra-op threads)
    threads: int = 1

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            # not NaN (every comparison with it is False: the limit would never fire) nor infinity
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise UsageError(f"sandbox limit {item.name} must be a positive finite number, got {value!r}")

    @property
    def frame_bytes(self) -> int:
        """The cap one frame is received under: ``max_frame_bytes``, but never more than the job's
        own ``memory_bytes`` (a job cannot honestly hold a reply larger than its address space)."""
        return int(min(self.max_frame_bytes, self.memory_bytes))

    def replace(self, **changes: int | float) -> SandboxLimits:
        """A copy with some limits changed; unknown names are a :class:`UsageError`."""
        known = {item.name for item in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(
                f"unknown sandbox limit(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_SANDBOX_LIMITS: Final = SandboxLimits()


@dataclass(frozen=True)
class SandboxPolicy:
    """Level, limits and the identity the sandbox runs as when the caller is root.

    ``unsafe_weaker_sandbox`` runs with whatever layers exist when a required one is missing; it is
    named so on purpose, and every front end warns loudly when it is set.

    ``gpu`` gives the worker exactly one NVIDIA GPU: ``/dev/nvidia<gpu>`` (the device minor number,
    ``nvidia-smi --query-gpu=index,minor_number --format=csv`` shows it) plus ``/dev/nvidiactl`` and
    ``/dev/nvidia-uvm``; no other GPU's node is ever visible. ``None`` (the default): no GPU at all.
    See :mod:`airlock.sandbox._gpu` and docs/sandbox.md.
    """

    level: SandboxLevel = SandboxLevel.STANDARD
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    #: host uid/gid the sandbox runs as when the caller is root (never 0)
    sandbox_uid: int = 65534
    sandbox_gid: int = 65534
    unsafe_weaker_sandbox: bool = False
    #: the one NVIDIA GPU (device minor ``N`` of ``/dev/nvidiaN``) the worker may use, or None
    gpu: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.level, SandboxLevel):
            raise UsageError(f"sandbox level must be a SandboxLevel, got {self.level!r}")
        for name in ("sandbox_uid", "sandbox_gid"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value >= 2**32 - 1:
                raise UsageError(f"{name} must be a non-root id between 1 and 2**32-2, got {value!r}")
        if self.gpu is not None and (
            not isinstance(self.gpu, int) or isinstance(self.gpu, bool) or not 0 <= self.gpu <= MAX_GPU_INDEX
        ):
            raise UsageError(
                f"gpu must be a GPU index between 0 and {MAX_GPU_INDEX} (or None), got {self.gpu!r}"
            )
