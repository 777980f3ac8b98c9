"""One NVIDIA GPU for one sandboxed worker: which host files it needs, checked before launch.

What a CUDA process needs from the host (learned from NVIDIA's libnvidia-container, the code behind
``nvidia-container-cli``, ``src/nvc_info.c`` / ``src/nvc_mount.c``, and from other sandboxes that
run CUDA under Landlock):

* device nodes: ``/dev/nvidia<N>`` (major 195, minor N: the GPU itself), ``/dev/nvidiactl``
  (195/255: the driver's control node, every CUDA process opens it) and ``/dev/nvidia-uvm`` (the
  unified-memory driver CUDA allocates through). ``/dev/nvidia-uvm-tools`` is the UVM *tools* API
  (profilers' event counters); the container toolkit binds it when it exists but treats it as
  optional, and compute works without it, so it is not bound. ``/dev/nvidia-modeset`` is for
  display only; ``/dev/nvidia-caps/*`` are MIG capabilities (MIG is not supported here).
* ``/proc/driver/nvidia`` (``version``, ``params``, ``gpus/<bus id>``) and
  ``/proc/driver/nvidia-uvm``: read by the user-space driver. Present in the sandbox's own
  procfs; read-only as all of ``/proc``.
* the user-space driver: ``libcuda.so.1`` (and, for ``nvidia-smi``/NVML, ``libnvidia-ml.so.1``),
  installed with the kernel module in the system library directory, which the sandbox binds
  read-only with ``/usr`` and ``/lib*``. The CUDA runtime and cuBLAS come with torch's wheels.
* since driver 570 the driver names the threads it starts by writing
  ``/proc/self/task/<tid>/comm``, and a refusal fails CUDA initialisation (error 304): a GPU job's
  ``/proc/<pid>/task`` stays visible and writable (its ``fd`` and ``map_files`` stay masked).
* address space: the driver reserves virtual address ranges in proportion to the device memory
  (and pools reserve about twice it) before touching any memory, so an ``RLIMIT_AS`` sized for
  host memory fails ``cuInit`` with CUDA_ERROR_OUT_OF_MEMORY: a GPU job's host memory is bounded
  by the worker's memory cgroup instead, which a GPU policy therefore requires.

Nothing else of ``/dev`` (no other GPU, no ``nvidia-modeset``, no MPS pipe directory, no
persistenced socket) and nothing of ``/sys`` is bound (x86 CUDA does without it; Grace Hopper,
where the driver reads ``/sys/devices/system/node``, is not supported). Where the host lacks a node or the driver,
:func:`gpu_binding` raises a :class:`SandboxError` naming what is missing: a GPU policy never falls
back to the CPU silently.
"""

from __future__ import annotations

import os
import stat
import sysconfig
from dataclasses import dataclass
from typing import Final

from airlock.errors import SandboxError
from airlock.sandbox._kernel import FS_IOCTL_DEV, FS_READ_FILE, FS_WRITE_FILE

__all__ = ["GPU_DEVICE_ENV", "GPU_LANDLOCK_RIGHTS", "GpuBinding", "gpu_binding"]

#: set in a GPU worker's environment (value ``cuda``): runtimes put the model on the GPU, which is
#: always CUDA device 0 inside (the only one whose node exists there)
GPU_DEVICE_ENV: Final = "AIRLOCK_SANDBOX_DEVICE"
#: what Landlock allows on each bound device file: open for reading and writing, and ioctl
GPU_LANDLOCK_RIGHTS: Final = FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV
#: the shared nodes every CUDA process opens, besides the GPU's own ``nvidia<N>``
_SHARED_NODES: Final = ("nvidiactl", "nvidia-uvm")
#: the kernel module's proc file: present when the driver is loaded
_DRIVER_VERSION: Final = "proc/driver/nvidia/version"
_LIBCUDA: Final = "libcuda.so.1"


@dataclass(frozen=True)
class GpuBinding:
    """The host files one GPU worker gets, and where they appear inside."""

    index: int
    #: (host path, sandbox path), bound read-write with device access (``--dev-bind``)
    devices: tuple[tuple[str, str], ...]
    #: the user-space driver found on the host (inside a read-only system bind)
    libcuda: str

    @property
    def landlock_rules(self) -> list[tuple[str, int]]:
        """Exactly the device files, each open/read/write/ioctl; the job's own thread names."""
        rules = [(box, GPU_LANDLOCK_RIGHTS) for _host, box in self.devices]
        # paths are resolved by the job itself, so ``self`` is the job (see the module docstring)
        rules.append(("/proc/self/task", FS_WRITE_FILE))
        return rules


def _library_dirs(root: str) -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH")
    dirs = []
    for top in ("usr/lib", "usr/lib64", "lib", "lib64"):
        if isinstance(multiarch, str) and multiarch:
            dirs.append(os.path.join(root, top, multiarch))
        dirs.append(os.path.join(root, top))
    return dirs


def _usable(path: str, sandbox_ids: tuple[int, int] | None) -> bool:
    """Whether the sandbox's identity may open ``path`` for reading and writing."""
    if sandbox_ids is None:
        return os.access(path, os.R_OK | os.W_OK)
    info = os.stat(path)
    uid, gid = sandbox_ids
    if info.st_uid == uid:
        return info.st_mode & (stat.S_IRUSR | stat.S_IWUSR) == stat.S_IRUSR | stat.S_IWUSR
    if info.st_gid == gid:
        return info.st_mode & (stat.S_IRGRP | stat.S_IWGRP) == stat.S_IRGRP | stat.S_IWGRP
    return info.st_mode & (stat.S_IROTH | stat.S_IWOTH) == stat.S_IROTH | stat.S_IWOTH


def gpu_binding(index: int, *, root: str = "/", sandbox_ids: tuple[int, int] | None = None) -> GpuBinding:
    """What to bind for GPU ``index``; a :class:`SandboxError` naming everything that is missing.

    ``root`` is where the host's ``/dev``, ``/proc`` and library directories are looked up (tests
    pass a fake tree); ``sandbox_ids`` the uid/gid the sandbox runs as when the caller is root
    (None: the caller's own identity, checked with ``access``).
    """
    dev = os.path.join(root, "dev")
    names = [f"nvidia{index}", *_SHARED_NODES]
    missing = [f"/dev/{name}" for name in names if not os.path.exists(os.path.join(dev, name))]
    problems = []
    if missing:
        hint = (
            " (load the nvidia-uvm module: nvidia-modprobe -u -c=0)" if "/dev/nvidia-uvm" in missing else ""
        )
        problems.append(f"device node(s) {', '.join(missing)} missing{hint}")
    else:
        closed = [f"/dev/{name}" for name in names if not _usable(os.path.join(dev, name), sandbox_ids)]
        if closed:
            who = f"uid {sandbox_ids[0]}" if sandbox_ids is not None else f"uid {os.geteuid()}"
            problems.append(
                f"device node(s) {', '.join(closed)} not readable and writable by the sandbox ({who})"
            )
    if not os.path.isfile(os.path.join(root, _DRIVER_VERSION)):
        problems.append(f"no NVIDIA kernel driver loaded (/{_DRIVER_VERSION} missing)")
    libcuda = next(
        (path for d in _library_dirs(root) if os.path.exists(path := os.path.join(d, _LIBCUDA))), None
    )
    if libcuda is None:
        problems.append(
            f"no {_LIBCUDA} (the NVIDIA user-space driver) in the system library directories "
            "(/usr/lib, /usr/lib64, /lib, /lib64), the only ones bound into the sandbox"
        )
    if problems:
        raise SandboxError(f"sandbox: GPU {index} is not usable on this host: {'; '.join(problems)}")
    assert libcuda is not None
    devices = tuple((os.path.join(dev, name), f"/dev/{name}") for name in names)
    return GpuBinding(index, devices, libcuda)
