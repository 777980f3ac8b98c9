"""The worker's main program, started inside the sandbox: import the runtimes once, then fork a
locked-down job for every ``spawn`` request that arrives on the control socket.

The worker itself never reads an untrusted byte: model file descriptors only ever reach jobs, and
only after the job's lockdown. It reports each job's exit status so airlock can say *why* a job died
(SIGXCPU, SIGKILL by the memory limit, ...).

The worker treats its jobs as hostile:

* it is non-dumpable from its first instruction, so no job can open ``/proc/1/mem`` (and rewrite
  the next job's filter), ``/proc/1/environ`` or ``/proc/1/fd`` even without Landlock; its command
  line is overwritten (the configuration arrives on a file descriptor, never in argv);
* the job filter lives in a sealed memfd (no write, shrink or grow): each job reads its own copy;
* it keeps a duplicate of each job's channel and watches for airlock hanging up: when a request
  ends (``Worker.close``, a deadline, airlock exiting) the job is killed with SIGKILL, whatever
  it was doing; the job is its own session and cannot fork, so that ends every thread it had.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import signal
import socket
import sys
import time
from typing import Any, Final

from airlock.errors import SandboxError
from airlock.sandbox._frames import FrameCaps, recv_frame, send_frame
from airlock.sandbox._job import run_job
from airlock.sandbox._kernel import hide_command_line, load_bpf, set_dumpable
from airlock.sandbox._messages import check_header
from airlock.sandbox._policy import TASK_RESERVE
from airlock.sandbox._runtimes import runtime_named

__all__ = ["main"]

_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
_HANGUP = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _sealed(fd: int) -> int:
    """``fd`` if it is a memfd nobody can change any more; else refuse to start."""
    if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
        raise SandboxError("worker: the job filter is not in a sealed memfd")
    return fd


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):  # the job is its own process group once it ran setsid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


#: how long a fork that fails for want of tasks waits for jobs already killed to be reaped
_DYING_WAIT_SECONDS: Final = 2.0


class _Jobs:
    """Live jobs: pid -> the worker's duplicate of the job's channel, watched for a hang-up."""

    def __init__(self, ctl: socket.socket, poller: select.poll) -> None:
        self.ctl = ctl
        self.poller = poller
        self.lines: dict[int, int] = {}  # fd of the duplicate -> pid
        self.by_pid: dict[int, int] = {}
        self.dying: set[int] = set()  # killed, not yet reaped: their tasks still count

    def add(self, pid: int, line: int) -> None:
        self.lines[line] = pid
        self.by_pid[pid] = line
        self.poller.register(line, select.POLLRDHUP)

    def hung_up(self, line: int) -> None:
        """airlock closed its end: the request is over, so is the job (reaped later)."""
        pid = self.lines.get(line)
        with contextlib.suppress(KeyError):
            self.poller.unregister(line)
        if pid is not None:
            _kill(pid)
            self.dying.add(pid)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.dying.discard(pid)
            send_frame(self.ctl, {"type": "exited", "pid": pid, "status": _status(status)})
            line = self.by_pid.pop(pid, None)
            if line is not None:
                self.lines.pop(line, None)
                with contextlib.suppress(KeyError):
                    self.poller.unregister(line)
                os.close(line)  # only now airlock sees the end of the job's channel, status already sent

    def fork(self) -> int:
        """``os.fork``; when the task budget is spent only because jobs whose request ended are still
        dying (SIGKILL sent, threads not yet gone, not reaped), wait for them, bounded, and retry.
        Jobs of live requests are never waited for: their holding the budget fails the fork."""
        deadline = time.monotonic() + _DYING_WAIT_SECONDS
        while True:
            try:
                return os.fork()
            except BlockingIOError:  # EAGAIN
                self.reap()
                if not self.dying or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def kill_all(self) -> None:
        for pid in list(self.by_pid):
            _kill(pid)


def _child(fd: int, job_bpf_fd: int, cfg: dict[str, Any]) -> None:
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        run_job(fd, job_bpf_fd, cfg)
    finally:
        os._exit(70)  # never fall back into the worker's loop


def main(cfg: dict[str, Any]) -> None:
    set_dumpable(False)
    # The launch filter: installed here, not by bubblewrap, because the bootstrap first re-roots the
    # runtime binds (umount2, which the filter refuses); until now only airlock's own code ran.
    load_bpf(_read_fd(cfg["launch_bpf_fd"]))
    # The sandbox's own task budget, counted in its own user namespace (the launcher leaves the host
    # uid's budget alone, which every sandbox of that uid shares). Jobs get ``tasks``; the worker has
    # TASK_RESERVE more, so jobs that hold every task they may have cannot stop it forking.
    tasks = int(cfg["limits"]["tasks"])
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks + TASK_RESERVE, tasks + TASK_RESERVE))
    hide_command_line(b"airlock-worker")
    job_bpf_fd = _sealed(cfg["job_bpf_fd"])
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
    caps = FrameCaps(max_header_bytes=1 << 16, max_frame_bytes=1 << 16, payload_types=frozenset())
    poller = select.poll()
    poller.register(ctl.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    jobs = _Jobs(ctl, poller)
    try:
        while True:
            events = dict(poller.poll())
            for line, event in events.items():
                if line in jobs.lines and event & _HANGUP:
                    jobs.hung_up(line)
            if wake_r in events:
                while True:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        break
                jobs.reap()
            if ctl.fileno() not in events:
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
            line = os.dup(frame.fds[0])
            os.set_inheritable(line, False)
            try:
                pid = jobs.fork()
            except OSError as exc:  # EAGAIN: jobs hold the task budget; fail this request, not the worker
                os.close(line)
                os.close(frame.fds[0])
                send_frame(ctl, {"type": "spawn_failed", "error": f"fork: {exc.strerror}"})
                continue
            if pid == 0:
                ctl.close()
                os.close(line)
                _child(frame.fds[0], job_bpf_fd, cfg)
            os.close(frame.fds[0])
            jobs.add(pid, line)
            send_frame(ctl, {"type": "spawned", "pid": pid})
    finally:
        jobs.kill_all()
    sys.exit(0)
