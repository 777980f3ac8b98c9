"""The OMS (OpenSSF Model Signing v1.0) signature format: in-toto statement in a DSSE envelope in a
Sigstore bundle. Written from the spec and from reading model-signing 1.1.1's output; no code shared.

Reading is strict where it matters (types, digests, root digest, duplicate names) and tolerant of the
quirks model-signing 1.1.1 is known to write: ``shard_size`` as a float, ``blake2`` for ``blake2b``,
shard resources whose algorithm reads ``sha256-sharded-<size>``, ``keyid`` absent/empty/null.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from airlock.errors import FormatError, LimitError, UsageError
from airlock.integrity._compare import Expected, ExpectedFile
from airlock.integrity._lock import check_rel_path, load_json_document, parse_digest
from airlock.integrity._manifest import Manifest, ShardDigest
from airlock.integrity._params import Algorithm, HashLimits, Method, check_shard_size

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "MAX_BUNDLE_VALUES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "Bundle",
    "pae",
    "parse_bundle",
    "parse_statement",
    "render_bundle",
    "statement_bytes",
]

BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
_ACCEPTED_MEDIA_TYPES: Final = frozenset(
    {
        BUNDLE_MEDIA_TYPE,
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
    }
)
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://model_signing/signature/v1.0"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement_bytes(manifest: Manifest) -> bytes:
    """The in-toto statement for ``manifest`` (compact JSON, sorted keys, deterministic)."""
    params = manifest.params
    serialization: dict[str, Any] = {
        "method": params.method.value,
        "hash_type": params.algorithm.value,
        "allow_symlinks": params.allow_symlinks,
    }
    if params.shard_size is not None:
        serialization["shard_size"] = params.shard_size
    if params.excluded:
        serialization["ignore_paths"] = list(params.excluded)
    # model-signing labels shard digests "<hash>-sharded-<size>" and compares labels when it verifies
    label = params.algorithm.value
    if params.shard_size is not None:
        label = f"{label}-sharded-{params.shard_size}"
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": manifest.name, "digest": {"sha256": manifest.root_digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": serialization,
            "resources": [
                {"name": r.name, "algorithm": label, "digest": r.digest} for r in manifest.resources()
            ],
        },
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Bundle:
    """The parts of a Sigstore bundle that OMS verification needs (nothing checked yet but shape)."""

    payload_type: str
    payload: bytes
    signature: bytes
    #: ``publicKey.hint`` (key method), or None
    key_hint: str | None
    #: DER certificates, signing certificate first (certificate methods); empty for key method
    certificates: tuple[bytes, ...]
    #: raw transparency-log entries (Sigstore keyless); checked by the sigstore verifier
    tlog_entries: tuple[dict[str, Any], ...]


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"signature bundle: {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"signature bundle: {what} is not valid base64: {exc}") from exc


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"signature bundle: {what} must be an object, got {type(value).__name__}")
    return value


#: JSON values a signature bundle may hold, bounded *before* it is parsed. The bundle is read before
#: anything in it is authenticated, and a parsed JSON value costs 20-60 bytes of memory per byte of
#: ``[],``: a 64 MiB bundle of empty arrays took 1.7 GB and 16 s to parse. A real bundle's bulk is in
#: a few strings (payload, certificates); its structure is one envelope with one signature, a short
#: certificate chain and a few log entries (each with an inclusion proof of at most 64 hashes):
#: model-signing's and airlock's hold 14 values, a Rekor-logged Sigstore bundle under 100.
MAX_BUNDLE_VALUES: Final = 10_000


def _check_structure(data: bytes) -> None:
    """LimitError when ``data`` may hold more than ``MAX_BUNDLE_VALUES`` JSON values.

    Every value after a container's first is preceded by a comma, and every container opens with
    a bracket, outside strings; counting them everywhere (strings included) over-counts, so
    ``1 + commas + brackets`` bounds the values (and object keys) parsing can make. Linear, no
    allocation.
    """
    bound = 1 + data.count(b",") + data.count(b"[") + data.count(b"{")
    if bound > MAX_BUNDLE_VALUES:
        raise LimitError(
            f"signature bundle: up to {bound} JSON values (commas and brackets), more than the "
            f"{MAX_BUNDLE_VALUES} a bundle holds; refused before parsing"
        )


def parse_bundle(data: bytes) -> Bundle:
    """Parse a bundle's JSON; signatures are checked later by the verifier for its trust mode."""
    _check_structure(data)
    doc = _obj(load_json_document(data, "signature bundle"), "the document")
    media = doc.get("mediaType")
    if media not in _ACCEPTED_MEDIA_TYPES:
        raise FormatError(f"signature bundle: media type expected {BUNDLE_MEDIA_TYPE!r}, got {media!r}")
    envelope = _obj(doc.get("dsseEnvelope"), "dsseEnvelope (OMS signatures are DSSE envelopes)")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1:
        count = len(signatures) if isinstance(signatures, list) else signatures
        raise FormatError(f"signature bundle: expected exactly 1 DSSE signature, got {count!r}")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        raise FormatError("signature bundle: dsseEnvelope.payloadType must be a string")
    material = _obj(doc.get("verificationMaterial"), "verificationMaterial")
    hint: str | None = None
    certs: list[bytes] = []
    if "publicKey" in material:
        raw_hint = _obj(material["publicKey"], "publicKey").get("hint")
        if raw_hint is not None and not isinstance(raw_hint, str):
            raise FormatError("signature bundle: publicKey.hint must be a string")
        hint = raw_hint or None
    elif "x509CertificateChain" in material:
        chain = _obj(material["x509CertificateChain"], "x509CertificateChain").get("certificates")
        if not isinstance(chain, list) or not chain:
            raise FormatError("signature bundle: x509CertificateChain.certificates must be a non-empty list")
        certs = [_b64(_obj(c, "certificate").get("rawBytes"), "certificate rawBytes") for c in chain]
    elif "certificate" in material:
        certs = [_b64(_obj(material["certificate"], "certificate").get("rawBytes"), "certificate rawBytes")]
    else:
        raise FormatError("signature bundle: verificationMaterial has no publicKey, certificate or chain")
    tlog = material.get("tlogEntries", [])
    if tlog is None:
        tlog = []
    if not isinstance(tlog, list) or not all(isinstance(e, dict) for e in tlog):
        raise FormatError("signature bundle: tlogEntries must be a list of objects")
    return Bundle(
        payload_type=payload_type,
        payload=_b64(envelope.get("payload"), "dsseEnvelope.payload"),
        signature=_b64(_obj(signatures[0], "signature").get("sig"), "signature sig"),
        key_hint=hint,
        certificates=tuple(certs),
        tlog_entries=tuple(tlog),
    )


def render_bundle(
    payload: bytes, signature: bytes, *, key_hint: str | None, certificates: list[bytes]
) -> str:
    """A v0.3 bundle for the key method (``key_hint``) or the certificate method (``certificates``)."""
    material: dict[str, Any]
    if certificates:
        chain = [{"rawBytes": base64.b64encode(der).decode("ascii")} for der in certificates]
        material = {"x509CertificateChain": {"certificates": chain}, "tlogEntries": []}
    else:
        material = {"publicKey": {"hint": key_hint}, "tlogEntries": []}
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }
    return json.dumps(bundle, indent=2) + "\n"


def _shard_size(value: object) -> int:
    # model-signing 1.1.1 writes the shard size through a protobuf Struct, i.e. as a float.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise FormatError(f"statement: serialization.shard_size must be a positive integer, got {value!r}")
    return value


def parse_statement(payload_type: str, payload: bytes, limits: HashLimits, source: str) -> Expected:
    """Turn a *verified* DSSE payload into the digests the model must have. Checks the root digest."""
    if payload_type != PAYLOAD_TYPE:
        raise FormatError(f"statement: payload type expected {PAYLOAD_TYPE!r}, got {payload_type!r}")
    doc = _obj(load_json_document(payload, "statement"), "statement")
    if doc.get("_type") != STATEMENT_TYPE:
        raise FormatError(f"statement: _type expected {STATEMENT_TYPE!r}, got {doc.get('_type')!r}")
    if doc.get("predicateType") != PREDICATE_TYPE:
        raise FormatError(
            f"statement: predicateType expected {PREDICATE_TYPE!r}, got {doc.get('predicateType')!r}"
        )
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise FormatError("statement: expected exactly one subject")
    _, root_digest = parse_digest(
        "sha256:" + str(_obj(_obj(subjects[0], "subject").get("digest"), "digest").get("sha256")),
        "statement subject",
    )
    predicate = _obj(doc.get("predicate"), "predicate")
    ser = _obj(predicate.get("serialization"), "predicate.serialization")
    try:
        algorithm = Algorithm.parse(str(ser.get("hash_type")))
        method = Method(ser.get("method"))
    except (UsageError, ValueError) as exc:
        raise FormatError(f"statement: unsupported serialization: {exc}") from exc
    shard_size = _shard_size(ser.get("shard_size")) if method is Method.SHARDS else None
    if shard_size is not None:
        check_shard_size(shard_size, limits, "statement")
    ignore = ser.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise FormatError("statement: serialization.ignore_paths must be a list of strings")
    resources = predicate.get("resources")
    if not isinstance(resources, list):
        raise FormatError("statement: predicate.resources must be a list")
    if len(resources) > limits.max_resources:
        raise LimitError(f"statement: {len(resources)} resources exceed the limit of {limits.max_resources}")
    accepted = {algorithm.value, "blake2" if algorithm is Algorithm.BLAKE2B else algorithm.value}
    if shard_size is not None:
        accepted.add(f"{algorithm.value}-sharded-{shard_size}")
    hasher = hashlib.sha256()
    names: set[str] = set()
    files: dict[str, ExpectedFile] = {}
    shards: dict[str, list[ShardDigest]] = {}
    starts: dict[tuple[str, int], str] = {}
    for raw in resources:
        res = _obj(raw, "resource")
        name, algo = res.get("name"), res.get("algorithm")
        if not isinstance(name, str) or name in names:
            raise FormatError(f"statement: resource name {name!r} is missing or listed twice")
        names.add(name)
        if algo not in accepted:
            raise FormatError(
                f"statement: resource {name} algorithm expected {algorithm.value!r}, got {algo!r}"
            )
        _, hexdigest = parse_digest(res.get("digest"), f"statement resource {name}", default=algorithm)
        hasher.update(bytes.fromhex(hexdigest))
        if method is Method.FILES:
            path = check_rel_path(name, "statement")
            files[path] = ExpectedFile(path, None, hexdigest)
            continue
        path, start, end = _split_shard(name, shard_size)
        path = check_rel_path(path, "statement")
        if (path, start) in starts:
            raise FormatError(
                f"statement: shard {path}:{start} is listed twice ({starts[path, start]!r}, {name!r})"
            )
        starts[path, start] = name
        shards.setdefault(path, []).append(ShardDigest(start, end, hexdigest))
    if hasher.hexdigest() != root_digest:
        raise FormatError(
            f"statement: root digest expected sha256:{root_digest} got sha256:{hasher.hexdigest()} "
            "(the resources do not add up to the signed subject)"
        )
    for path, parts in shards.items():
        files[path] = ExpectedFile(path, None, None, tuple(sorted(parts, key=lambda s: s.start)))
    return Expected(algorithm, method, shard_size, files, source, excluded_by_source=tuple(ignore))


#: a shard offset as model-signing writes it: ASCII digits, no sign, no leading zero (so one shard
#: has exactly one name; ``str.isdigit`` would also take ``00`` and Arabic-Indic digits)
_OFFSET: Final = re.compile(r"0|[1-9][0-9]{0,18}")


def _split_shard(name: str, shard_size: int | None) -> tuple[str, int, int]:
    path, sep1, rest = name.rpartition(":")
    path, sep2, start_text = path.rpartition(":")
    if not (sep1 and sep2 and _OFFSET.fullmatch(start_text) and _OFFSET.fullmatch(rest)):
        raise FormatError(
            f"statement: shard resource {name!r} is not 'path:start:end' with decimal offsets "
            "(ASCII digits, no leading zeros)"
        )
    start, end = int(start_text), int(rest)
    assert shard_size is not None
    if end <= start or end - start > shard_size or start % shard_size:
        raise FormatError(f"statement: shard {name!r} does not fit shard size {shard_size}")
    return path, start, end
