"""``hash`` and ``sign``: make a manifest of a model, and sign it in the OMS format."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

from airlock import _progress
from airlock.errors import UsageError
from airlock.integrity._compare import integrity_error
from airlock.integrity._keys import load_certificates, load_private_key
from airlock.integrity._manifest import Manifest, build_manifest
from airlock.integrity._oms import PAYLOAD_TYPE, pae, render_bundle, statement_bytes
from airlock.integrity._params import Algorithm, HashLimits, HashParams, Method
from airlock.integrity._walk import walk

__all__ = ["hash", "sign"]

PathLike = str | os.PathLike[str]


def _params(
    algorithm: Algorithm | str, shard_size: int | None, allow_symlinks: bool, exclude: Sequence[str]
) -> HashParams:
    algo = algorithm if isinstance(algorithm, Algorithm) else Algorithm.parse(algorithm)
    method = Method.FILES if shard_size is None else Method.SHARDS
    cleaned = tuple(sorted({p.strip("/") for p in exclude}))
    return HashParams(algo, method, shard_size, allow_symlinks, cleaned)


def hash(
    path: PathLike,
    *,
    algorithm: Algorithm | str = Algorithm.SHA256,
    shard_size: int | None = None,
    allow_symlinks: bool = False,
    exclude: Sequence[str] = (),
    limits: HashLimits | None = None,
) -> Manifest:
    """Manifest of every regular file under ``path`` (or of ``path`` itself when it is a file).

    Symbolic links (unless ``allow_symlinks``) and special files raise an itemised ``IntegrityError``.
    With ``shard_size`` each file is hashed in slices of that many bytes, in parallel.
    """
    params = _params(algorithm, shard_size, allow_symlinks, exclude)
    limits = limits or HashLimits()
    tree = walk(path, params, limits)
    if tree.problems:
        raise integrity_error(tree.name, tree.problems)
    with _progress.task("hashing", sum(f.size for f in tree.files), len(tree.files)):
        return build_manifest(tree, params, limits)


def sign(
    path: PathLike,
    *,
    key: PathLike,
    output: PathLike,
    certificate: PathLike | None = None,
    chain: Sequence[PathLike] = (),
    password: bytes | None = None,
    algorithm: Algorithm | str = Algorithm.SHA256,
    shard_size: int | None = None,
    allow_symlinks: bool = False,
    exclude: Sequence[str] = (),
    limits: HashLimits | None = None,
) -> Manifest:
    """Sign ``path`` with an EC private key; write an OMS Sigstore bundle to ``output``.

    With ``certificate`` (and optional ``chain``) the bundle carries the certificate chain (the OMS
    certificate method); otherwise it carries the key's hint (the OMS key method). The signature file
    is left out of the manifest when it lies inside the signed folder.
    """
    signing_key = load_private_key(key, password)
    certs: list[bytes] = []
    if certificate is not None:
        leaf, *_ = load_certificates([certificate], "signing certificate")
        if leaf.public_key() != signing_key.key.public_key():
            raise UsageError(f"signing certificate {os.fspath(certificate)} does not match the private key")
        from cryptography.hazmat.primitives.serialization import Encoding

        certs = [c.public_bytes(Encoding.DER) for c in [leaf, *load_certificates(chain, "certificate chain")]]
    elif chain:
        raise UsageError("a certificate chain needs a signing certificate")
    algo = Algorithm.parse(algorithm) if isinstance(algorithm, str) else algorithm
    if algo is Algorithm.BLAKE3 and shard_size is not None:
        # model-signing 1.1.1 has no blake3 shards (it hashes whole files instead), so it could
        # never verify such a signature
        raise UsageError(
            "blake3 signatures cannot be sharded (model-signing hashes blake3 by whole file); "
            "drop --shard-size or use sha256 / blake2b"
        )
    root = os.path.abspath(os.fspath(path))
    out = os.path.abspath(os.fspath(output))
    rel = os.path.relpath(out, root)
    if rel == ".":
        raise UsageError("the signature cannot overwrite the model it signs")
    inside = not (rel == ".." or rel.startswith(".." + os.sep))
    manifest = hash(
        root, algorithm=algorithm, shard_size=shard_size, allow_symlinks=allow_symlinks,
        exclude=[*exclude, rel.replace(os.sep, "/")] if inside else exclude, limits=limits,
    )  # fmt: skip
    if manifest.params.method is Method.SHARDS:
        empty = [f.path for f in manifest.files if f.size == 0]
        if empty:
            raise UsageError(
                f"OMS shard lists cannot hold empty files ({', '.join(empty[:5])}); sign without shards"
            )
    payload = statement_bytes(manifest)
    signature = signing_key.sign(pae(PAYLOAD_TYPE, payload))
    from airlock.integrity._keys import key_hint

    text = render_bundle(
        payload, signature, key_hint=key_hint(signing_key.key.public_key()), certificates=certs
    )
    directory = os.path.dirname(out) or "."
    fd, tmp = tempfile.mkstemp(prefix=".airlock-sig-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return manifest
