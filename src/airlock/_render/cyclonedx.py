"""``--format cyclonedx``: a CycloneDX 1.6 ML-BOM of the scanned files, written by cyclonedx-python-lib.

One component per analysed file: ``machine-learning-model`` for model formats, ``data`` for the
rest (JSON configs, templates), with the file's SHA-256 (read again here, streaming, never
following a link), its format and airlock's verdict and findings as ``airlock:*`` properties.
Skipped files are listed too (verdict ``SKIPPED`` and the reason): an SBOM that leaves out what
airlock did not analyse would look cleaner than it is. airlock itself is the BOM's tool.

Needs the ``sbom`` extra (``pip install 'model-airlock[sbom]'``); the command line says so when
it is missing.
"""

from __future__ import annotations

import hashlib
import os
import stat

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6

from airlock import __version__
from airlock.results import FileReport, Report, Severity

__all__ = ["render"]

#: Formats that hold data rather than a model (anything else airlock reads is a model format).
_DATA_FORMATS = frozenset({"huggingface", "jinja", "json"})
_CHUNK = 1 << 20


def _sha256(path: str) -> str | None:
    """SHA-256 of a regular file, or None (a folder entry, a link, unreadable)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


def _component(index: int, file: FileReport) -> Component:
    kind = (
        ComponentType.DATA if (file.format or "") in _DATA_FORMATS else ComponentType.MACHINE_LEARNING_MODEL
    )
    props = [
        Property(name="airlock:verdict", value=file.verdict.value),
        Property(name="airlock:format", value=file.format or "unknown"),
        Property(name="airlock:size", value=str(file.size)),
    ]
    for finding in file.findings:
        if finding.severity is Severity.INFO:
            continue
        where = " > ".join(finding.location.members)
        detail = " ".join(
            part
            for part in (
                finding.severity.value,
                finding.rule,
                finding.callable or "",
                f"in {where}" if where else "",
                "" if finding.location.offset is None else f"@{finding.location.offset}",
            )
            if part
        )
        props.append(Property(name="airlock:finding", value=detail))
    digest = _sha256(file.path)
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=digest)] if digest else []
    return Component(
        name=file.path,
        type=kind,
        bom_ref=f"file-{index}",
        hashes=hashes,
        properties=props,
        description=f"airlock verdict {file.verdict.value}",
    )


def to_bom(report: Report) -> Bom:
    bom = Bom()
    bom.metadata.tools.components.add(
        Component(name="airlock", type=ComponentType.APPLICATION, version=__version__, group="model-airlock")
    )
    bom.metadata.properties.add(Property(name="airlock:verdict", value=report.verdict.value))
    bom.metadata.properties.add(Property(name="airlock:exit-code", value=str(report.exit_code)))
    for root in report.all_roots:
        bom.metadata.properties.add(Property(name="airlock:root", value=root))
    if report.integrity:
        bom.metadata.properties.add(Property(name="airlock:integrity", value=report.integrity))
    for option in report.unsafe_options:
        bom.metadata.properties.add(Property(name="airlock:unsafe-option", value=option))
    for index, file in enumerate(report.files):
        bom.components.add(_component(index, file))
    for index, skipped in enumerate(report.skipped):
        bom.components.add(
            Component(
                name=skipped.path,
                type=ComponentType.FILE,
                bom_ref=f"skipped-{index}",
                properties=[
                    Property(name="airlock:verdict", value="SKIPPED"),
                    Property(name="airlock:reason", value=skipped.reason),
                ],
            )
        )
    return bom


def render(report: Report) -> str:
    text: str = JsonV1Dot6(to_bom(report)).output_as_string(indent=2)
    return text + "\n"
