"""Start one worker inside the layers: cgroup, unprivileged uid, bubblewrap, launch seccomp filter.

The worker is ``python -I -S -B -c BOOTSTRAP FD`` inside bubblewrap with ``--unshare-all --clearenv
--cap-drop ALL --cap-add CAP_SYS_ADMIN --as-pid-1 --die-with-parent --new-session
--disable-userns``, read-only binds of /usr, the interpreter's prefix, the site-packages and
airlock itself, a size-capped private tmpfs on /tmp, a fresh /proc and a read-only minimal /dev (no
writable /dev/shm). The runtime appears at neutral paths (``/airlock/python``, ``/airlock/site-N``,
``/airlock/src``), never at its host paths; the bootstrap re-roots those binds on overlays and
pivots into a root without the host binds before anything else runs, then the worker loads the
launch filter (see :class:`RuntimeView`): no file of ``/proc``, no ``sys.executable``, ``sys.path``
or module ``__file__`` inside names a host directory. No home, no /root, no model folder: models
reach jobs as file descriptors only. ``--as-pid-1`` means no bubblewrap helper holds the caller's
environment inside; when pid 1 (the worker) dies the kernel kills every job. CAP_SYS_ADMIN is a
capability of the sandbox's own (nested) user namespace only; the worker uses it for that root and
to mount a private /tmp and /proc for each job, and each job drops it before anything else. The
configuration travels in a sealed memfd (``FD``), not in argv.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import resource
import site
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from airlock.errors import SandboxError
from airlock.sandbox._cgroups import CgroupSet
from airlock.sandbox._gpu import GPU_DEVICE_ENV, GpuBinding, gpu_binding
from airlock.sandbox._kernel import FS_WRITE_FILE, READ_ONLY, READ_WRITE
from airlock.sandbox._layers import DoctorReport, bwrap_path, require
from airlock.sandbox._policy import TASK_RESERVE, SandboxPolicy
from airlock.sandbox._seccomp import FilterStage, compile_filter, own_pid_reader_rules, own_pid_rules
from airlock.sandbox._staging import make_preexec, plan_staging

__all__ = ["Launched", "RuntimeView", "launch", "runtime_paths"]

_AIRLOCK_ROOT: Final = str(Path(__file__).resolve().parent.parent)
_BOOTSTRAP: Final = (
    "import sys,types,os,json\n"
    "with os.fdopen(int(sys.argv[1]),'rb') as f:\n"
    "    cfg=json.loads(f.read())\n"
    "root=cfg['root']\n"
    "for name,path in (('airlock',root),('airlock.sandbox',root+'/sandbox')):\n"
    "    m=types.ModuleType(name);m.__path__=[path];sys.modules[name]=m\n"
    "from airlock.sandbox._kernel import set_dumpable,runtime_view\n"
    "set_dumpable(False)\n"
    "cfg['neutral_mounts']=runtime_view(cfg['views'],cfg['empty'],cfg['new_root'])\n"
    "os.chdir(cfg['tmp'])\n"
    "import site\n"
    "for d in cfg['site']:\n"
    "    site.addsitedir(d)\n"
    "from airlock.sandbox._zygote import main\n"
    "main(cfg)\n"
)
#: the private tmpfs *inside* the sandbox (never the host /tmp)
_TMP: Final = "/tmp"  # noqa: S108
_SYSTEM_TOP: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: where the runtime appears inside the sandbox: fixed names that say nothing about the host
_BOX: Final = "/airlock"
#: an empty directory: the second (empty) lower layer of each overlay (one layer alone is refused)
_EMPTY: Final = "/airlock/.empty"
#: where the worker builds its own root (see :func:`airlock.sandbox._kernel.runtime_view`)
_NEW_ROOT: Final = "/airlock/.root"


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    control: socket.socket
    cgroups: CgroupSet | None
    report: DoctorReport
    layers: tuple[str, ...]


def _outermost(paths: set[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(p for p in paths if os.path.isdir(p)):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _site_dirs() -> list[str]:
    return [os.path.realpath(p) for p in site.getsitepackages() if os.path.isdir(p)]


def runtime_paths() -> list[str]:
    """Host directories the worker needs, without nesting: /usr, the interpreter's prefix, the
    site-packages and airlock. Not the virtual environment's root: its ``pyvenv.cfg`` and ``bin``
    scripts name host paths, and the interpreter runs without it (``-S`` and ``sys.path`` set)."""
    wanted = {"/usr", os.path.realpath(sys.base_prefix), *_site_dirs()}
    wanted.add(os.path.dirname(os.path.realpath(sys.executable)))
    wanted.add(os.path.dirname(_AIRLOCK_ROOT))
    return _outermost(wanted)


@dataclass(frozen=True)
class RuntimeView:
    """Where each runtime directory appears inside the sandbox.

    ``/usr`` (and whatever lies below it) keeps its path: it is the distribution's, the same on
    every host. Everything else gets a fixed neutral name: the interpreter's prefix
    ``/airlock/python``, airlock's folder ``/airlock/src``, each other directory (site-packages)
    ``/airlock/site-N``. A bind alone is not enough: ``/proc/PID/mountinfo`` prints each mount's
    root *within its filesystem* (``/root/.pyenv/versions/3.11.7``) wherever it is mounted, so
    the worker mounts an overlay of each (whose root is ``/``, whose options name only the neutral
    path) and pivots into a root without the binds (:func:`airlock.sandbox._kernel.runtime_view`).
    """

    #: (host directory, sandbox directory)
    binds: tuple[tuple[str, str], ...]

    @classmethod
    def plan(cls, neutral: bool) -> RuntimeView:
        paths = runtime_paths()
        if not neutral:  # no bubblewrap: nothing is mounted, the worker sees host paths
            return cls(tuple((p, p) for p in paths))
        prefix = os.path.realpath(sys.base_prefix)
        airlock_dir = os.path.dirname(_AIRLOCK_ROOT)
        binds, others = [], 0
        for path in paths:
            if path == "/usr" or path.startswith("/usr/"):
                box = path
            elif path == prefix:
                box = f"{_BOX}/python"
            elif path == airlock_dir:
                box = f"{_BOX}/src"
            else:
                box, others = f"{_BOX}/site-{others}", others + 1
            binds.append((path, box))
        return cls(tuple(binds))

    def inside(self, host: str) -> str:
        """``host`` (a path below one of the binds) as the sandbox sees it."""
        for outside, box in self.binds:
            if host == outside or host.startswith(outside.rstrip("/") + "/"):
                return box + host[len(outside) :]
        raise SandboxError(f"sandbox: {host} is not below any runtime directory")

    @property
    def neutral(self) -> list[str]:
        """The sandbox directories (below ``/airlock``) that the worker turns into overlays."""
        return [box for outside, box in self.binds if box != outside]

    @property
    def interpreter(self) -> str:
        return self.inside(os.path.realpath(sys.executable))

    @property
    def site(self) -> list[str]:
        return [self.inside(p) for p in _site_dirs()]

    @property
    def library_path(self) -> str | None:
        """The interpreter's own library folder when it links libpython dynamically (its RUNPATH
        names the host prefix, which does not exist inside)."""
        libdir = sysconfig.get_config_var("LIBDIR")
        if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not isinstance(libdir, str):
            return None
        try:
            return self.inside(os.path.realpath(libdir))
        except SandboxError:
            return None


def _memfd(name: str, data: bytes) -> int:
    """A memfd holding ``data`` that nobody (the worker and its jobs included) can change."""
    fd = os.memfd_create(name, os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    fcntl.fcntl(
        fd,
        fcntl.F_ADD_SEALS,
        fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
    )
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _bwrap_argv(
    bwrap: str, view: RuntimeView, policy: SandboxPolicy, gpu: GpuBinding | None = None
) -> list[str]:
    argv = [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
        "--as-pid-1", "--clearenv", "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN", "--hostname", "airlock",
    ]  # fmt: skip
    for top in _SYSTEM_TOP:
        host = f"/{top}"
        if os.path.islink(host):
            argv += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            argv += ["--ro-bind", host, host]
    argv += ["--size", str(policy.limits.tmpfs_bytes), "--tmpfs", _TMP]
    for outside, box in view.binds:
        argv += ["--ro-bind", outside, box]
    if view.neutral:
        argv += ["--dir", _EMPTY, "--dir", _NEW_ROOT]
    if os.path.isfile("/etc/ld.so.cache"):
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    threads = str(policy.limits.threads)
    argv += ["--proc", "/proc", "--dev", "/dev"]
    if gpu is not None:  # exactly this GPU's nodes, on the minimal /dev before it is made read-only
        for host, box in gpu.devices:
            argv += ["--dev-bind", host, box]
    argv += [
        "--remount-ro", "/dev",
        # bubblewrap's own root is an unbounded tmpfs the sandbox uid owns: read-only, or a job
        # could write outside /tmp (memory RLIMIT_AS does not count, shared with later jobs)
        "--remount-ro", "/",
        "--chdir", _TMP, "--setenv", "HOME", _TMP, "--setenv", "TMPDIR", _TMP,
        "--setenv", "OMP_NUM_THREADS", threads, "--setenv", "MKL_NUM_THREADS", threads,
    ]  # fmt: skip
    if (library := view.library_path) is not None:
        argv += ["--setenv", "LD_LIBRARY_PATH", library]
    if gpu is not None:
        argv += ["--setenv", GPU_DEVICE_ENV, "cuda"]
    # No ``--seccomp``: the worker loads the launch filter itself, as soon as it has re-rooted the
    # runtime binds (which needs umount2, a call that filter refuses); nothing else runs before.
    return [*argv, "--"]


def _landlock_rules(view: RuntimeView, gpu: GpuBinding | None = None) -> list[tuple[str, int]]:
    rules = [(box, READ_ONLY) for _outside, box in view.binds]
    rules += [(f"/{top}", READ_ONLY) for top in _SYSTEM_TOP if os.path.isdir(f"/{top}")]
    rules += [("/etc/ld.so.cache", READ_ONLY), ("/proc", READ_ONLY), ("/dev", READ_ONLY | FS_WRITE_FILE)]
    rules.append((_TMP, READ_WRITE))
    if gpu is not None:  # ioctl (Landlock ABI 5) on exactly the GPU's device files, nowhere else
        rules += gpu.landlock_rules
    return rules


def _gpu(policy: SandboxPolicy, bwrap: str | None, is_root: bool) -> GpuBinding | None:
    """The GPU the policy asks for, checked on the host; refused without bubblewrap, which alone
    hides the other GPUs' nodes (a worker without it sees the whole host /dev)."""
    if policy.gpu is None:
        return None
    if bwrap is None:
        raise SandboxError(
            f"sandbox: GPU {policy.gpu} needs the namespaces layer (bubblewrap): without it the worker "
            "would see every GPU of the host"
        )
    return gpu_binding(policy.gpu, sandbox_ids=(policy.sandbox_uid, policy.sandbox_gid) if is_root else None)


def launch(policy: SandboxPolicy, runtimes: tuple[str, ...]) -> Launched:
    """Start a worker that has imported ``runtimes``; fail closed on missing required layers."""
    report = require(policy)
    limits = policy.limits
    is_root = os.geteuid() == 0
    bwrap = bwrap_path() if report.active("namespaces") else None
    gpu = _gpu(policy, bwrap, is_root)
    view = RuntimeView.plan(neutral=bool(bwrap))
    paths = [outside for outside, _box in view.binds]
    cgroups = None
    if report.active("cgroups"):
        try:
            cgroups = CgroupSet.create(limits.memory_bytes, limits.tasks + TASK_RESERVE)
        except OSError as exc:
            raise SandboxError(f"cgroups: creating the worker's group failed: {exc}") from exc
    staging = plan_staging([*paths, *([os.path.dirname(bwrap)] if bwrap else [])]) if is_root else None
    preexec = make_preexec(
        staging,
        (policy.sandbox_uid, policy.sandbox_gid) if is_root else None,
        cgroups.join_self if cgroups is not None else None,
        [
            # NOT ``tasks`` here: a user namespace records its creator's RLIMIT_NPROC as the cap on
            # every task of the *host* uid, which all sandboxes of that uid (65534 for root callers,
            # every gateway tenant) share, so one job holding its budget made every other sandbox's
            # worker fail to fork and die. The worker sets ``tasks`` (+ reserve) inside, where the
            # count is this sandbox's alone.
            (resource.RLIMIT_NPROC, resource.getrlimit(resource.RLIMIT_NPROC)[1]),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        ],
    )
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    memfds: list[int] = []
    try:
        memfds.append(launch_fd := _memfd("airlock-launch-filter", compile_filter(FilterStage.LAUNCH)))
        memfds.append(
            job_fd := _memfd("airlock-job-filter", compile_filter(FilterStage.JOB, gpu=gpu is not None))
        )
        config = {
            "root": view.inside(_AIRLOCK_ROOT),
            "views": view.neutral,
            "empty": _EMPTY,
            "new_root": _NEW_ROOT,
            "site": view.site,
            "control_fd": child_sock.fileno(),
            "job_bpf_fd": job_fd,
            "launch_bpf_fd": launch_fd,
            "own_pid_rules": own_pid_rules(),
            "own_pid_readers": own_pid_reader_rules(),
            "runtimes": list(runtimes),
            "limits": dataclasses.asdict(limits),
            "landlock": _landlock_rules(view, gpu) if report.active("landlock") else None,
            # a mount namespace per job needs the worker's CAP_SYS_ADMIN inside bubblewrap's userns
            "private_tmp": bool(bwrap),
            "tmp": _TMP,
        }
        if gpu is not None:  # only then: a CPU worker's configuration stays as it was
            config["gpu"] = gpu.index
        memfds.append(config_fd := _memfd("airlock-config", json.dumps(config).encode()))
        # -S: no site-packages from a venv's pyvenv.cfg (not mounted); the bootstrap adds them
        argv = [view.interpreter, "-I", "-S", "-B", "-c", _BOOTSTRAP, str(config_fd)]
        if bwrap:
            argv = _bwrap_argv(bwrap, view, policy, gpu) + argv
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=[*memfds, child_sock.fileno()],
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
        for fd in memfds:
            os.close(fd)
    layers = tuple(s.name for s in report.layers if s.active and (s.name != "cgroups" or cgroups is not None))
    return Launched(process, parent_sock, cgroups, report, layers)
