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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from airlock.errors import ModelError, SandboxError, UsageError
from airlock.limits import DEFAULT_LIMITS
from airlock.policy import Policy
from airlock.sandbox._detect import detect_runtime
from airlock.sandbox._frames import Frame, FrameCaps, recv_frame, send_frame
from airlock.sandbox._gate import WOULD_BLOCK, GatedModel, gate, open_regular, sealed_copy
from airlock.sandbox._launcher import Launched, launch
from airlock.sandbox._messages import (
    Tensor,
    TensorCaps,
    check_header,
    decode_tensors,
    encode_tensors,
    printable,
)
from airlock.sandbox._policy import SandboxPolicy
from airlock.sandbox._runtimes import runtime_named
from airlock.sandbox._text import TextStream, build_request

__all__ = ["LoadInfo", "Sandbox", "Worker", "load_state_dict"]

_MAX_EXITS = 4096
#: pids are below this on every Linux (``PID_MAX_LIMIT``, the most ``kernel.pid_max`` can be)
_PID_LIMIT = 1 << 22
_CONTROL_CAPS = FrameCaps(max_header_bytes=1 << 16, max_frame_bytes=1 << 16, payload_types=frozenset())
#: the only message a job sends with a payload (its raw tensor buffers)
_JOB_PAYLOADS = frozenset({"tensors"})


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
        #: without a pid namespace, jobs (own sessions) would outlive a killed worker: pidfds to kill them by
        self._job_pidfds: dict[int, int] = {}
        self._launched: Launched | None = launch(self.policy, runtimes)
        # a cold start imports the runtimes (seconds); it has its own bound, then requests get wall_seconds
        deadline = time.monotonic() + self.policy.limits.start_seconds
        try:
            frame = recv_frame(self.control, _CONTROL_CAPS, accept_fds=False, deadline=deadline)
        except (TimeoutError, SandboxError) as exc:
            self._launched.process.kill()
            stderr = self._stderr()
            self.kill()
            raise SandboxError(
                f"sandbox: the worker did not start ({exc or 'timed out'}); worker said: {stderr}"
            ) from exc
        try:
            check_header(frame.header, ("hello",))
        except SandboxError:
            self.kill()
            raise

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

    def _recv_control(self, deadline: float) -> Frame:
        try:
            return recv_frame(self.control, _CONTROL_CAPS, accept_fds=False, deadline=deadline)
        except TimeoutError as exc:
            self.kill()
            raise SandboxError(
                f"sandbox: wall-clock limit of {self.policy.limits.wall_seconds} s exceeded; worker killed"
            ) from exc
        except SandboxError:
            self.kill()  # the worker spoke out of protocol: it is no longer trusted to run jobs
            raise

    def _spawn(self, deadline: float | None = None) -> tuple[socket.socket, int]:
        if deadline is None:
            deadline = time.monotonic() + self.policy.limits.wall_seconds
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            send_frame(self.control, {"type": "spawn"}, fds=[theirs.fileno()], deadline=deadline)
        except TimeoutError as exc:
            ours.close()
            self.kill()
            raise SandboxError(
                "sandbox: the worker did not take a spawn request in time; worker killed"
            ) from exc
        finally:
            theirs.close()
        while True:
            try:
                frame = self._recv_control(deadline)
                kind = check_header(frame.header, ("spawned", "exited", "spawn_failed"))
            except SandboxError:
                ours.close()
                self.kill()  # a frame out of protocol: the worker is no longer trusted to run jobs
                raise
            if kind == "spawn_failed":
                ours.close()
                raise SandboxError(
                    f"sandbox: the worker could not start a job: {printable(str(frame.header['error']), 200)} "
                    f"(the other jobs of this sandbox hold its {self.policy.limits.tasks} tasks)"
                )
            pid = frame.header["pid"]
            assert isinstance(pid, int)
            if kind == "spawned":
                if "namespaces" not in self.layers and pid > 1:  # the pid is a host pid then
                    self._track_job(pid)
                return ours, pid
            self._record_exit(pid, str(frame.header["status"]))

    def _record_exit(self, pid: int, status: str) -> None:
        """Remember how a job ended: escaped (the worker may be hostile) and bounded in number."""
        if len(self._exits) >= _MAX_EXITS:
            self._exits.pop(next(iter(self._exits)))
        self._exits[pid] = printable(status, 100)

    def _track_job(self, pid: int) -> None:
        """Keep a pidfd of job ``pid`` (a host pid: no pid namespace) to kill it with the worker.

        The worker may be hostile by now, so the pid is trusted only if that process is the
        worker's own child: the pidfd pins the process, then its parent is checked."""
        assert self._launched is not None
        if not 0 < pid < _PID_LIMIT:  # no pid is larger (pid_max); 2**40 was an OverflowError here
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            parent = -1
        if parent != self._launched.process.pid:
            os.close(pidfd)
            return
        self._job_pidfds[pid] = pidfd

    def exit_status(self, pid: int, wait: float = 2.0) -> str:
        """How job ``pid`` ended, as its worker reported it ("killed by SIGXCPU", "exit 3", ...)."""
        deadline = time.monotonic() + wait
        while pid not in self._exits and time.monotonic() < deadline and self._launched is not None:
            try:
                frame = recv_frame(self.control, _CONTROL_CAPS, accept_fds=False, deadline=deadline)
                kind = check_header(frame.header, ("exited",))
            except (TimeoutError, SandboxError):
                break
            if kind == "exited":
                number = frame.header["pid"]
                assert isinstance(number, int)
                self._record_exit(number, str(frame.header["status"]))
        return self._exits.get(pid, "unknown (worker did not report)")

    def open(
        self,
        model: str | os.PathLike[str] | GatedModel,
        *,
        runtime: str | None = None,
        definition: str | os.PathLike[str] | None = None,
    ) -> Worker:
        """Fork a job, lock it down, and load ``model`` in it (warm start). No scan: see :class:`Worker`."""
        return Worker(model, runtime=runtime, definition=definition, sandbox=self)

    def kill(self) -> None:
        """Kill the whole worker tree now (pid-namespace death plus cgroup kill where present)."""
        if self._launched is None:
            return
        launched, self._launched = self._launched, None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(launched.process.pid, signal.SIGKILL)
        for pidfd in self._job_pidfds.values():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        self._job_pidfds.clear()
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


class Worker:
    """A model loaded in its own locked-down job, for repeated inference.

    ``runtime`` is told from the file's content when not given. ``definition`` is a trusted Python
    file defining ``build_model()``; then ``model`` is a safetensors file of its weights.

    ``model`` is a :class:`GatedModel` (from :func:`airlock.sandbox.gate`: verified and scanned) or
    a path. A path is *not* scanned here (the sandbox is then the only protection): it is copied
    once into a sealed private memory file, like a gated model, so the job can neither write the
    host file nor learn its path. Every request has a deadline (``wall_seconds``) for the whole
    exchange; past it the worker tree is killed. Replies are bounded by ``frame_bytes`` (never
    more than the job's memory limit) and may carry no file descriptors.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | GatedModel,
        *,
        runtime: str | None = None,
        definition: str | os.PathLike[str] | None = None,
        policy: SandboxPolicy | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self._sock: socket.socket | None = None
        self._owned: Sandbox | None = None
        limits = (sandbox.policy if sandbox is not None else policy or SandboxPolicy()).limits
        if isinstance(model, GatedModel):
            fd = model.reopen()
        else:
            with sealed_copy(model, limits.memory_bytes) as copy:
                fd = copy.reopen()
        try:
            source = None
            if definition is not None:
                runtime = runtime or "definition"
                source = _read_definition(definition)
            name = runtime or detect_runtime(fd)
            runtime_named(name)
            if sandbox is None:
                self._owned = sandbox = Sandbox(policy, runtimes=(name,))
            self.sandbox = sandbox
            self._caps = FrameCaps(limits.max_header_bytes, limits.frame_bytes, _JOB_PAYLOADS)
            self._tensor_caps = TensorCaps(limits.max_tensors, limits.max_rank, limits.frame_bytes)
            deadline = self._deadline()
            self._sock, self._pid = sandbox._spawn(deadline)
            ready = self._expect("start", ("ready",), deadline)
            header: dict[str, object] = {
                "type": "load",
                "runtime": name,
                "definition": source,
                "threads": limits.threads,
            }
            deadline = self._deadline()
            self._send("load", header, (), [fd], deadline)
            loaded = self._expect("load", ("loaded",), deadline)
            self.info = LoadInfo(
                name,
                printable(str(loaded.header["kind"]), 200),
                printable(str(loaded.header["summary"])),
                printable(str(ready.header["layers"]), 200),
                sandbox.layers,
            )
        except BaseException:
            self.close()
            raise
        finally:
            os.close(fd)

    def _deadline(self) -> float:
        return time.monotonic() + self.sandbox.policy.limits.wall_seconds

    def channel_fds(self) -> list[int]:
        """File descriptors of the sockets that carry this worker's requests: the job's channel and
        the sandbox's control socket. Each hangs up (POLLRDHUP/POLLHUP) when the process at its other
        end dies, at any depth of the sandbox: the job's channel once the zygote reaped the job (its
        duplicate is closed only then), the control socket when the zygote ends. No other process
        holds either end (the launcher passes the control socket to the zygote alone, ``--as-pid-1``;
        a job's end reaches only that job and the zygote's watching duplicate)."""
        fds = [self._sock.fileno()] if self._sock is not None else []
        launched = self.sandbox._launched
        if launched is not None:
            fds.append(launched.control.fileno())
        return fds

    def _past_deadline(self, stage: str) -> SandboxError:
        self.sandbox.kill()
        self._drop()
        return SandboxError(
            f"sandboxed {stage} exceeded the wall-clock limit of {self.sandbox.policy.limits.wall_seconds} s; "
            "the worker tree was killed"
        )

    def _drop(self) -> None:
        """Forget the job socket: after a protocol failure nothing more is said to that job."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(
        self,
        stage: str,
        header: dict[str, object],
        buffers: list[memoryview] | tuple[()],
        fds: list[int],
        deadline: float,
    ) -> None:
        if self._sock is None:
            raise SandboxError("worker: already closed (or failed)")
        try:
            send_frame(self._sock, header, buffers, fds, deadline=deadline)
        except TimeoutError as exc:
            raise self._past_deadline(stage) from exc
        except SandboxError as exc:
            self._drop()
            status = self.sandbox.exit_status(self._pid) if self.sandbox._launched else "worker killed"
            raise SandboxError(f"sandboxed {stage} failed: the job died ({status}): {exc}") from exc

    def _expect(self, stage: str, kinds: tuple[str, ...], deadline: float) -> Frame:
        if self._sock is None:
            raise SandboxError("worker: already closed (or failed)")
        try:
            frame = recv_frame(self._sock, self._caps, accept_fds=False, deadline=deadline)
            kind = check_header(frame.header, (*kinds, "error"))
        except TimeoutError as exc:
            raise self._past_deadline(stage) from exc
        except SandboxError as exc:
            # the job broke the protocol (or died): it is not spoken to again
            self._drop()
            status = self.sandbox.exit_status(self._pid) if self.sandbox._launched else "worker killed"
            raise SandboxError(f"sandboxed {stage} failed: the job died ({status}): {exc}") from exc
        if kind == "error":
            message = (
                f"sandboxed {printable(str(frame.header['stage']), 40)} failed: "
                f"{printable(str(frame.header['error']), 200)}: {printable(str(frame.header['message']))}"
            )
            if frame.header["stage"] in ("infer", "state_dict", "generate"):
                raise ModelError(message)  # the job caught it and waits for the next request
            raise SandboxError(message)
        return frame

    def _tensors(self, stage: str, deadline: float, packed: bool = False) -> dict[str, Any]:
        frame = self._expect(stage, ("tensors",), deadline)
        try:
            return decode_tensors(frame.header["tensors"], frame.payload, self._tensor_caps, packed)
        except SandboxError as exc:
            self._drop()
            raise SandboxError(f"sandboxed {stage} failed: the job sent a bad tensor table: {exc}") from exc

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """Every tensor of the loaded object (module parameters and buffers, or checkpoint tensors)."""
        deadline = self._deadline()
        self._send("state_dict", {"type": "state_dict"}, (), [], deadline)
        return self._tensors("state_dict", deadline)

    def infer(self, inputs: Mapping[str, Tensor], packed: bool = False) -> dict[str, Any]:
        """One inference; see docs/sandbox.md for how input names map to the model's arguments.
        With ``packed``, byte-string outputs stay :class:`PackedBytes` (offsets and one buffer)."""
        specs, buffers = encode_tensors(list(inputs.items()))
        deadline = self._deadline()
        self._send("infer", {"type": "infer", "tensors": specs}, buffers, [], deadline)
        return self._tensors("infer", deadline, packed)

    def send_infer(self, inputs: Mapping[str, Tensor]) -> None:
        """Send one inference request without waiting for its answer (:meth:`receive_infer`).

        The job answers requests one at a time, in order, and reads the next one only once it has
        answered: a caller may send a request while the previous one runs, so the job finds it
        waiting when it is done. Such a request must fit in the socket's buffer (a few KiB),
        or the send waits for the job to read it, which it does only after its current answer."""
        specs, buffers = encode_tensors(list(inputs.items()))
        self._send("infer", {"type": "infer", "tensors": specs}, buffers, [], self._deadline())

    def receive_infer(self, packed: bool = False) -> dict[str, Any]:
        """The answer to the oldest request sent with :meth:`send_infer`, within ``wall_seconds``
        (``packed``: as for :meth:`infer`)."""
        return self._tensors("infer", self._deadline(), packed)

    def generate(
        self,
        *,
        messages: Sequence[dict[str, str]] | None = None,
        prompt: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        timeout: float | None = None,
    ) -> TextStream:
        """Generate text with a text model (runtime ``text-gguf``): chat ``messages`` (rendered by
        the model's chat template inside the job) or a raw ``prompt``; iterate the stream for each
        token's text, or call ``.read()``. ``UsageError`` for a bad request, before the job sees it.

        ``timeout``: seconds the whole generation may take, when shorter than ``wall_seconds``;
        past it the worker tree is killed, as past ``wall_seconds``."""
        try:
            request = build_request(
                messages=messages,
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                stop=stop,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if timeout is not None and not timeout > 0:
            raise UsageError(f"generate: timeout must be > 0 seconds, got {timeout}")
        deadline = self._deadline()
        if timeout is not None:
            deadline = min(deadline, time.monotonic() + timeout)
        return TextStream(self, request, deadline)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(SandboxError, TimeoutError):
                send_frame(self._sock, {"type": "close"}, deadline=time.monotonic() + 1.0)
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


def _read_definition(path: str | os.PathLike[str]) -> str:
    fd = open_regular(path, "definition")
    try:
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(_MAX_DEFINITION + 1)
    except BlockingIOError:
        raw = None
    if raw is None:  # a non-blocking read that would wait
        raise UsageError(f"definition {os.fspath(path)!r}: {WOULD_BLOCK}")
    if len(raw) > _MAX_DEFINITION:
        raise UsageError(f"definition {os.fspath(path)!r} is larger than {_MAX_DEFINITION} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"definition {os.fspath(path)!r} is not UTF-8 text: {exc}") from exc


_MAX_DEFINITION = 1 << 20


def load_state_dict(
    path: str | os.PathLike[str] | GatedModel,
    *,
    runtime: str | None = None,
    policy: SandboxPolicy | None = None,
    scan_policy: Policy | None = None,
    expect: str | None = None,
    unsafe_allow_suspicious: bool = False,
    unsafe_skip_scan: bool = False,
) -> dict[str, np.ndarray[Any, Any]]:
    """Gate ``path`` (open once, sealed private copy, ``expect`` digest, static scan: only CLEAN
    passes, see :func:`airlock.sandbox.gate`), then load that copy with the framework's own loader
    inside the sandbox; tensors come back as arrays. ``unsafe_skip_scan`` skips the scan (logged
    as a warning); the sandbox is then the only protection."""
    sandbox_policy = policy or SandboxPolicy()
    if isinstance(path, GatedModel):
        gated = path
    else:
        gated = gate(
            path,
            policy=scan_policy,
            limits=DEFAULT_LIMITS,
            expect=expect,
            max_bytes=sandbox_policy.limits.memory_bytes,
            unsafe_allow_suspicious=unsafe_allow_suspicious,
            unsafe_skip_scan=unsafe_skip_scan,
        )
    try:
        with Worker(gated, runtime=runtime, policy=sandbox_policy) as worker:
            return worker.state_dict()
    finally:
        if gated is not path:
            gated.close()
