"""Model admission: stage -> verify -> scan -> decide. Only admitted models are ever loaded.

The model file is copied once into a private, content-addressed staging folder while it is hashed;
verification, scanning and the sandboxed load all read that copy, so the bytes loaded are exactly
the bytes checked (the operator's original may change afterwards without effect).

Decision: the scan must come out CLEAN after the model's explicit allowances (``allow = [...]`` in
its config) are applied. A SUSPICIOUS verdict means some unknown callable is not covered by an
allowance: refused. MALICIOUS and ERROR: refused. A configured digest or signature that does not
match: refused before scanning.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import time
from pathlib import Path

from airlock import Policy, scan
from airlock._formats.registry import RUNTIME_ONNX, format_named
from airlock.errors import AirlockError, FormatError, IntegrityError, UsageError
from airlock.gateway._config import ModelConfig
from airlock.gateway._signature import check_signature, onnx_inputs
from airlock.gateway._store import AdmissionRecord
from airlock.integrity import verify
from airlock.sandbox._gate import refusal

__all__ = ["admit", "stage_model"]

_CHUNK = 1 << 20


def stage_model(source: Path, staging: Path) -> tuple[Path, str]:
    """Copy ``source`` (a regular file) into ``staging``; return the copy and its sha256 hex digest."""
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_NONBLOCK: a FIFO configured as the model must not block admission (refused just below)
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"admission: cannot open model {source}: {exc.strerror}") from exc
    digest = hashlib.sha256()
    partial = staging / f".incoming-{os.getpid()}-{time.monotonic_ns()}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"admission: model {source} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as reader, open(partial, "xb") as writer:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
        os.chmod(partial, 0o444)
        staged = staging / f"{digest.hexdigest()}{source.suffix}"
        os.replace(partial, staged)
    finally:
        os.close(fd)
        if partial.exists():
            partial.unlink()
    return staged, digest.hexdigest()


def _finding_dicts(findings: tuple[object, ...]) -> tuple[dict[str, str], ...]:
    result = []
    for finding in findings:
        rule = getattr(finding, "rule", "")
        severity = getattr(finding, "severity", None)
        result.append(
            {
                "rule": str(rule),
                "severity": str(getattr(severity, "value", severity)),
                "message": str(getattr(finding, "message", "")),
                "location": str(getattr(finding, "location", "")),
                "callable": str(getattr(finding, "callable", "") or ""),
            }
        )
    return tuple(result)


def admit(model: ModelConfig, staging: Path) -> tuple[AdmissionRecord, Path | None]:
    """Admit ``model``; return its record and, when admitted, the staged file to load."""
    staged, hexdigest = stage_model(model.path, staging)
    digest = f"sha256:{hexdigest}"

    def record(
        integrity: str, verdict: str, decision: str, reason: str, findings: tuple[dict[str, str], ...] = ()
    ) -> AdmissionRecord:
        return AdmissionRecord(
            model.name, str(model.path), digest, integrity, verdict, decision, reason, findings, time.time()
        )

    integrity = "none configured"
    try:
        if model.expect is not None:
            integrity = "sha256 digest"
            if not hmac.compare_digest(model.expect, digest):
                raise IntegrityError(f"digest mismatch: expected {model.expect} got {digest}")
        elif model.signature is not None:
            integrity = "signature"
            verify(staged, signature=model.signature, key=model.public_key)
    except AirlockError as exc:
        return record(integrity, "NOT SCANNED", "refused", f"integrity check failed: {exc}"), None

    report = scan(staged, policy=Policy(allow=model.allow, sources=(f"config models.{model.name}.allow",)))
    findings = _finding_dicts(tuple(report.findings()))
    verdict = report.verdict
    refused = refusal(verdict)  # the one verdict rule, shared with `airlock run` and load_state_dict
    if refused is None:
        reason = "scan CLEAN" + (f" with allowances {sorted(model.allow)}" if model.allow else "")
        if model.definition is not None and _is_pickle_checkpoint(report.files[0].format):
            # Weights and code distributed independently: the operator's definition file brings
            # the code, so the weights need no unpickler at all, not even in the sandbox.
            try:
                converted = _convert_weights(staged, model)
            except AirlockError as exc:
                return record(
                    integrity, verdict.value, "refused", f"conversion to safetensors failed: {exc}"
                ), None
            return record(
                integrity, verdict.value, "admitted", f"{reason}; {converted[1]}", findings
            ), converted[0]
        mismatch = _signature_mismatch(model, staged, report.files[0].format)
        if mismatch is not None:
            return record(integrity, verdict.value, "refused", mismatch, findings), None
        return record(integrity, verdict.value, "admitted", reason, findings), staged
    return record(integrity, verdict.value, "refused", refused, findings), None


def _signature_mismatch(model: ModelConfig, staged: Path, file_format: str | None) -> str | None:
    """For an ONNX model with declared ``inputs``: why they do not fit the graph's own inputs."""
    fmt = format_named(file_format)
    if (
        not model.inputs
        or fmt is None
        or fmt.runtime != RUNTIME_ONNX
        or model.runtime not in (None, RUNTIME_ONNX)
    ):
        return None
    try:
        why = check_signature(model.inputs, onnx_inputs(staged))
    except FormatError as exc:
        return f"the model's input signature cannot be read: {exc}"
    return None if why is None else f"declared inputs do not match the model: {why}"


def _is_pickle_checkpoint(name: str | None) -> bool:
    """Weights the real loader unpickles and airlock.load can read without an unpickler
    (docs/convert.md): the format's record says both."""
    fmt = format_named(name)
    return fmt is not None and fmt.unpickled_weights and fmt.planner is not None


def _convert_weights(staged: Path, model: ModelConfig) -> tuple[Path, str]:
    """Convert admitted pickle weights to safetensors next to the staged copy."""
    from airlock.loading import convert

    target = staged.with_suffix(".safetensors")
    convert(staged, target, force=True, allow=model.allow)
    return target, f"pickle weights converted to safetensors ({target.name}), loaded with {model.definition}"
