"""Start one worker inside the layers: cgroup, unprivileged uid, bubblewrap, launch seccomp filter.

The worker is ``python -I -B -c BOOTSTRAP`` inside bubblewrap with ``--unshare-all --clearenv
--cap-drop ALL --as-pid-1 --die-with-parent --new-session --disable-userns``, read-only binds of
/usr, the interpreter, the virtual environment and airlock itself, a size-capped private tmpfs on
/tmp, a fresh /proc and a minimal /dev. No home, no /root, no model folder: models reach jobs as
file descriptors only. ``--as-pid-1`` means no bubblewrap helper holds the caller's environment
inside; when pid 1 (the worker) dies the kernel kills every job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import site
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from airlock.errors import SandboxError
from airlock.sandbox._cgroups import CgroupSet
from airlock.sandbox._kernel import FS_WRITE_FILE, READ_ONLY, READ_WRITE
from airlock.sandbox._layers import DoctorReport, bwrap_path, require
from airlock.sandbox._policy import SandboxPolicy
from airlock.sandbox._seccomp import FilterStage, compile_filter
from airlock.sandbox._staging import make_preexec, plan_staging

__all__ = ["Launched", "launch"]

_AIRLOCK_ROOT: Final = str(Path(__file__).resolve().parent.parent)
_BOOTSTRAP: Final = (
    "import sys,types\n"
    "root=sys.argv[1]\n"
    "for name,path in (('airlock',root),('airlock.sandbox',root+'/sandbox')):\n"
    "    m=types.ModuleType(name);m.__path__=[path];sys.modules[name]=m\n"
    "from airlock.sandbox._zygote import main\n"
    "main(sys.argv[2])\n"
)
#: the private tmpfs *inside* the sandbox (never the host /tmp)
_TMP: Final = "/tmp"  # noqa: S108
_SYSTEM_TOP: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    control: socket.socket
    cgroups: CgroupSet | None
    report: DoctorReport
    layers: tuple[str, ...]


def runtime_paths() -> list[str]:
    """Directories the worker needs, without nesting: interpreter, venv, site-packages, airlock."""
    wanted = {"/usr", os.path.realpath(sys.base_prefix), sys.prefix, os.path.realpath(sys.prefix)}
    wanted.update(os.path.realpath(p) for p in site.getsitepackages() if os.path.isdir(p))
    wanted.add(os.path.dirname(_AIRLOCK_ROOT))
    paths = sorted(p for p in wanted if os.path.isdir(p))
    kept: list[str] = []
    for path in paths:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _bwrap_argv(bwrap: str, paths: list[str], policy: SandboxPolicy, seccomp_fd: int) -> list[str]:
    argv = [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
        "--as-pid-1", "--clearenv", "--cap-drop", "ALL", "--hostname", "airlock",
    ]  # fmt: skip
    for top in _SYSTEM_TOP:
        host = f"/{top}"
        if os.path.islink(host):
            argv += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            argv += ["--ro-bind", host, host]
    # The private tmpfs goes on before the runtime binds: bwrap mounts in argument order, and a
    # venv or checkout that lives under the host's /tmp (as CI clones may) must stay visible.
    argv += ["--size", str(policy.limits.tmpfs_bytes), "--tmpfs", _TMP]
    for path in paths:
        argv += ["--ro-bind", path, path]
    if os.path.isfile("/etc/ld.so.cache"):
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    threads = str(policy.limits.threads)
    argv += [
        "--proc", "/proc", "--dev", "/dev",
        "--chdir", _TMP, "--setenv", "HOME", _TMP, "--setenv", "TMPDIR", _TMP,
        "--setenv", "OMP_NUM_THREADS", threads, "--setenv", "MKL_NUM_THREADS", threads,
        "--seccomp", str(seccomp_fd), "--",
    ]  # fmt: skip
    return argv


def _landlock_rules(paths: list[str]) -> list[tuple[str, int]]:
    rules = [(p, READ_ONLY) for p in paths]
    rules += [(f"/{top}", READ_ONLY) for top in _SYSTEM_TOP if os.path.isdir(f"/{top}")]
    rules += [("/etc/ld.so.cache", READ_ONLY), ("/proc", READ_ONLY), ("/dev", READ_ONLY | FS_WRITE_FILE)]
    rules.append((_TMP, READ_WRITE))
    return rules


def launch(policy: SandboxPolicy, runtimes: tuple[str, ...]) -> Launched:
    """Start a worker that has imported ``runtimes``; fail closed on missing required layers."""
    report = require(policy)
    limits = policy.limits
    paths = runtime_paths()
    is_root = os.geteuid() == 0
    bwrap = bwrap_path() if report.active("namespaces") else None
    cgroups = None
    if report.active("cgroups"):
        try:
            cgroups = CgroupSet.create(limits.memory_bytes, limits.tasks)
        except OSError as exc:
            raise SandboxError(f"cgroups: creating the worker's group failed: {exc}") from exc
    staging = plan_staging([*paths, *([os.path.dirname(bwrap)] if bwrap else [])]) if is_root else None
    preexec = make_preexec(
        staging,
        (policy.sandbox_uid, policy.sandbox_gid) if is_root else None,
        cgroups.join_self if cgroups is not None else None,
        [
            (resource.RLIMIT_NPROC, limits.tasks),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        ],
    )
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds: list[int] = []
    try:
        launch_fd = _memfd("airlock-launch-filter", compile_filter(FilterStage.LAUNCH))
        job_fd = _memfd("airlock-job-filter", compile_filter(FilterStage.JOB))
        fds = [launch_fd, job_fd, child_sock.fileno()]
        config = {
            "control_fd": child_sock.fileno(),
            "job_bpf_fd": job_fd,
            "launch_bpf_fd": -1 if bwrap else launch_fd,
            "runtimes": list(runtimes),
            "limits": dataclasses.asdict(limits),
            "landlock": _landlock_rules(paths) if report.active("landlock") else None,
        }
        argv = [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, _AIRLOCK_ROOT, json.dumps(config)]
        if bwrap:
            argv = _bwrap_argv(bwrap, paths, policy, launch_fd) + argv
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=fds,
            preexec_fn=preexec,  # noqa: PLW1509 - it only makes syscalls (see _staging)
            env={},
            cwd="/",
            start_new_session=True,
        )
    except BaseException:
        parent_sock.close()
        if cgroups is not None:
            cgroups.kill_and_remove()
        raise
    finally:
        child_sock.close()
        for fd in fds[:2]:
            os.close(fd)
    layers = tuple(s.name for s in report.layers if s.active and (s.name != "cgroups" or cgroups is not None))
    return Launched(process, parent_sock, cgroups, report, layers)
