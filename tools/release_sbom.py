"""CycloneDX SBOM of an airlock release (docs/release.md): the built artifacts and what they pull in.

The BOM's subject is model-airlock at the release version; its components are the wheel and the
sdist (SHA-256 of the files in DIST) and the exact third-party distributions of the tested set
(requirements/dev.lock, with every hash the lock pins), each with its package URL. Written with
cyclonedx-python-lib and validated with the library's own JSON validator before it is saved.

Usage: python tools/release_sbom.py DIST requirements/dev.lock OUT.cdx.json
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def locked(lock: Path) -> list[tuple[str, str, list[str]]]:
    """(name, version, sha256 hashes) for every pinned line of a pip-compile lock."""
    entries: list[tuple[str, str, list[str]]] = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        pin = _PIN.match(line)
        if pin:
            entries.append((pin.group(1).lower(), pin.group(2), []))
        elif entries and (digest := _HASH.search(line)):
            entries[-1][2].append(digest.group(1))
    return entries


def sbom(dist: Path, lock: Path) -> str:
    artifacts = sorted(dist.glob("model_airlock-*"))
    if not artifacts:
        raise SystemExit(f"no model_airlock-* artifacts in {dist}")
    version = artifacts[0].name.split("-")[1].removesuffix(".tar.gz")
    bom = Bom()
    root = bom.metadata.component = Component(
        name="model-airlock",
        version=version,
        type=ComponentType.APPLICATION,
        purl=PackageURL("pypi", None, "model-airlock", version),
        bom_ref="model-airlock",
    )
    for artifact in artifacts:
        bom.components.add(
            Component(
                name=artifact.name,
                type=ComponentType.FILE,
                bom_ref=f"artifact:{artifact.name}",
                hashes=[
                    HashType(
                        alg=HashAlgorithm.SHA_256, content=hashlib.sha256(artifact.read_bytes()).hexdigest()
                    )
                ],
                properties=[Property(name="airlock:role", value="release artifact")],
            )
        )
    for name, pinned, hashes in locked(lock):
        bom.components.add(
            Component(
                name=name,
                version=pinned,
                type=ComponentType.LIBRARY,
                bom_ref=f"pypi:{name}@{pinned}",
                purl=PackageURL("pypi", None, name, pinned),
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=h) for h in hashes],
                properties=[Property(name="airlock:role", value="tested dependency (requirements/dev.lock)")],
            )
        )
    bom.register_dependency(root, list(bom.components))
    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors is not None:
        raise SystemExit(f"the SBOM does not validate: {errors}")
    return text + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    Path(sys.argv[3]).write_text(sbom(Path(sys.argv[1]), Path(sys.argv[2])), encoding="utf-8")
