"""Verification: check the trust source first (digest, lock file, signature), then hash the model with
the parameters it names and compare every file. Strict unless an ``unsafe_*`` option says otherwise.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from airlock.errors import IntegrityError, UsageError
from airlock.integrity._compare import Expected, ExpectedFile, compare, integrity_error
from airlock.integrity._digest import new_hasher
from airlock.integrity._keys import (
    certificate_public_key,
    check_signature,
    describe_certificate,
    key_hint,
    load_certificates,
    load_public_key,
    verify_chain,
)
from airlock.integrity._lock import parse_digest, read_bounded, read_lock
from airlock.integrity._manifest import FileEntry, Manifest, build_manifest
from airlock.integrity._oms import Bundle, pae, parse_bundle, parse_statement
from airlock.integrity._params import Algorithm, HashLimits, HashParams, Method
from airlock.integrity._walk import SINGLE_FILE_NAME, FileRef, Tree, is_excluded, walk

__all__ = ["TrustMode", "Verified", "verify"]

_log = logging.getLogger("airlock.integrity")
PathLike = str | os.PathLike[str]


class TrustMode(enum.Enum):
    """Where the known-good digests came from."""

    DIGEST = "digest"
    LOCK = "lock"
    KEY = "key"
    CERTIFICATE = "certificate"
    SIGSTORE = "sigstore"


@dataclass(frozen=True)
class Verified:
    """A model that matched its trust source: the manifest of exactly the bytes that were checked."""

    #: absolute path of the verified file or folder
    path: str
    manifest: Manifest
    mode: TrustMode
    #: the lock file, signature or digest that was trusted
    source: str
    #: who signed (key hint, certificate subject, Sigstore identity); None for digests and lock files
    signer: str | None
    #: unsafe options that were in force (empty when fully strict); renderers must show them
    unsafe: tuple[str, ...] = ()
    _files: tuple[FileRef, ...] = field(default=(), repr=False, compare=False)
    #: the paths ``--unsafe-ignore`` left out: the user's choice covers them and all under them
    _ignored: tuple[str, ...] = field(default=(), repr=False, compare=False)
    #: the signature inside the folder (its name, and ``_entry_id`` when it was read): left out
    #: of the comparison as that one regular file only, never as a folder or a link
    _signature: tuple[str, tuple[int, ...]] | None = field(default=None, repr=False, compare=False)
    #: ``_files`` and the manifest's entries by name, built once: ``open`` is called once per file
    #: of a verified scan, and a search of the lists each time made that scan quadratic
    _index: tuple[dict[str, FileRef], dict[str, FileEntry]] = field(
        init=False, default=({}, {}), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        refs = {ref.rel: ref for ref in self._files}
        entries = {entry.path: entry for entry in self.manifest.files}
        object.__setattr__(self, "_index", (refs, entries))

    def exempt(self, rel: str, path: str | os.PathLike[str]) -> bool:
        """True when ``rel`` (found at ``path``) is not in the manifest but verification accepted
        it on purpose: under a ``--unsafe-ignore`` path, or the signature file that was read
        itself (the same regular file: a folder, link or other file of that name, or any name
        under it, is not exempt). ``--unsafe-allow-extra`` is the caller's to check (``unsafe``)."""
        if is_excluded(rel, self._ignored):
            return True
        if self._signature is None or rel != self._signature[0]:
            return False
        now = _entry_id(os.fspath(path))
        return now is not None and stat.S_ISREG(now[2]) and now == self._signature[1]

    def open(self, rel: str) -> BinaryIO:
        """Open one verified file for reading: a private, sealed copy of bytes that were hashed again.

        Metadata cannot prove content: a write through a shared mapping to a page that is already
        dirty changes a file without touching its mtime or ctime. So the file is read once more,
        each byte hashed as it is copied into a sealed memfd (no write, grow or shrink possible,
        by anyone), and the copy is handed out only when every digest matches the manifest again.
        A file that is not the one that was hashed (device, inode, size, times) is refused first.
        The copy lives in memory (or swap) while the returned file is open.
        """
        refs, by_path = self._index
        ref = refs.get(rel)
        if ref is None:
            raise UsageError(f"{rel} is not a file of the verified manifest for {self.path}")
        entries = self.manifest.files
        entry = by_path.get(rel, entries[0] if len(entries) == 1 else None)
        if entry is None or entry.size != ref.size:
            raise UsageError(f"{rel} has no entry in the verified manifest for {self.path}")
        flags = (
            os.O_RDONLY
            | getattr(os, "O_CLOEXEC", 0)
            | (0 if ref.via_symlink else getattr(os, "O_NOFOLLOW", 0))
        )
        try:
            fd = os.open(ref.abspath, flags | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise IntegrityError(
                f"changed after verification: {rel} cannot be opened ({exc.strerror})"
            ) from exc
        try:
            st = os.fstat(fd)
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if not stat.S_ISREG(st.st_mode) or identity != (
                ref.dev,
                ref.ino,
                ref.size,
                ref.mtime_ns,
                ref.ctime_ns,
            ):
                raise IntegrityError(f"changed after verification: {rel} is not the file that was hashed")
            os.set_blocking(fd, True)
            copy = _verified_copy(fd, rel, entry, self.manifest.params.algorithm)
        finally:
            os.close(fd)
        return os.fdopen(copy, "rb")


_COPY_CHUNK = 4 * 1024 * 1024
_SEALS = ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")


def _verified_copy(fd: int, rel: str, entry: FileEntry, algorithm: Algorithm) -> int:
    """A sealed memfd holding ``entry.size`` bytes of ``fd``, each range hashed as it was copied and
    compared with the manifest; IntegrityError (and nothing handed out) on any difference."""
    import fcntl

    ranges = (
        [(s.start, s.end, s.digest) for s in entry.shards]
        if entry.digest is None
        else [(0, entry.size, entry.digest)]
    )
    name = "airlock-verified"
    out = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        for start, end, want in ranges:
            hasher = new_hasher(algorithm)
            offset = start
            while offset < end:
                data = os.pread(fd, min(_COPY_CHUNK, end - offset), offset)
                if not data:
                    raise IntegrityError(
                        f"changed after verification: {rel} is shorter than {entry.size} bytes"
                    )
                hasher.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view) :]
                offset += len(data)
            if hasher.hexdigest() != want:
                raise IntegrityError(
                    f"changed after verification: {rel} bytes {start}..{end} no longer have the verified digest"
                )
        seals = 0
        for seal in _SEALS:
            seals |= getattr(fcntl, seal)
        fcntl.fcntl(out, fcntl.F_ADD_SEALS, seals)
        os.lseek(out, 0, os.SEEK_SET)
    except BaseException:
        os.close(out)
        raise
    return out


def _single_file_view(expected: Expected, tree: Tree) -> Expected:
    """For a single file, use the entry named ``.`` or the file's own name (a folder lock may list it)."""
    for name in (SINGLE_FILE_NAME, tree.name):
        want = expected.files.get(name)
        if want is not None:
            renamed = ExpectedFile(SINGLE_FILE_NAME, want.size, want.digest, want.shards)
            return Expected(
                expected.algorithm, expected.method, expected.shard_size, {".": renamed}, expected.source
            )
    raise IntegrityError(
        f"integrity check failed for {tree.name} (1 problem):\n  missing: {tree.name} is not in {expected.source}"
    )


@dataclass(frozen=True)
class _Source:
    expected: Expected
    mode: TrustMode
    signer: str | None
    signature_path: str | None = None
    #: identity of the signature's own path just before it was read (``_entry_id``)
    signature_id: tuple[int, ...] | None = None


def _from_bundle(
    bundle: Bundle,
    raw: bytes,
    *,
    key: PathLike | None,
    certs: Sequence[PathLike],
    chain: Sequence[PathLike],
    trust_root: PathLike | None,
    identity: str | None,
    issuer: str | None,
    limits: HashLimits,
    source: str,
) -> tuple[Expected, TrustMode, str]:
    modes = [m for m, given in (("key", key), ("cert", certs), ("trust_root", trust_root)) if given]
    if len(modes) != 1:
        raise UsageError(
            f"a signature needs exactly one of a public key, a CA certificate or a trust root, got {modes or 'none'}"
        )
    # Every signer option given is a requirement: one the chosen method cannot check is refused,
    # never dropped (a --key with --identity used to verify whoever held the key).
    for option, value in (("identity", identity), ("issuer", issuer), ("chain", chain)):
        if value and modes[0] not in _OPTION_MODES[option][0]:
            raise UsageError(_OPTION_MODES[option][1])
    message = pae(bundle.payload_type, bundle.payload)
    if key is not None:
        public = load_public_key(key)
        hint = key_hint(public)
        if bundle.certificates:
            raise IntegrityError("signature check: the bundle carries certificates, but a bare key was given")
        if bundle.key_hint is not None and bundle.key_hint != hint:
            raise IntegrityError(
                f"signature check: key hint expected {hint} got {bundle.key_hint} (signed by another key)"
            )
        check_signature(public, bundle.signature, message, f"public key {os.fspath(key)}")
        mode, signer = TrustMode.KEY, f"public key sha256:{hint}"
    elif certs:
        if not bundle.certificates:
            raise IntegrityError(
                "signature check: the bundle has no certificate (it was signed with a bare key)"
            )
        if bundle.tlog_entries or _is_keyless(bundle.certificates[0]):
            # A Fulcio certificate names *who* signed in its SAN; a CA alone accepts anyone it
            # issued to. Keyless bundles are verified with their log entry, identity and issuer.
            raise UsageError(
                "this is a Sigstore keyless bundle: verify it with --trust-root, --identity and "
                "--issuer (a CA certificate alone would accept any identity it issued to)"
            )
        anchors = load_certificates(certs, "CA certificate")
        extra = load_certificates(chain, "certificate chain")
        leaf = verify_chain(bundle.certificates[0], bundle.certificates[1:], anchors, extra)
        check_signature(certificate_public_key(leaf), bundle.signature, message, describe_certificate(leaf))
        mode, signer = TrustMode.CERTIFICATE, describe_certificate(leaf)
    else:
        from airlock.integrity._sigstore import verify_sigstore_bundle

        assert trust_root is not None
        if not identity or not issuer:
            raise UsageError("Sigstore verification needs both the signer identity and its OIDC issuer")
        payload_type, payload, signer = verify_sigstore_bundle(
            raw, trust_root, identity=identity, issuer=issuer, limits=limits
        )
        if (payload_type, payload) != (bundle.payload_type, bundle.payload):
            raise IntegrityError("sigstore check: the verified payload is not the bundle's payload")
        mode = TrustMode.SIGSTORE
    return parse_statement(bundle.payload_type, bundle.payload, limits, source), mode, signer


_KEYLESS_ONLY = "--identity and --issuer apply to Sigstore keyless bundles (--trust-root)"
#: the trust methods (``_from_bundle``'s ``modes``) each signer option applies to, and the refusal
_OPTION_MODES: dict[str, tuple[frozenset[str], str]] = {
    "identity": (frozenset({"trust_root"}), _KEYLESS_ONLY),
    "issuer": (frozenset({"trust_root"}), _KEYLESS_ONLY),
    "chain": (frozenset({"cert"}), "--chain applies to the certificate method (--cert)"),
}

#: Fulcio's OIDC issuer extensions (v1 and v2): a certificate for a keyless signature
_FULCIO_ISSUER_OIDS = ("1.3.6.1.4.1.57264.1.1", "1.3.6.1.4.1.57264.1.8")


def _is_keyless(der: bytes) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return any(ext.oid.dotted_string in _FULCIO_ISSUER_OIDS for ext in cert.extensions)


def _load_source(
    root: str,
    *,
    expect: str | None,
    lock: PathLike | None,
    signature: PathLike | None,
    key: PathLike | None,
    certs: Sequence[PathLike],
    chain: Sequence[PathLike],
    trust_root: PathLike | None,
    identity: str | None,
    issuer: str | None,
    limits: HashLimits,
) -> _Source:
    given = [name for name, value in (("expect", expect), ("lock", lock), ("signature", signature)) if value]
    if len(given) != 1:
        raise UsageError(
            f"verify needs exactly one of an expected digest, a lock file or a signature, got {given or 'none'}"
        )
    if signature is None and (key or certs or chain or trust_root or identity or issuer):
        raise UsageError("keys, certificates, trust roots and identities only apply to --signature")
    if expect is not None:
        algorithm, hexdigest = parse_digest(expect, "expected digest")
        files = {SINGLE_FILE_NAME: ExpectedFile(SINGLE_FILE_NAME, None, hexdigest)}
        return _Source(
            Expected(algorithm, Method.FILES, None, files, f"digest {algorithm.value}:{hexdigest}"),
            TrustMode.DIGEST,
            None,
        )
    if lock is not None:
        return _Source(read_lock(lock, limits), TrustMode.LOCK, None)
    assert signature is not None
    sig_path = os.path.abspath(os.fspath(signature))
    source = f"signature {os.path.basename(sig_path)}"
    sig_id = _entry_id(sig_path)
    raw = read_bounded(sig_path, limits.max_document_bytes, "signature")
    bundle = parse_bundle(raw)
    expected, mode, signer = _from_bundle(
        bundle, raw, key=key, certs=certs, chain=chain, trust_root=trust_root,
        identity=identity, issuer=issuer, limits=limits, source=source,
    )  # fmt: skip
    return _Source(expected, mode, signer, sig_path, sig_id)


def _entry_id(path: str) -> tuple[int, ...] | None:
    """Identity of ``path`` itself (a link is not followed), or None when it cannot be seen: device
    and inode, and type, size and times too, since a freed inode number is reused at once."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def verify(
    path: PathLike,
    *,
    expect: str | None = None,
    lock: PathLike | None = None,
    signature: PathLike | None = None,
    key: PathLike | None = None,
    certs: Sequence[PathLike] = (),
    chain: Sequence[PathLike] = (),
    trust_root: PathLike | None = None,
    identity: str | None = None,
    issuer: str | None = None,
    unsafe_ignore: Sequence[str] = (),
    unsafe_allow_extra: bool = False,
    unsafe_allow_symlinks: bool = False,
    limits: HashLimits | None = None,
) -> Verified:
    """Verify ``path`` against exactly one trust source; return the manifest of the verified bytes.

    Raises ``IntegrityError`` listing every problem (``extra: x``, ``missing: y``, ``hash mismatch:
    z expected ... got ...``, ``symlink: s -> t``) when the model does not match, and ``UsageError`` /
    ``FormatError`` when the request or the trust source itself is unusable.
    """
    limits = limits or HashLimits()
    root = os.path.abspath(os.fspath(path))
    src = _load_source(
        root, expect=expect, lock=lock, signature=signature, key=key, certs=certs, chain=chain,
        trust_root=trust_root, identity=identity, issuer=issuer, limits=limits,
    )  # fmt: skip
    unsafe: list[str] = []
    if unsafe_ignore:
        unsafe.append("unsafe-ignore: " + ", ".join(unsafe_ignore))
    if unsafe_allow_extra:
        unsafe.append("unsafe-allow-extra")
    if unsafe_allow_symlinks:
        unsafe.append("unsafe-allow-symlinks")
    for option in unsafe:
        _log.warning("integrity check weakened by %s", option)
    excluded = list(unsafe_ignore)
    sig_rel: str | None = None
    if src.signature_path is not None:
        rel = os.path.relpath(src.signature_path, root)
        if rel == ".":
            raise UsageError("the signature file cannot be the model it signs")
        if not rel.startswith(".." + os.sep) and rel != "..":
            excluded.append(rel.replace(os.sep, "/"))  # the signature never signs itself
            sig_rel = rel.replace(os.sep, "/")
    exp = src.expected
    params = HashParams(exp.algorithm, exp.method, exp.shard_size, unsafe_allow_symlinks, tuple(excluded))
    tree = walk(root, params, limits)
    if tree.is_single_file and exp.files.keys() != {SINGLE_FILE_NAME}:
        exp = _single_file_view(exp, tree)
    elif not tree.is_single_file and src.mode is TrustMode.DIGEST:
        raise UsageError(
            f"an expected digest checks one file, but {os.fspath(path)} is a folder (use a lock file)"
        )
    manifest = build_manifest(tree, params, limits)
    problems = [*tree.problems, *compare(exp, manifest, allow_extra=unsafe_allow_extra)]
    if sig_rel is not None and src.signature_path is not None:
        # The walk left the signature's *name* out (a file, and anything under it were it a
        # folder): that name must still be the one regular file that was read, else whatever
        # now holds it went unchecked.
        now = _entry_id(src.signature_path)
        if now is None or now != src.signature_id:
            problems.append(
                f"signature changed: {sig_rel} is not the file that was read (checked nothing in its place)"
            )
    if problems:
        raise integrity_error(tree.name, problems)
    sig_exempt = (sig_rel, src.signature_id) if sig_rel is not None and src.signature_id is not None else None
    return Verified(
        root, manifest, src.mode, exp.source, src.signer, tuple(unsafe), tree.files, tuple(unsafe_ignore),
        sig_exempt,
    )  # fmt: skip
