"""GPU lanes, tested on CPU: the exact bubblewrap argv and Landlock rules for one GPU, refusal when
the host lacks a node or the driver, a CPU worker's argv and rules unchanged, and a real worker
started on a fake device tree (regular files standing in for the nodes) that sees exactly its GPU.

No test here needs a GPU or creates a node in the real /dev: the host tree is a parameter
(``gpu_binding(root=...)``). ``bench/gpu_check.py`` runs CUDA itself where a GPU exists.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from airlock.errors import SandboxError, UsageError
from airlock.sandbox import Sandbox, SandboxPolicy, _launcher, doctor
from airlock.sandbox._gpu import GPU_DEVICE_ENV, GPU_LANDLOCK_RIGHTS, gpu_binding
from airlock.sandbox._kernel import FS_IOCTL_DEV, FS_READ_FILE, FS_WRITE_FILE, READ_ONLY, READ_WRITE
from airlock.sandbox._launcher import RuntimeView, _bwrap_argv, _landlock_rules
from airlock.sandbox._policy import MAX_GPU_INDEX, SandboxLimits
from tests.sandbox._payloads import bytes_tensor, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

_NODES = ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
_MULTIARCH = sysconfig.get_config_var("MULTIARCH") or ""
#: a fixed view, so the argv does not depend on where Python lives on this host
_VIEW = RuntimeView((("/usr", "/usr"), ("/opt/py", "/airlock/python"), ("/opt/site", "/airlock/site-0")))
_SANDBOX_IDS = (65534, 65534)


def _fake_host(root: Path) -> Path:
    """A host tree with two GPUs, the shared nodes, the driver's proc file and libcuda."""
    (root / "dev").mkdir(parents=True)
    for name in _NODES:
        node = root / "dev" / name
        node.write_bytes(b"")
        node.chmod(0o666)  # like the driver's own nodes: every uid may open them
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text("NVRM version: fake\n")
    lib = root / "usr/lib" / _MULTIARCH
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "libcuda.so.1").write_bytes(b"")
    return root


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return _fake_host(tmp_path / "host")


def _system_tops() -> list[str]:
    """The argv part that depends on this host's /bin, /lib...: as the launcher has always built it."""
    argv: list[str] = []
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{top}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    return argv


def _cpu_argv(policy: SandboxPolicy) -> list[str]:
    """A CPU worker's bubblewrap argv, written out as it was before GPU lanes existed."""
    threads = str(policy.limits.threads)
    return [
        "/bw", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
        "--as-pid-1", "--clearenv", "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN", "--hostname", "airlock",
        *_system_tops(),
        "--size", str(policy.limits.tmpfs_bytes), "--tmpfs", "/tmp",
        "--ro-bind", "/usr", "/usr", "--ro-bind", "/opt/py", "/airlock/python",
        "--ro-bind", "/opt/site", "/airlock/site-0",
        "--dir", "/airlock/.empty", "--dir", "/airlock/.root",
        *(["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"] if os.path.isfile("/etc/ld.so.cache") else []),
        "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", "/tmp", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
        "--setenv", "OMP_NUM_THREADS", threads, "--setenv", "MKL_NUM_THREADS", threads,
        *(["--setenv", "LD_LIBRARY_PATH", lib] if (lib := _VIEW.library_path) is not None else []),
        "--",
    ]  # fmt: skip


@pytest.mark.parametrize("index", [0, 1])
def test_gpu_argv_binds_exactly_that_gpu(host: Path, index: int) -> None:
    policy = SandboxPolicy(gpu=index)
    binding = gpu_binding(index, root=str(host), sandbox_ids=_SANDBOX_IDS)
    argv = _bwrap_argv("/bw", _VIEW, policy, binding)
    dev = f"{host}/dev"
    expected = _cpu_argv(policy)
    at = expected.index("--dev") + 2  # right after the minimal /dev, before it is made read-only
    expected[at:at] = [
        "--dev-bind", f"{dev}/nvidia{index}", f"/dev/nvidia{index}",
        "--dev-bind", f"{dev}/nvidiactl", "/dev/nvidiactl",
        "--dev-bind", f"{dev}/nvidia-uvm", "/dev/nvidia-uvm",
    ]  # fmt: skip
    expected[-1:-1] = ["--setenv", GPU_DEVICE_ENV, "cuda"]
    assert argv == expected
    other = f"nvidia{1 - index}"
    assert not [a for a in argv if a.endswith((f"/{other}", "nvidia-uvm-tools", "nvidia-modeset"))]
    assert argv.index("--remount-ro") > argv.index(f"/dev/nvidia{index}")


def test_cpu_argv_is_unchanged() -> None:
    policy = SandboxPolicy(limits=SandboxLimits(threads=3, tmpfs_bytes=12345))
    assert _bwrap_argv("/bw", _VIEW, policy) == _cpu_argv(policy)
    assert _bwrap_argv("/bw", _VIEW, policy, None) == _cpu_argv(policy)
    assert not [a for a in _bwrap_argv("/bw", _VIEW, policy) if "nvidia" in a or a == "--dev-bind"]


def _cpu_rules() -> list[tuple[str, int]]:
    tops = [
        (f"/{t}", READ_ONLY)
        for t in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
        if os.path.isdir(f"/{t}")
    ]
    return [
        ("/usr", READ_ONLY), ("/airlock/python", READ_ONLY), ("/airlock/site-0", READ_ONLY), *tops,
        ("/etc/ld.so.cache", READ_ONLY), ("/proc", READ_ONLY), ("/dev", READ_ONLY | FS_WRITE_FILE),
        ("/tmp", READ_WRITE),
    ]  # fmt: skip


def test_landlock_rules_cpu_vs_gpu(host: Path) -> None:
    cpu = _landlock_rules(_VIEW)
    assert cpu == _landlock_rules(_VIEW, None) == _cpu_rules()
    assert not [path for path, rights in cpu if rights & FS_IOCTL_DEV]  # no device ioctl anywhere
    gpu = _landlock_rules(_VIEW, gpu_binding(1, root=str(host), sandbox_ids=_SANDBOX_IDS))
    assert gpu[: len(cpu)] == cpu
    assert gpu[len(cpu) :] == [
        ("/dev/nvidia1", FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV),
        ("/dev/nvidiactl", FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV),
        ("/dev/nvidia-uvm", FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV),
        ("/proc/self/task", FS_WRITE_FILE),
    ]
    assert GPU_LANDLOCK_RIGHTS == FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV
    assert [path for path, rights in gpu if rights & FS_IOCTL_DEV] == [
        "/dev/nvidia1",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
    ]


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("dev/nvidia0", r"/dev/nvidia0 missing"),
        ("dev/nvidiactl", r"/dev/nvidiactl missing"),
        ("dev/nvidia-uvm", r"/dev/nvidia-uvm missing \(load the nvidia-uvm module"),
        ("proc/driver/nvidia/version", r"no NVIDIA kernel driver loaded"),
        (f"usr/lib/{_MULTIARCH}/libcuda.so.1", r"no libcuda\.so\.1"),
    ],
)
def test_refused_when_the_host_lacks_a_node_or_the_driver(host: Path, remove: str, message: str) -> None:
    (host / remove).unlink()
    with pytest.raises(SandboxError, match=rf"GPU 0 is not usable on this host: .*{message}"):
        gpu_binding(0, root=str(host), sandbox_ids=_SANDBOX_IDS)


def test_other_nodes_are_not_needed(host: Path) -> None:
    """uvm-tools (profilers) and modeset (display) are never required, nor another GPU's node."""
    for name in ("nvidia-uvm-tools", "nvidia-modeset", "nvidia1"):
        (host / "dev" / name).unlink()
    binding = gpu_binding(0, root=str(host), sandbox_ids=_SANDBOX_IDS)
    assert [box for _h, box in binding.devices] == ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"]


def test_gpu_index_without_a_node_is_refused(host: Path) -> None:
    with pytest.raises(SandboxError, match=r"GPU 2 is not usable.*/dev/nvidia2 missing"):
        gpu_binding(2, root=str(host), sandbox_ids=_SANDBOX_IDS)


def test_node_the_sandbox_uid_cannot_open_is_refused(host: Path) -> None:
    """A node only its owner and group may open (0660, as some distributions ship them), while
    the sandbox runs as another uid and gid: refused before launch, not an opaque CUDA error."""
    (host / "dev/nvidiactl").chmod(0o660)
    with pytest.raises(
        SandboxError, match=r"/dev/nvidiactl not readable and writable by the sandbox \(uid 12345\)"
    ):
        gpu_binding(0, root=str(host), sandbox_ids=(12345, 12345))
    assert gpu_binding(0, root=str(host), sandbox_ids=(os.stat(host / "dev/nvidiactl").st_uid, 12345))


@pytest.mark.parametrize("bad", [-1, MAX_GPU_INDEX + 1, True, "0", 1.0])
def test_policy_gpu_must_be_an_index(bad: object) -> None:
    with pytest.raises(UsageError, match="gpu must be a GPU index between 0 and 253"):
        SandboxPolicy(gpu=bad)  # type: ignore[arg-type]
    assert SandboxPolicy(gpu=0).gpu == 0 and SandboxPolicy(gpu=MAX_GPU_INDEX).gpu == MAX_GPU_INDEX


def test_gpu_policy_requires_cgroups_at_every_level() -> None:
    """A GPU job has no RLIMIT_AS (CUDA reserves address space beyond host memory): its memory
    bound is the cgroup, so the cgroups layer is required; a CPU policy is as before."""
    required = {layer.name: layer.required for layer in doctor(SandboxPolicy(gpu=0)).layers}
    assert required["cgroups"] is True
    assert {layer.name: layer.required for layer in doctor(SandboxPolicy()).layers}["cgroups"] is False
    del required["cgroups"]
    assert required == {
        n: r for n, r in ((x.name, x.required) for x in doctor(SandboxPolicy()).layers) if n != "cgroups"
    }


def test_real_launch_refuses_a_missing_gpu() -> None:
    """Through the real launcher: GPU 253 exists on no host; the error names the node."""
    policy = SandboxPolicy(limits=FAST_LIMITS, gpu=MAX_GPU_INDEX, unsafe_weaker_sandbox=True)
    with pytest.raises(
        SandboxError, match=r"GPU 253 is not usable on this host: device node\(s\) /dev/nvidia253[, ]"
    ):
        Sandbox(policy, runtimes=("torch",))


# --- a real worker on a fake device tree --------------------------------------------------------

_PROBE = """
import builtins
def _probe():
    import os, resource
    out = {'env': os.environ.get('AIRLOCK_SANDBOX_DEVICE'), 'as': resource.getrlimit(resource.RLIMIT_AS)[0]}
    out['dev'] = sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))
    for name in ('nvidia1', 'nvidiactl', 'nvidia-uvm'):
        try:
            with open('/dev/' + name, 'r+b') as handle:
                out[name] = 'rw'
        except OSError as exc:
            out[name] = type(exc).__name__
    try:
        # as glibc's pthread_setname_np names another thread: O_RDWR, no O_TRUNC
        fd = os.open('/proc/self/task/%d/comm' % os.getpid(), os.O_RDWR)
        try:
            os.write(fd, b'airlock-gpu')
        finally:
            os.close(fd)
        with open('/proc/self/comm') as handle:
            out['comm'] = handle.read().strip()
    except OSError as exc:
        out['comm'] = type(exc).__name__
    return out
builtins._airlock_probe = _probe
"""


@pytest.fixture
def shared_host() -> Iterator[Path]:
    """A fake device tree the sandbox uid can reach (root callers run bubblewrap as uid 65534)."""
    base = Path(tempfile.mkdtemp(prefix="airlock-gpu-"))
    try:
        base.chmod(0o755)
        root = _fake_host(base / "host")
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(base)


def _probe(policy: SandboxPolicy, tmp_path: Path) -> dict[str, object]:
    model = exec_then_eval_checkpoint(
        tmp_path / "probe.pt", _PROBE, bytes_tensor("__import__('json').dumps(_airlock_probe()).encode()")
    )
    with Sandbox(policy, runtimes=("torch",)) as sandbox, sandbox.open(model) as worker:
        evidence = worker.state_dict()["evidence"]
    result: dict[str, object] = json.loads(np.asarray(evidence, dtype=np.uint8).tobytes())
    return result


def test_worker_sees_exactly_its_gpu(
    shared_host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real worker given GPU 1 of the fake tree: only nvidia1, nvidiactl and nvidia-uvm exist in
    its /dev (read-write), it is told to use CUDA, its thread names can be set (the driver needs
    that), and it has no address-space limit; a CPU worker has none of it."""
    monkeypatch.setattr(_launcher, "gpu_binding", functools.partial(gpu_binding, root=str(shared_host)))
    # the fake tree does not replace a cgroup; the test is about what the worker sees
    gpu = _probe(SandboxPolicy(limits=FAST_LIMITS, gpu=1, unsafe_weaker_sandbox=True), tmp_path)
    assert gpu["dev"] == ["nvidia-uvm", "nvidia1", "nvidiactl"]
    assert (gpu["nvidia1"], gpu["nvidiactl"], gpu["nvidia-uvm"]) == ("rw", "rw", "rw")
    assert gpu["env"] == "cuda"
    assert gpu["comm"] == "airlock-gpu"
    assert gpu["as"] == -1  # RLIM_INFINITY: the cgroup bounds a GPU worker's memory
    cpu = _probe(SandboxPolicy(limits=FAST_LIMITS), tmp_path)
    assert cpu["dev"] == []
    assert cpu["env"] is None
    assert cpu["comm"] in ("FileNotFoundError", "PermissionError")
    assert cpu["as"] == FAST_LIMITS.memory_bytes
