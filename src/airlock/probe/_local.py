"""A local model as the probe's target: gated as ``airlock chat`` gates one, run only inside a
sandboxed job, never loaded in this process.

A GGUF file is copied once into a sealed memory file and scanned there (only CLEAN passes, unless
``unsafe_allow_suspicious`` / ``unsafe_skip_scan``), and a ``text-gguf`` job loads that very copy.
A Hugging Face folder is gated file by file as ``airlock probe --memorization`` gates one
(:func:`airlock.probe.memorization._model.gate_model`, for chat: the tokenizer config and chat
template files too, every copy scanned), and an ``lm-score`` job loads the sealed chat bundle made
of those copies: the architecture is one transformers builds itself (``auto_map`` is dropped, no
remote code is imported), the weights are safetensors. Either job renders the model's chat
template inside its own sandbox (bounded: ``airlock.sandbox._runtimes._template``) and streams the
reply back, checked token by token (:class:`airlock.sandbox._text.TextStream`); this process never
parses, compiles or renders the template. No port is opened and nothing leaves the machine.

A request that overruns its time has its job killed (the sandbox's deadline); the case is then an
error, and the next request gets a fresh job on the same sealed copy. After
:data:`MAX_RESTARTS` lost jobs the run stops with an error: a model that keeps killing its jobs
would otherwise spend the whole budget on reloads.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from airlock.errors import AirlockError, ModelError, SandboxError, UsageError
from airlock.probe._cases import Message
from airlock.probe._client import CaseFailed, Reply

if TYPE_CHECKING:
    from airlock.policy import Policy
    from airlock.sandbox import GatedModel, SandboxPolicy, Worker

__all__ = ["FOLDER_RUNTIME", "MAX_RESTARTS", "RUNTIME", "LocalChat", "LocalModel", "describe", "gate_local"]

RUNTIME: Final = "text-gguf"
#: the runtime of a Hugging Face folder (its chat bundle)
FOLDER_RUNTIME: Final = "lm-score"
#: jobs a run may lose (killed past a deadline, or dropped for breaking the protocol) and restart
MAX_RESTARTS: Final = 3
_GGUF_MAGIC: Final = b"GGUF"
#: the files a Hugging Face folder target must have (the chat template is looked for in the job)
_FOLDER_NEEDS: Final = ("config.json", "tokenizer.json", "model.safetensors")
_NOT_GGUF: Final = (
    "TARGET {path} is not a GGUF file: a local target must be a GGUF chat model "
    "(or give the URL of an OpenAI-compatible server)"
)


@dataclass(frozen=True)
class LocalModel:
    """What the report says about a local target."""

    path: Path
    #: ``file://`` URI of the absolute path (the report's ``target.url``, SARIF's location)
    uri: str
    digest: str


def _check_path(path: Path) -> bool:
    """Errors a user can act on, before anything is copied: no such file, not GGUF; True for a
    folder (a Hugging Face model, checked by its gate)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        hint = " (a URL target must start with http:// or https://)" if ":" in str(path) else ""
        raise UsageError(f"TARGET {path}: no such file{hint}") from exc
    except OSError as exc:
        raise UsageError(f"TARGET {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        return True
    if not stat.S_ISREG(mode):
        raise UsageError(f"TARGET {path} is not a regular file")
    # the magic only (no parser), for a clear message before the copy and the scan; the sealed
    # copy is checked again after the gate (the file may change in between)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"TARGET {path}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.pread(fd, len(_GGUF_MAGIC), 0) != _GGUF_MAGIC:
            raise UsageError(_NOT_GGUF.format(path=path))
    finally:
        os.close(fd)
    return False


def gate_local(
    path: Path,
    *,
    max_bytes: int,
    scan_policy: Policy | None = None,
    expect: str | None = None,
    unsafe_allow_suspicious: bool = False,
    unsafe_skip_scan: bool = False,
) -> GatedModel:
    """The sealed, scanned copy of ``path`` (a GGUF file), or the sealed chat bundle of a Hugging
    Face folder (run it with :func:`runtime_of`: :data:`FOLDER_RUNTIME`); ``UsageError`` for
    anything else, ``PolicyError`` when the scan refuses it, ``IntegrityError`` on an ``expect``
    mismatch."""
    from airlock.sandbox._gate import gate

    if _check_path(path):
        return _gate_folder(
            path,
            max_bytes=max_bytes,
            scan_policy=scan_policy,
            expect=expect,
            unsafe_allow_suspicious=unsafe_allow_suspicious,
            unsafe_skip_scan=unsafe_skip_scan,
        )
    gated = gate(
        path,
        policy=scan_policy,
        expect=expect,
        max_bytes=max_bytes,
        unsafe_allow_suspicious=unsafe_allow_suspicious,
        unsafe_skip_scan=unsafe_skip_scan,
    )
    if os.pread(gated.fd, len(_GGUF_MAGIC), 0) != _GGUF_MAGIC:
        gated.close()
        raise UsageError(_NOT_GGUF.format(path=path))
    return gated


def _gate_folder(
    path: Path,
    *,
    max_bytes: int,
    scan_policy: Policy | None,
    expect: str | None,
    unsafe_allow_suspicious: bool,
    unsafe_skip_scan: bool,
) -> GatedModel:
    from airlock.probe.memorization._model import gate_model

    if expect is not None:
        raise UsageError(
            f"--expect checks one file; TARGET {path} is a folder (check it first with `airlock verify`)"
        )
    for name in _FOLDER_NEEDS:
        if not os.path.lexists(path / name):
            raise UsageError(
                f"TARGET {path} is a folder without {name}: a local folder target must be a Hugging Face "
                f"model with {', '.join(_FOLDER_NEEDS)} and a chat template (or give a GGUF file, or "
                "the URL of an OpenAI-compatible server)"
            )
    gated, _files = gate_model(
        path,
        max_bytes=max_bytes,
        policy=scan_policy,
        unsafe_allow_suspicious=unsafe_allow_suspicious,
        unsafe_skip_scan=unsafe_skip_scan,
        chat=True,
    )
    return gated


def runtime_of(gated: GatedModel) -> str:
    """The runtime that chats with a gated target: its first bytes were written by this process
    (a chat bundle's magic) or checked by it (a GGUF file's)."""
    from airlock.sandbox._runtimes.lm_score import CHAT_BUNDLE_MAGIC

    head = os.pread(gated.fd, len(CHAT_BUNDLE_MAGIC), 0)
    return FOLDER_RUNTIME if head == CHAT_BUNDLE_MAGIC else RUNTIME


class LocalChat:
    """The probe's ``Chat`` for a gated local model in a sandboxed job (``text-gguf`` for a GGUF
    file, ``lm-score`` for a Hugging Face folder's chat bundle): greedy (temperature 0) with a
    fixed seed, ``max_tokens`` a reply; a reply is ``Reply(text, finish)`` with finish ``stop`` or
    ``length``, like the HTTP client's."""

    def __init__(self, gated: GatedModel, policy: SandboxPolicy, *, max_tokens: int, seed: int) -> None:
        self.gated = gated
        self.runtime = runtime_of(gated) if gated is not None else RUNTIME
        self.policy = policy
        self.max_tokens = max_tokens
        self.seed = seed
        self.restarts = 0
        self._worker: Worker | None = None
        self._worker = self._open()
        #: the layers the job runs under (the report shows them)
        self.layers = self._worker.info.job_layers

    def _open(self, within: float | None = None) -> Worker:
        from dataclasses import replace

        from airlock.sandbox import Worker

        policy = self.policy
        if within is not None:
            load = max(1.0, min(policy.limits.wall_seconds, within))
            policy = replace(policy, limits=policy.limits.replace(wall_seconds=load, start_seconds=load))
        return Worker(self.gated, runtime=self.runtime, policy=policy)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> LocalChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(self, messages: tuple[Message, ...], timeout: float) -> Reply:
        if self._worker is None:
            if self.restarts >= MAX_RESTARTS:
                raise AirlockError(f"the sandboxed model lost {self.restarts} jobs; the run stops")
            self.restarts += 1
            # a restart's load is paid by the request that needs it: bounded by that request's
            # deadline (itself within what is left of --max-seconds), not by --load-timeout again
            self._worker = self._open(timeout)
        try:
            done = self._worker.generate(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                max_tokens=self.max_tokens,
                temperature=0.0,
                seed=self.seed,
                timeout=timeout,
            ).read()
        except ModelError as exc:  # the job caught it and waits for the next request
            raise CaseFailed(str(exc)) from exc
        except SandboxError as exc:  # the job was killed or dropped: the next request gets a new one
            self._worker.close()
            self._worker = None
            raise CaseFailed(f"{exc}; the next request gets a new job") from exc
        if done.finish == "context":
            raise CaseFailed(
                f"the prompt ({done.prompt_tokens} tokens) and max_tokens ({self.max_tokens}) "
                "do not fit the model's context"
            )
        return Reply(done.text, done.finish)


def describe(path: Path, gated: GatedModel) -> LocalModel:
    absolute = Path(os.path.abspath(path))
    return LocalModel(absolute, absolute.as_uri(), gated.digest)
