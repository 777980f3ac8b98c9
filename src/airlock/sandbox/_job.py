"""One job: a process forked by the worker that locks itself down, then loads and runs a model.

Order matters and is the point of this module: read the job filter from its sealed memfd, new
session, a mount namespace (where the worker may mount) with a private /tmp and a /proc holding
no pid but the job's own, drop every capability, close every inherited descriptor but the job
socket, rlimits, Landlock, non-dumpable,
then the job seccomp filter (no exec, no new processes, no sockets, no memory outside RLIMIT_AS)
and the own-pid guard (signals only to itself) -- and only then receive the model's file
descriptor and let the runtime touch untrusted bytes. Runs inside the sandbox.
"""

from __future__ import annotations

import json
import os
import resource
import select
import socket
from typing import Any, NoReturn

from airlock.sandbox._frames import FrameCaps, recv_frame, send_frame
from airlock.sandbox._kernel import (
    apply_landlock,
    drop_capabilities,
    load_bpf,
    mask_own_fds,
    own_pid_guard,
    private_proc,
    private_tmp,
    privatise_shared_mappings,
    set_dumpable,
)
from airlock.sandbox._messages import TensorCaps, check_header, decode_tensors, encode_tensors
from airlock.sandbox._runtimes import runtime_named
from airlock.sandbox._runtimes.base import Generated, Generates, Loaded

__all__ = ["run_job"]

_MAX_MESSAGE = 4000


def _lockdown(sock_fd: int, job_bpf_fd: int, cfg: dict[str, Any]) -> str:
    # first of all: no memory shared with the worker or with other jobs (a runtime's MAP_SHARED
    # mapping in the warm worker is inherited by every job fork)
    privatise_shared_mappings()
    size = os.fstat(job_bpf_fd).st_size
    job_bpf = os.pread(job_bpf_fd, size, 0)
    if len(job_bpf) != size:
        raise OSError("short read of the job filter")
    os.setsid()
    layers = ["rlimits"]
    # a GPU job: CUDA reserves address space far beyond host memory (airlock.sandbox._gpu); its
    # memory is bounded by the worker's cgroup, which a GPU policy requires
    gpu = cfg.get("gpu") is not None
    if gpu:
        layers.append("gpu-no-address-limit")
    if cfg["private_tmp"]:
        private_tmp(cfg["tmp"], int(cfg["limits"]["tmpfs_bytes"]))
        private_proc("/proc", cfg["tmp"] + "/.airlock-proc")
        mask_own_fds(("fd", "map_files") if gpu else ("fd", "task", "map_files"))
        layers.append("private-tmp")
    if cfg.get("neutral_mounts"):
        layers.append("neutral-paths")
    drop_capabilities()
    os.closerange(3, sock_fd)
    os.closerange(sock_fd + 1, 65536)
    limits = cfg["limits"]
    cpu = int(limits["cpu_seconds"])
    for kind, soft, hard in (
        *(() if gpu else ((resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),)),
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, limits["file_size_bytes"], limits["file_size_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
        (resource.RLIMIT_NPROC, limits["tasks"], limits["tasks"]),
        # queued signals count against the host user's budget too (ucounts: the sandbox's count is
        # checked against the launcher's RLIMIT_SIGPENDING at the host level, shared with the caller
        # and every sandbox of its uid); unbounded here, one job filled it and every process of that
        # uid got EAGAIN from timer_create and sigqueue (outside review 26). One per task it may have.
        (resource.RLIMIT_SIGPENDING, limits["tasks"], limits["tasks"]),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        resource.setrlimit(kind, (int(soft), int(hard)))
    if cfg["landlock"]:
        abi = apply_landlock([(str(path), int(rights)) for path, rights in cfg["landlock"]])
        layers.append(f"landlock-abi{abi}")
    set_dumpable(False)
    load_bpf(job_bpf)
    load_bpf(
        own_pid_guard(
            [(int(n), int(i)) for n, i in cfg["own_pid_rules"]],
            os.getpid(),
            [(int(n), int(i)) for n, i in cfg["own_pid_readers"]],
        )
    )
    layers.append("seccomp-job")
    return ",".join(layers)


def _describe(exc: BaseException) -> str:
    message = str(exc)
    context = exc.__cause__ or exc.__context__
    if context is not None and str(context) not in message:
        message = f"{message} (from {type(context).__name__}: {context})"
    return message[:_MAX_MESSAGE]


def _serve(sock: socket.socket, cfg: dict[str, Any], layers: str) -> int:
    limits = cfg["limits"]
    caps = FrameCaps(int(limits["max_header_bytes"]), int(limits["max_frame_bytes"]))
    tensor_caps = TensorCaps(int(limits["max_tensors"]), int(limits["max_rank"]))
    send_frame(sock, {"type": "ready", "pid": os.getpid(), "layers": layers})
    loaded: Loaded | None = None
    while True:
        frame = recv_frame(sock, caps)
        kind = check_header(frame.header, ("load", "state_dict", "infer", "generate", "cancel", "close"))
        if kind == "close":
            return 0
        if kind == "cancel":
            continue  # it crossed the ``done`` of the generation it was meant for
        try:
            if kind == "load":
                runtime = runtime_named(str(frame.header["runtime"]))
                if len(frame.fds) != runtime.files:
                    raise ValueError(f"{runtime.name} takes {runtime.files} file(s), got {len(frame.fds)}")
                files = [os.fdopen(fd, "rb") for fd in frame.fds]
                definition = frame.header["definition"]
                loaded = runtime.load(
                    files,
                    definition if isinstance(definition, str) else None,
                    int(str(frame.header["threads"])),
                )
                send_frame(
                    sock, {"type": "loaded", "kind": loaded.kind, "summary": loaded.summary()[:_MAX_MESSAGE]}
                )
                continue
            if loaded is None:
                raise ValueError(f"{kind} before a successful load")
            if kind == "generate":
                if not isinstance(loaded, Generates):
                    raise ValueError(f"generate: a {loaded.kind} does not generate text")
                ended = _generate(sock, caps, loaded, str(frame.header["request"]))
                if ended is None:
                    return 0  # the host closed while it waited
                send_frame(
                    sock,
                    {
                        "type": "done",
                        "finish": ended.finish,
                        "prompt_tokens": ended.prompt_tokens,
                        "completion_tokens": ended.completion_tokens,
                    },
                )
                continue
            if kind == "state_dict":
                arrays = loaded.state_dict()
            else:
                arrays = loaded.infer(decode_tensors(frame.header["tensors"], frame.payload, tensor_caps))
            specs, buffers = encode_tensors(arrays)
            send_frame(sock, {"type": "tensors", "tensors": specs}, buffers)
        except BaseException as exc:  # a payload may raise anything, SystemExit included
            send_frame(
                sock, {"type": "error", "stage": kind, "error": type(exc).__name__, "message": _describe(exc)}
            )
            if kind == "load":
                return 3


def _generate(sock: socket.socket, caps: FrameCaps, loaded: Generates, request: str) -> Generated | None:
    """Stream one generation; between tokens, look (without waiting) for ``cancel`` or ``close``."""
    closing = False

    def cancelled() -> bool:
        nonlocal closing
        if closing:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        kind = check_header(recv_frame(sock, caps).header, ("cancel", "close"))
        closing = kind == "close"
        return True

    ended = loaded.generate(
        json.loads(request), lambda text: send_frame(sock, {"type": "text", "text": text}), cancelled
    )
    return None if closing else ended


def run_job(sock_fd: int, job_bpf_fd: int, cfg: dict[str, Any]) -> NoReturn:
    """Entry point in the forked child; never returns."""
    code = 70
    try:
        layers = _lockdown(sock_fd, job_bpf_fd, cfg)
        sock = socket.socket(fileno=sock_fd)
        code = _serve(sock, cfg, layers)
    except BaseException:  # the parent sees the closed socket and the exit status (70)
        code = 70
    os._exit(code)
