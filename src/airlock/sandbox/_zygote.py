"""The worker's main program, started inside the sandbox: import the runtimes once, then fork a
locked-down job for every ``spawn`` request that arrives on the control socket.

The worker itself never reads an untrusted byte: model file descriptors only ever reach jobs, and
only after the job's lockdown. It reports each job's exit status so airlock can say *why* a job died
(SIGXCPU, SIGKILL by the memory limit, ...).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from typing import Any

from airlock.errors import SandboxError
from airlock.sandbox._frames import FrameCaps, recv_frame, send_frame
from airlock.sandbox._job import run_job
from airlock.sandbox._kernel import load_bpf
from airlock.sandbox._messages import check_header
from airlock.sandbox._runtimes import runtime_named

__all__ = ["main"]


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


def _reap(ctl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send_frame(ctl, {"type": "exited", "pid": pid, "status": _status(status)})


def main(raw_config: str) -> None:
    cfg: dict[str, Any] = json.loads(raw_config)
    if cfg["launch_bpf_fd"] >= 0:  # no bubblewrap (weaker sandbox): install the launch filter ourselves
        load_bpf(_read_fd(cfg["launch_bpf_fd"]))
    job_bpf = _read_fd(cfg["job_bpf_fd"])
    ctl = socket.socket(fileno=cfg["control_fd"])
    for name in cfg["runtimes"]:
        runtime_named(name).warm_up()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    send_frame(ctl, {"type": "hello", "pid": os.getpid()})
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    caps = FrameCaps(max_header_bytes=1 << 16, max_frame_bytes=1 << 16)
    while True:
        ready, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        if wake_r in ready:
            while True:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    break
            _reap(ctl)
        if ctl.fileno() not in ready:
            continue
        try:
            frame = recv_frame(ctl, caps)
            check_header(frame.header, ("spawn",))
        except SandboxError:
            break  # airlock went away or spoke nonsense: stop, which ends every job (pid 1 exits)
        if len(frame.fds) != 1:
            for fd in frame.fds:
                os.close(fd)
            break
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ctl.close()
            run_job(frame.fds[0], job_bpf, cfg)
        os.close(frame.fds[0])
        send_frame(ctl, {"type": "spawned", "pid": pid})
    sys.exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
