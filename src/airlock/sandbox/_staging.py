"""How a root caller becomes an unprivileged launcher that can still see the Python runtime.

Measured trap: bubblewrap started by root leaves root-owned files readable and ignores
RLIMIT_NPROC, so root drops to an unprivileged uid first. But the interpreter often lives where that
uid cannot traverse (``/root/.pyenv``), and bubblewrap re-resolves bind sources by path as the
unprivileged uid. So, still as root and only in the launcher child: enter a private mount namespace,
cover each blocking directory (``/root``) with an empty tmpfs, and bind back exactly the paths the
runtime needs. The host's mounts are untouched; the rest of ``/root`` is invisible to the sandbox.

Everything is computed in the parent; the child-side function only makes syscalls.
"""

from __future__ import annotations

import ctypes
import os
import resource
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from airlock.errors import SandboxError

__all__ = ["StagingPlan", "make_preexec", "plan_staging"]

_LIBC: Final = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNS: Final = 0x00020000
_MS_BIND: Final = 0x1000
_MS_REC: Final = 0x4000
_MS_PRIVATE: Final = 0x40000
_MS_NOSUID: Final = 0x2
_MS_NODEV: Final = 0x4
_MS_NOEXEC: Final = 0x8
_PR_SET_DUMPABLE: Final = 4


@dataclass(frozen=True)
class StagingPlan:
    #: (blocking directory, [(path below it to bind back, directories to create first)])
    covers: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...]


def _other_can(path: str, bits: int) -> bool:
    mode = os.stat(path).st_mode
    return (mode & bits) == bits


def plan_staging(paths: Sequence[str]) -> StagingPlan:
    """Find directories an unprivileged uid cannot traverse above ``paths``; check the paths themselves."""
    covers: dict[str, list[str]] = {}
    for path in paths:
        ancestors = []
        parent = os.path.dirname(path)
        while parent not in ("/", ""):
            ancestors.append(parent)
            parent = os.path.dirname(parent)
        blocking = [a for a in ancestors if not _other_can(a, stat.S_IXOTH)]
        if blocking:
            covers.setdefault(blocking[-1], []).append(path)  # the topmost blocking directory
        if os.path.isdir(path) and not _other_can(path, stat.S_IXOTH | stat.S_IROTH):
            raise SandboxError(
                f"staging: {path} is not world-readable (mode {stat.filemode(os.stat(path).st_mode)}); "
                "the unprivileged sandbox uid could not load the runtime from it"
            )
    plan = []
    for top, below in sorted(covers.items()):
        binds = []
        for path in sorted(set(below)):
            rel = os.path.relpath(path, top).split(os.sep)
            dirs = tuple(os.path.join(top, *rel[: i + 1]) for i in range(len(rel)))
            binds.append((path, dirs))
        plan.append((top, tuple(binds)))
    return StagingPlan(tuple(plan))


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def make_preexec(
    plan: StagingPlan | None,
    drop_to: tuple[int, int] | None,
    join_cgroup: Callable[[], None] | None,
    rlimits: Sequence[tuple[int, int]],
) -> Callable[[], None]:
    """The function the launcher child runs before exec: cgroup, mounts, uid drop, rlimits."""

    def preexec() -> None:
        if join_cgroup is not None:
            join_cgroup()
        if plan is not None and plan.covers:
            _check(_LIBC.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
            _check(_LIBC.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
            for top, binds in plan.covers:
                # open the sources before the tmpfs hides them, in *this* mount namespace
                fds = [os.open(path, os.O_PATH | os.O_CLOEXEC) for path, _ in binds]
                _check(
                    _LIBC.mount(
                        b"tmpfs",
                        top.encode(),
                        b"tmpfs",
                        _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                        b"mode=0755,size=64k",
                    ),
                    f"mount tmpfs on {top}",
                )
                for fd, (path, dirs) in zip(fds, binds, strict=True):
                    for directory in dirs:
                        if not os.path.isdir(directory):
                            os.mkdir(directory, 0o755)
                    source = f"/proc/self/fd/{fd}".encode()
                    _check(_LIBC.mount(source, path.encode(), None, _MS_BIND | _MS_REC, None), f"bind {path}")
                    os.close(fd)
        if drop_to is not None:
            uid, gid = drop_to
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            # a uid change makes the process non-dumpable, which hides /proc/self/fd from bubblewrap
            _check(_LIBC.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
        for kind, value in rlimits:
            resource.setrlimit(kind, (value, value))

    return preexec
