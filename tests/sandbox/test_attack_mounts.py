"""Outside attack (held): a job cannot leave its mounts, see past them, or write anything that lasts.

From a job (root, uid 65534, and without Landlock: seccomp and the mount namespace alone), every
way out of the mount table is tried: the new mount API (open_tree, fsopen, fspick, move_mount,
mount_setattr), mount/umount2/pivot_root/chroot, unshare, file handles (name_to_handle_at,
open_by_handle_at), ``/proc/self/root`` and ``..`` walks, and writes to every place a later job
could see (/tmp is per job; the runtime, /dev, /proc/sys and the root are read-only).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.sandbox import Sandbox, SandboxPolicy
from tests.sandbox._payloads import bytes_tensor, exec_then_eval_checkpoint
from tests.sandbox.conftest import FAST_LIMITS

pyseccomp = pytest.importorskip("pyseccomp", reason="the sandbox extra is part of airlock[dev]")
_CALLS = ("open_tree", "fsopen", "fspick", "move_mount", "mount_setattr", "mount", "umount2", "pivot_root",
          "chroot", "unshare", "name_to_handle_at", "open_by_handle_at", "setns")  # fmt: skip


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxPolicy(limits=FAST_LIMITS), runtimes=("torch",)) as warm:
        yield warm


_PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {nr!r}
def call(name, *args):
    ctypes.set_errno(0)
    return 0 if libc.syscall(NR[name], *args) >= 0 else ctypes.get_errno()
def probe():
    buf = ctypes.create_string_buffer(256)
    mnt = ctypes.c_int(0)
    calls = {{
        "open_tree": call("open_tree", -100, b"/", 1 | 0x8000),  # OPEN_TREE_CLONE | AT_RECURSIVE
        "fsopen": call("fsopen", b"proc", 0),
        "fspick": call("fspick", -100, b"/", 0),
        "move_mount": call("move_mount", -100, b"/tmp", -100, b"/", 0),
        "mount_setattr": call("mount_setattr", -100, b"/", 0, buf, 32),
        "mount": call("mount", b"none", b"/", None, 0x20 | 0x4000, None),  # MS_REMOUNT|MS_REC
        "umount2": call("umount2", b"/proc", 2),
        "pivot_root": call("pivot_root", b"/tmp", b"/tmp"),
        "chroot": call("chroot", b"/tmp"),
        "unshare": call("unshare", 0x00020000),
        "name_to_handle_at": call("name_to_handle_at", -100, b"/usr", buf, ctypes.byref(mnt), 0),
        "open_by_handle_at": call("open_by_handle_at", -100, buf, 0),
        "setns": call("setns", 0, 0),
    }}
    walks = {{}}
    for path in ("/proc/self/root/..", "/proc/self/root/../..", "/proc/self/cwd/../..", "/..", "/airlock/..",
                 "/proc/self/root/proc/1"):
        try:
            walks[path] = sorted(os.listdir(path))
        except OSError as exc:
            walks[path] = exc.errno
    writes = {{}}
    for path in ("/airlock/src/x", "/airlock/site-0/x", "/usr/x", "/x", "/dev/x", "/dev/shm/x", "/etc/x",
                 "/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger", "/proc/self/attr/current"):
        try:
            with open(path, "w") as f:
                f.write("1")
            writes[path] = 0
        except OSError as exc:
            writes[path] = exc.errno
    try:
        root = sorted(os.listdir("/"))
    except OSError as exc:  # Landlock: "/" itself is not readable
        root = exc.errno
    airlock = sorted(n for n in ("src", "python", "site-0") if os.path.isdir("/airlock/" + n))
    return {{"calls": calls, "walks": walks, "writes": writes, "root": root, "airlock": airlock}}
"""


def _probe(sandbox: Sandbox, tmp_path: Path) -> Any:
    nr = {name: int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)) for name in _CALLS}
    setup = (
        f"namespace = {{}}\nexec({_PROBE.format(nr=nr)!r}, namespace)\nimport builtins\n"
        "builtins.airlock_probe = lambda ns=namespace: __import__('json').dumps(ns['probe']()).encode()\n"
    )
    model = exec_then_eval_checkpoint(tmp_path / "mounts.pt", setup, bytes_tensor("airlock_probe()"))
    with sandbox.open(model) as worker:
        return json.loads(worker.state_dict()["evidence"].tobytes())


def test_no_way_out_of_the_mounts_and_nothing_written_lasts(sandbox: Sandbox, tmp_path: Path) -> None:
    seen = _probe(sandbox, tmp_path)
    assert all(code != 0 for code in seen["calls"].values()), seen["calls"]
    # every ``..`` walk stays inside the job's root: it lists the same entries as ``/``
    for path, listed in seen["walks"].items():
        if path.endswith("/proc/1"):
            assert listed == 2, (path, listed)  # ENOENT: no pid 1 in the job's /proc
        else:
            assert listed == seen["root"], (path, listed)
    if isinstance(seen["root"], list):  # without Landlock "/" is readable: the sandbox's root only
        assert "airlock" in seen["root"] and "work" not in seen["root"] and "root" not in seen["root"], seen[
            "root"
        ]
    assert "src" in seen["airlock"] and "python" in seen["airlock"], seen["airlock"]
    assert all(code != 0 for code in seen["writes"].values()), seen["writes"]
