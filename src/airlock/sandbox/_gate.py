"""The one gate in front of the sandbox: open once, copy into a sealed memory file, verify, scan.

The model path is opened exactly once (refused before any blocking open unless it is a regular
file), copied into a private memory file that is then sealed (no write, grow or shrink, ever), and
everything after that reads the copy: the digest check, the static scan and the job, which
receives a read-only descriptor of it. So the bytes scanned are the bytes loaded, whatever happens
to the path afterwards, and the job never learns the host path (the descriptor's link inside the
sandbox reads ``/memfd:airlock-model (deleted)``) nor gets a way to write the host file.

The verdict rule (:func:`refusal`) is shared with gateway admission: only CLEAN passes. SUSPICIOUS
(a callable the scanner does not know, e.g. a model that needs its own code) is refused unless the
caller says ``unsafe_allow_suspicious``; MALICIOUS and ERROR are always refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import logging
import mmap
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from airlock.errors import IntegrityError, PolicyError, UsageError
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.policy import Policy
from airlock.results import Report, Verdict
from airlock.sandbox._messages import printable

__all__ = ["WOULD_BLOCK", "GatedModel", "gate", "open_regular", "refusal", "sealed_copy"]

_LOG: Final = logging.getLogger("airlock.sandbox")
_SEALS: Final = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_CHUNK: Final = 1 << 24
#: why a file opened by :func:`open_regular` is refused when a read of it would wait
WOULD_BLOCK: Final = "reading it would wait for data: not an ordinary file (e.g. /proc/kmsg)"


def open_regular(path: str | os.PathLike[str], what: str = "model") -> int:
    """Open ``path`` read-only, refusing anything but a regular file *before* a blocking open.

    ``stat`` first (a FIFO, device or socket is never opened at all), then open with O_NONBLOCK
    (a path swapped for a FIFO in between cannot block) and check the opened object again.
    The descriptor *stays* non-blocking: some files are regular by type but their reads wait
    for data (``/proc/kmsg``, tracing pipes; a symlink to one made ``airlock run`` hang for
    ever). On a disk file O_NONBLOCK changes nothing; on those a read fails with EAGAIN, which
    every reader here refuses (:data:`WOULD_BLOCK`).
    """
    shown = os.fspath(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UsageError(f"{what} {shown!r} is not a regular file (FIFO, device, socket or folder)")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"cannot open {what} {shown!r}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{what} {shown!r} is not a regular file (FIFO, device, socket or folder)")
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class GatedModel:
    """A private, sealed, read-only copy of a model file, and what the gate found about it.

    ``fd`` is a read-only descriptor of the sealed copy: it is what a job receives. Close it with
    :meth:`close` (or use the object as a context manager).
    """

    #: the path as given (shown to the user on the host; never sent to the job)
    source: str
    fd: int
    size: int
    #: ``sha256:<hex>`` of the copy
    digest: str
    #: the static scan of the copy; None when the scan was skipped (``unsafe_skip_scan``)
    report: Report | None = None
    unsafe: tuple[str, ...] = field(default=())

    def reopen(self) -> int:
        """A new read-only descriptor of the copy, with its own offset (each job reads from byte 0)."""
        if self.fd < 0:
            raise UsageError(f"the gated model {self.source!r} is already closed")
        return _reopen_readonly(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> GatedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _reopen_readonly(fd: int) -> int:
    """A new open file description of ``fd``'s file, read-only, at offset 0: the job can neither
    write through it nor (sealed) reopen it to write, and does not share an offset with anyone."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no /proc on the host: a dup (shared offset; sealed, so writes still fail)
        copy = os.dup(fd)
        os.lseek(copy, 0, os.SEEK_SET)
        return copy


def sealed_copy(path: str | os.PathLike[str], max_bytes: int, what: str = "model") -> GatedModel:
    """Copy ``path`` (at most ``max_bytes``) into a sealed memory file; return a read-only fd of it."""
    source = open_regular(path, what)
    memfd = os.memfd_create("airlock-model", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        copied = 0
        kernel_copy = True
        try:
            while True:
                # the size may change under us: copy to EOF, never more than max_bytes + 1
                want = min(_CHUNK, max_bytes + 1 - copied)
                if kernel_copy:
                    try:
                        n = os.sendfile(memfd, source, None, want)
                    except OSError as exc:
                        if exc.errno not in (errno.EINVAL, errno.ENOSYS) or copied:
                            raise
                        kernel_copy = False  # a file system without sendfile: copy through a buffer
                        continue
                else:
                    chunk = os.read(source, min(want, 1 << 20))
                    n = len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(memfd, view) :]
                if n == 0:
                    break
                copied += n
                if copied > max_bytes:
                    raise UsageError(
                        f"{what} {os.fspath(path)!r} is larger than {max_bytes} bytes (the sandbox memory limit)"
                    )
        except BlockingIOError as exc:
            raise UsageError(f"{what} {os.fspath(path)!r}: {WOULD_BLOCK}") from exc
        except OSError as exc:
            raise UsageError(f"cannot read {what} {os.fspath(path)!r}: {exc.strerror}") from exc
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, _SEALS)
        digest = hashlib.sha256()
        if copied:
            with mmap.mmap(memfd, copied, prot=mmap.PROT_READ) as mapped:
                digest.update(mapped)
        # a read-only open file description: the job can neither write through it nor (sealed) reopen to write
        readonly = _reopen_readonly(memfd)
    finally:
        os.close(memfd)
        os.close(source)
    return GatedModel(os.fspath(path), readonly, copied, f"sha256:{digest.hexdigest()}")


def refusal(verdict: Verdict, *, unsafe_allow_suspicious: bool = False) -> str | None:
    """Why a scan verdict keeps a model out of the sandbox, or None when it may be loaded.

    The rule for every front end (``airlock run``, :func:`airlock.sandbox.load_state_dict`,
    gateway admission): CLEAN passes; SUSPICIOUS only with ``unsafe_allow_suspicious``; MALICIOUS
    and ERROR (not fully analysed) never.
    """
    if verdict is Verdict.CLEAN:
        return None
    if verdict is Verdict.SUSPICIOUS:
        return (
            None
            if unsafe_allow_suspicious
            else "scan SUSPICIOUS: unknown callables not covered by the model's allowances"
        )
    if verdict is Verdict.MALICIOUS:
        return "scan MALICIOUS"
    return "scan ERROR: the model could not be fully analysed"


def gate(
    path: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    limits: Limits = DEFAULT_LIMITS,
    expect: str | None = None,
    max_bytes: int = 8 << 30,
    unsafe_allow_suspicious: bool = False,
    unsafe_skip_scan: bool = False,
) -> GatedModel:
    """Open ``path`` once, copy and seal it, check ``expect`` (``sha256:<hex>``), scan the copy.

    Raises :class:`~airlock.errors.IntegrityError` on a digest mismatch and
    :class:`~airlock.errors.PolicyError` when :func:`refusal` refuses the verdict. The returned
    model is what :class:`~airlock.sandbox.Worker` loads.
    """
    gated = sealed_copy(path, max_bytes)
    try:
        if expect is not None and not hmac.compare_digest(expect, gated.digest):
            raise IntegrityError(
                f"digest mismatch for {gated.source!r}: expected {expect} got {gated.digest}"
            )
        if unsafe_skip_scan:
            _LOG.warning("airlock: unsafe_skip_scan: %r is loaded WITHOUT the static scan gate", gated.source)
            gated.unsafe = ("unsafe_skip_scan",)
            return gated
        from airlock._scan.api import scan_fd  # the scanner only when a scan is asked for

        report = scan_fd(gated.fd, Path(gated.source), policy=policy, limits=limits)
        gated.report = report
        why = refusal(report.verdict, unsafe_allow_suspicious=unsafe_allow_suspicious)
        if why is not None:
            first = next(
                (f for f in report.findings() if f.severity.verdict is report.verdict),
                None,
            )
            # the finding quotes the model (callable names): one escaped line, never a fake line of output
            detail = (
                f"; first finding: {first.rule}: {printable(first.message, 400)}" if first is not None else ""
            )
            raise PolicyError(f"scan gate: {gated.source} refused: {why}{detail}")
        if unsafe_allow_suspicious and report.verdict is Verdict.SUSPICIOUS:
            _LOG.warning("airlock: unsafe_allow_suspicious: %r is SUSPICIOUS and loaded anyway", gated.source)
            gated.unsafe = ("unsafe_allow_suspicious",)
    except BaseException:
        gated.close()
        raise
    return gated
