"""The model under audit, gated like ``airlock run`` gates one, and a client of the sandboxed
``lm-score`` runtime that trusts nothing the job sends back.

A GGUF file goes through :func:`airlock.sandbox.gate` as it is. A Hugging Face folder is gated
file by file: ``config.json``, ``tokenizer.json`` and ``model.safetensors`` are each copied once
into a sealed memory file; the scan reads those copies (the weights through ``scan_fd``, the two
JSON files written from their copies into a private folder and scanned there as a Hugging Face
folder, so remote-code references and the like are judged); only CLEAN passes (``refusal``). The
job then gets one sealed bundle made from the same copies (``lm_score.BUNDLE_MAGIC``): the bytes
scanned are the bytes loaded. No file of the folder is parsed in this process.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import math
import os
import stat
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from airlock.errors import PolicyError, SandboxError, UsageError
from airlock.policy import Policy
from airlock.results import Verdict
from airlock.sandbox import GatedModel, SandboxPolicy, Worker, gate
from airlock.sandbox._gate import _reopen_readonly, refusal, sealed_copy
from airlock.sandbox._messages import printable
from airlock.sandbox._runtimes.lm_score import (
    BUNDLE_FILES,
    BUNDLE_MAGIC,
    CHAT_BUNDLE_MAGIC,
    CHAT_FILES,
    OP_COMPLETE,
    OP_SCORE,
)

__all__ = ["MAX_COMPLETION_CHARS", "Scorer", "gate_model"]

RUNTIME: Final = "lm-score"
#: texts per request (each request has the sandbox's wall-clock deadline)
CHUNK: Final = 128
#: characters of a completion kept (more than any target: targets are at most 1024 characters)
MAX_COMPLETION_CHARS: Final = 4096
#: bytes one generated token may decode to (the longest tokens of real vocabularies are far shorter)
_MAX_TOKEN_BYTES: Final = 1024
#: nats one scored token may cost (a log-probability of float32 logits is far above -1e4)
_MAX_NLL_PER_TOKEN: Final = 1e4
_SEALS: Final = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _verdict_of(reports: Sequence[Any]) -> Verdict:
    order = [Verdict.CLEAN, Verdict.SUSPICIOUS, Verdict.ERROR, Verdict.MALICIOUS]
    return max((r.verdict for r in reports), key=order.index, default=Verdict.CLEAN)


def _bundle(names: Sequence[str], copies: Sequence[GatedModel], magic: bytes) -> GatedModel:
    """One sealed memory file: magic, table, then each sealed copy's bytes (copied, never parsed)."""
    memfd = os.memfd_create("airlock-model", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        table = b"".join(
            struct.pack("<H", len(n)) + n + struct.pack("<Q", c.size)
            for n, c in ((name.encode(), copy) for name, copy in zip(names, copies, strict=True))
        )
        os.write(memfd, magic + struct.pack("<I", len(copies)) + table)
        digest = hashlib.sha256()
        for copy in copies:
            source = copy.reopen()
            try:
                while chunk := os.read(source, 1 << 20):
                    digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(memfd, view) :]
            finally:
                os.close(source)
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, _SEALS)
        size = os.fstat(memfd).st_size
        return GatedModel("bundle", _reopen_readonly(memfd), size, f"sha256:{digest.hexdigest()}")
    finally:
        os.close(memfd)


def _scan_folder_copies(
    folder: Path, names: Sequence[str], copies: Sequence[GatedModel], policy: Policy | None
) -> list[Any]:
    """The weights' copy scanned as it is; every other copy (configs, tokenizer, chat templates)
    written into a private folder and scanned there as a Hugging Face folder."""
    from airlock._scan.api import scan, scan_fd

    weights = names.index(BUNDLE_FILES[2])
    reports = [scan_fd(copies[weights].fd, folder / BUNDLE_FILES[2], policy=policy)]
    with tempfile.TemporaryDirectory(prefix="airlock-model-") as private:
        for name, copy in zip(names, copies, strict=True):
            if name == BUNDLE_FILES[2]:
                continue
            source = copy.reopen()
            try:
                with os.fdopen(source, "rb", closefd=False) as handle:
                    (Path(private) / name).write_bytes(handle.read(copy.size))
            finally:
                os.close(source)
        reports.append(scan(private, policy=policy))
    return reports


def _sealed_file(folder: Path, name: str, max_bytes: int) -> GatedModel:
    """A sealed copy of ``folder/name``, which must be a regular file and not a link: a model
    folder's ``tokenizer.json -> ~/.ssh/id_ed25519`` would hand a host file to the model, which
    could then write it into its completions (and so into the report)."""
    path = folder / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        why = (
            "a symbolic link (refused: it could name any host file)"
            if exc.errno == errno.ELOOP
            else exc.strerror
        )
        raise UsageError(f"model file {path}: {why}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"model file {path} is not a regular file")
        copy = sealed_copy(f"/proc/self/fd/{fd}", max_bytes, what=f"model file {name}")
    except UsageError as exc:
        raise UsageError(str(exc).replace(f"/proc/self/fd/{fd}", os.fspath(path))) from exc
    finally:
        os.close(fd)
    copy.source = os.fspath(path)
    return copy


def gate_model(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    policy: Policy | None = None,
    expect: str | None = None,
    unsafe_allow_suspicious: bool = False,
    unsafe_skip_scan: bool = False,
    chat: bool = False,
) -> tuple[GatedModel, dict[str, str]]:
    """The gated model and the digest of each file it was made from (``{name: "sha256:..."}``).

    ``chat``: a Hugging Face folder is gated for chat (the probe's local target): the bundle also
    holds those of ``CHAT_FILES`` the folder has (a link among them is refused, never skipped),
    all of them scanned, and has the chat magic; a GGUF file is gated as it is either way."""
    source = Path(path)
    if not source.is_dir():
        gated = gate(
            source,
            policy=policy,
            expect=expect,
            max_bytes=max_bytes,
            unsafe_allow_suspicious=unsafe_allow_suspicious,
            unsafe_skip_scan=unsafe_skip_scan,
        )
        if os.pread(gated.fd, 4, 0) != b"GGUF":
            gated.close()
            raise UsageError(f"model {source}: not a GGUF file; give a GGUF file or a Hugging Face folder")
        return gated, {source.name: gated.digest}
    if expect is not None:
        raise UsageError("--expect checks one file; check a folder first with `airlock verify`")
    if (source / "model.safetensors.index.json").exists():
        raise UsageError(f"model {source}: sharded weights are not supported; give one model.safetensors")
    names = list(BUNDLE_FILES)
    if chat:
        names.extend(name for name in CHAT_FILES if os.path.lexists(source / name))
    copies: list[GatedModel] = []
    try:
        for name in names:
            copies.append(_sealed_file(source, name, max_bytes))
        if not unsafe_skip_scan:
            verdict = _verdict_of(_scan_folder_copies(source, names, copies, policy))
            why = refusal(verdict, unsafe_allow_suspicious=unsafe_allow_suspicious)
            if why is not None:
                raise PolicyError(f"scan gate: {source} refused: {why} (see `airlock scan {source}`)")
        digests = {name: copy.digest for name, copy in zip(names, copies, strict=True)}
        return _bundle(names, copies, CHAT_BUNDLE_MAGIC if chat else BUNDLE_MAGIC), digests
    finally:
        for copy in copies:
            copy.close()


def _pack(texts: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
    encoded = [t.encode("utf-8") for t in texts]
    return {
        "text": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
        "lengths": np.array([len(e) for e in encoded], dtype=np.int64),
    }


def _array(reply: dict[str, np.ndarray[Any, Any]], name: str, dtype: str, shape: tuple[int, ...]) -> Any:
    value = reply[name]
    if value.dtype != np.dtype(dtype) or value.shape != shape:
        raise SandboxError(
            f"lm-score: the job's {name} is {value.dtype}{list(value.shape)}, expected {dtype}{list(shape)}"
        )
    return value


def _expect_names(reply: dict[str, np.ndarray[Any, Any]], names: set[str]) -> None:
    if set(reply) != names:
        shown = printable(", ".join(sorted(reply)), 200)
        raise SandboxError(f"lm-score: the job sent tensors [{shown}], expected {sorted(names)}")


class Scorer:
    """Scores and completions from a model in a sandboxed ``lm-score`` job (:meth:`open`, or any
    :class:`~airlock.sandbox.Worker` speaking that protocol); every reply is checked."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    @classmethod
    def open(cls, gated: GatedModel, policy: SandboxPolicy) -> Scorer:
        return cls(Worker(gated, runtime=RUNTIME, policy=policy))

    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def score(self, texts: Sequence[str]) -> list[float]:
        """The negative log-likelihood (nats) of each text, in order."""
        out: list[float] = []
        for start in range(0, len(texts), CHUNK):
            out.extend(self._score_chunk(texts[start : start + CHUNK]))
        return out

    def _score_chunk(self, texts: Sequence[str]) -> list[float]:
        reply = self.worker.infer({"op": np.array([OP_SCORE], dtype=np.int64), **_pack(texts)})
        return check_scores(reply, texts)

    def complete(self, prompts: Sequence[str], max_new_tokens: int, beams: int) -> list[str]:
        out: list[str] = []
        for start in range(0, len(prompts), CHUNK):
            chunk = prompts[start : start + CHUNK]
            request = {
                "op": np.array([OP_COMPLETE], dtype=np.int64),
                **_pack(chunk),
                "max_new_tokens": np.array([max_new_tokens], dtype=np.int64),
                "beams": np.array([beams], dtype=np.int64),
            }
            out.extend(check_completions(self.worker.infer(request), len(chunk), max_new_tokens))
        return out


def check_scores(reply: dict[str, np.ndarray[Any, Any]], texts: Sequence[str]) -> list[float]:
    """The job's ``nll``/``tokens`` for ``texts``, or ``SandboxError``: exactly those two tensors,
    float64[n] and int64[n]; every count in [0, 2 * UTF-8 bytes + 2] (a tokenizer makes at most a
    token a byte, plus BOS and a prefix space: twice that is a bound with room); every value finite, >= 0 (up to rounding) and at most 1e4 nats a token."""
    n = len(texts)
    _expect_names(reply, {"nll", "tokens"})
    nll, tokens = _array(reply, "nll", "<f8", (n,)), _array(reply, "tokens", "<i8", (n,))
    values: list[float] = []
    for text, value, count in zip(texts, nll.tolist(), tokens.tolist(), strict=True):
        if not 0 <= count <= 2 * len(text.encode("utf-8")) + 2:
            raise SandboxError(
                f"lm-score: the job claims {count} tokens for a text of {len(text)} characters"
            )
        if not math.isfinite(value) or not -1e-3 * count <= value <= _MAX_NLL_PER_TOKEN * count:
            raise SandboxError(f"lm-score: the job sent a log-likelihood out of range ({value!r} nats)")
        values.append(max(value, 0.0))
    return values


def check_completions(reply: dict[str, np.ndarray[Any, Any]], n: int, max_new_tokens: int) -> list[str]:
    """The job's completions, or ``SandboxError``: ``text`` uint8, ``lengths``/``tokens`` int64[n];
    at most ``max_new_tokens`` tokens and 1024 bytes a token each; lengths that add up exactly.
    Invalid UTF-8 (a multi-byte character cut at the last token) is replaced, not trusted; each
    completion is kept to its first :data:`MAX_COMPLETION_CHARS` characters."""
    _expect_names(reply, {"text", "lengths", "tokens"})
    lengths, tokens = _array(reply, "lengths", "<i8", (n,)), _array(reply, "tokens", "<i8", (n,))
    text = reply["text"]
    if text.dtype != np.uint8 or text.ndim != 1:
        raise SandboxError("lm-score: the job's completion text is not uint8[total]")
    blob, at, out = text.tobytes(), 0, []
    for length, count in zip(lengths.tolist(), tokens.tolist(), strict=True):
        if not 0 <= count <= max_new_tokens or not 0 <= length <= count * _MAX_TOKEN_BYTES:
            raise SandboxError(f"lm-score: the job claims {count} tokens in {length} bytes")
        out.append(blob[at : at + length].decode("utf-8", errors="replace")[:MAX_COMPLETION_CHARS])
        at += length
    if at != len(blob):
        raise SandboxError(f"lm-score: completion lengths cover {at} bytes, the text has {len(blob)}")
    return out
