"""The trusted side: a warm :class:`Sandbox` (one worker that has imported the runtimes) and the
:class:`Worker` sessions it forks, one locked-down job each.

Nothing that comes back is trusted: every frame is checked against its schema and caps, tensors
arrive as raw buffers of allow-listed dtypes, and errors are data, never re-raised objects.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from airlock.errors import ModelError, SandboxError, UsageError
from airlock.sandbox._detect import detect_runtime
from airlock.sandbox._frames import Frame, FrameCaps, recv_frame, send_frame
from airlock.sandbox._launcher import Launched, launch
from airlock.sandbox._messages import TensorCaps, check_header, decode_tensors, encode_tensors
from airlock.sandbox._policy import SandboxPolicy
from airlock.sandbox._runtimes import runtime_named

__all__ = ["LoadInfo", "Sandbox", "Worker", "load_state_dict"]

_CONTROL_CAPS = FrameCaps(max_header_bytes=1 << 16, max_frame_bytes=1 << 16)


@dataclass(frozen=True)
class LoadInfo:
    runtime: str
    kind: str
    summary: str
    #: layers in force for the job, as the job itself reported them after its lockdown
    job_layers: str
    #: layers in force for the worker, as probed by airlock
    worker_layers: tuple[str, ...]


class Sandbox:
    """One warm worker: started once (cold start), then forks a locked-down job per :meth:`open`."""

    def __init__(self, policy: SandboxPolicy | None = None, runtimes: tuple[str, ...] = ("torch",)) -> None:
        self.policy = policy or SandboxPolicy()
        for name in runtimes:
            runtime_named(name)
        self.runtimes = runtimes
        self._exits: dict[int, str] = {}
        self._launched: Launched | None = launch(self.policy, runtimes)
        # a cold start imports the runtimes (seconds); it has its own bound, then requests get wall_seconds
        self.control.settimeout(self.policy.limits.start_seconds)
        try:
            frame = recv_frame(self.control, _CONTROL_CAPS)
        except (TimeoutError, SandboxError) as exc:
            self._launched.process.kill()
            stderr = self._stderr()
            self.kill()
            raise SandboxError(
                f"sandbox: the worker did not start ({exc or 'timed out'}); worker said: {stderr}"
            ) from exc
        self.control.settimeout(self.policy.limits.wall_seconds)
        check_header(frame.header, ("hello",))

    @property
    def control(self) -> socket.socket:
        if self._launched is None:
            raise SandboxError("sandbox: already closed")
        return self._launched.control

    @property
    def layers(self) -> tuple[str, ...]:
        return self._launched.layers if self._launched else ()

    def _stderr(self) -> str:
        assert self._launched is not None
        process = self._launched.process
        try:
            process.wait(timeout=2)
        except Exception:
            return "(no output)"
        assert process.stderr is not None
        return process.stderr.read(8192).decode(errors="replace").strip() or "(no output)"

    def _recv_control(self) -> Frame:
        try:
            return recv_frame(self.control, _CONTROL_CAPS)
        except TimeoutError as exc:
            self.kill()
            raise SandboxError(
                f"sandbox: wall-clock limit of {self.policy.limits.wall_seconds} s exceeded; worker killed"
            ) from exc

    def _spawn(self) -> tuple[socket.socket, int]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            send_frame(self.control, {"type": "spawn"}, fds=[theirs.fileno()])
        finally:
            theirs.close()
        while True:
            frame = self._recv_control()
            kind = check_header(frame.header, ("spawned", "exited"))
            pid = frame.header["pid"]
            assert isinstance(pid, int)
            if kind == "spawned":
                return ours, pid
            self._exits[pid] = str(frame.header["status"])

    def exit_status(self, pid: int, wait: float = 2.0) -> str:
        """How job ``pid`` ended, as its worker reported it ("killed by SIGXCPU", "exit 3", ...)."""
        deadline = time.monotonic() + wait
        while pid not in self._exits and time.monotonic() < deadline:
            self.control.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                frame = recv_frame(self.control, _CONTROL_CAPS)
            except (TimeoutError, SandboxError):
                break
            finally:
                self.control.settimeout(self.policy.limits.wall_seconds)
            if check_header(frame.header, ("exited",)) == "exited":
                number = frame.header["pid"]
                assert isinstance(number, int)
                self._exits[number] = str(frame.header["status"])
        return self._exits.get(pid, "unknown (worker did not report)")

    def open(
        self,
        model: str | os.PathLike[str],
        *,
        runtime: str | None = None,
        definition: str | os.PathLike[str] | None = None,
    ) -> Worker:
        """Fork a job, lock it down, and load ``model`` in it (warm start)."""
        return Worker(model, runtime=runtime, definition=definition, sandbox=self)

    def kill(self) -> None:
        """Kill the whole worker tree now (pid-namespace death plus cgroup kill where present)."""
        if self._launched is None:
            return
        launched, self._launched = self._launched, None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(launched.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            launched.process.kill()
        launched.process.wait()
        if launched.cgroups is not None:
            launched.cgroups.kill_and_remove()
        launched.control.close()
        if launched.process.stderr is not None:
            launched.process.stderr.close()

    def close(self) -> None:
        """Stop the worker: closing the control socket makes pid 1 exit, which ends every job."""
        if self._launched is None:
            return
        self._launched.control.close()
        with contextlib.suppress(Exception):
            self._launched.process.wait(timeout=5)
        self.kill()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_model(path: str | os.PathLike[str]) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot open model {os.fspath(path)!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"model {os.fspath(path)!r} is not a regular file")
    return fd


class Worker:
    """A model loaded in its own locked-down job, for repeated inference.

    ``runtime`` is told from the file's content when not given. ``definition`` is a trusted Python
    file defining ``build_model()``; then ``model`` is a safetensors file of its weights.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        runtime: str | None = None,
        definition: str | os.PathLike[str] | None = None,
        policy: SandboxPolicy | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        fd = _open_model(model)
        self._sock: socket.socket | None = None
        self._owned: Sandbox | None = None
        try:
            source = None
            if definition is not None:
                runtime = runtime or "definition"
                source = Path(definition).read_text(encoding="utf-8")
            name = runtime or detect_runtime(fd)
            runtime_named(name)
            if sandbox is None:
                self._owned = sandbox = Sandbox(policy, runtimes=(name,))
            self.sandbox = sandbox
            limits = sandbox.policy.limits
            self._caps = FrameCaps(limits.max_header_bytes, limits.max_frame_bytes)
            self._tensor_caps = TensorCaps(limits.max_tensors, limits.max_rank)
            self._sock, self._pid = sandbox._spawn()
            self._sock.settimeout(limits.wall_seconds)
            ready = self._expect("start", ("ready",))
            header: dict[str, object] = {
                "type": "load",
                "runtime": name,
                "definition": source,
                "threads": limits.threads,
            }
            send_frame(self._sock, header, fds=[fd])
            loaded = self._expect("load", ("loaded",))
            self.info = LoadInfo(
                name,
                str(loaded.header["kind"]),
                str(loaded.header["summary"]),
                str(ready.header["layers"]),
                sandbox.layers,
            )
        except BaseException:
            self.close()
            raise
        finally:
            os.close(fd)

    def _expect(self, stage: str, kinds: tuple[str, ...]) -> Frame:
        assert self._sock is not None
        try:
            frame = recv_frame(self._sock, self._caps)
        except TimeoutError as exc:
            self.sandbox.kill()
            raise SandboxError(
                f"sandboxed {stage} exceeded the wall-clock limit of {self.sandbox.policy.limits.wall_seconds} s; "
                "the worker tree was killed"
            ) from exc
        except SandboxError as exc:
            status = self.sandbox.exit_status(self._pid) if self.sandbox._launched else "worker killed"
            raise SandboxError(f"sandboxed {stage} failed: the job died ({status}): {exc}") from exc
        kind = check_header(frame.header, (*kinds, "error"))
        if kind == "error":
            message = f"sandboxed {frame.header['stage']} failed: {frame.header['error']}: {frame.header['message']}"
            if frame.header["stage"] in ("infer", "state_dict"):
                raise ModelError(message)  # the job caught it and waits for the next request
            raise SandboxError(message)
        return frame

    def _tensors(self, stage: str) -> dict[str, np.ndarray[Any, Any]]:
        frame = self._expect(stage, ("tensors",))
        return decode_tensors(frame.header["tensors"], frame.payload, self._tensor_caps)

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """Every tensor of the loaded object (module parameters and buffers, or checkpoint tensors)."""
        if self._sock is None:
            raise SandboxError("worker: already closed")
        send_frame(self._sock, {"type": "state_dict"})
        return self._tensors("state_dict")

    def infer(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """One inference; see docs/sandbox.md for how input names map to the model's arguments."""
        if self._sock is None:
            raise SandboxError("worker: already closed")
        specs, buffers = encode_tensors(list(inputs.items()))
        send_frame(self._sock, {"type": "infer", "tensors": specs}, buffers)
        return self._tensors("infer")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(SandboxError):
                send_frame(self._sock, {"type": "close"})
            self._sock.close()
            self._sock = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def load_state_dict(
    path: str | os.PathLike[str], *, runtime: str | None = None, policy: SandboxPolicy | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """Load ``path`` with the framework's own loader inside the sandbox; tensors come back as arrays."""
    with Worker(path, runtime=runtime, policy=policy) as worker:
        return worker.state_dict()
