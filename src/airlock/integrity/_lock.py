"""Lock files: known-good digests per file, read strictly (docs/integrity.md has the formats).

Three forms are accepted, told apart by content:

* JSON ``{"format": "airlock.lock/v1", "files": {"path": "sha256:HEX" | {"digest": "sha256:HEX",
  "size": N}}}`` — the form to write by hand from a hub's published sha256 values;
* an ``airlock hash --format json`` manifest (``airlock.manifest/v1``), files or shards;
* ``sha256sum``-style text, ``HEX  path`` per line (what ``airlock hash`` prints; ``b2sum`` lines with
  128 hex digits mean blake2b).

Every path must be canonical (relative, ``/``-separated, no ``.``/``..``/empty parts), appear once,
and every digest must use the same algorithm; anything else is a ``FormatError``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any, Final

from airlock._strictjson import parse_json_strict
from airlock.errors import FormatError, LimitError, UsageError
from airlock.integrity._compare import Expected, ExpectedFile
from airlock.integrity._manifest import MANIFEST_FORMAT, Manifest, ShardDigest
from airlock.integrity._params import Algorithm, HashLimits, Method, check_shard_size

__all__ = [
    "LOCK_FORMAT",
    "check_rel_path",
    "load_json_document",
    "parse_digest",
    "read_bounded",
    "read_lock",
    "render_lock",
]

LOCK_FORMAT: Final = "airlock.lock/v1"
_HEX = re.compile(r"[0-9a-fA-F]+")
_TEXT_LINE = re.compile(r"(\\?)([0-9a-fA-F]+) [ *](.+)")


#: opening never waits: a FIFO opened for reading without O_NONBLOCK blocks until a writer comes
_OPEN_DOCUMENT: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"


def read_bounded(path: str | os.PathLike[str], limit: int, what: str, *, pipe: bool = False) -> bytes:
    """Read a small document whole, refusing anything larger than ``limit`` before reading it.

    Only a regular file is read (an allowlist): a signature may sit inside the untrusted model
    folder, and a FIFO at its name blocked verification forever, a device fed it without end.
    ``pipe``: the caller's own trust material (a key, certificate or trusted root, never taken
    from the model), which may also come through a pipe (``--key <(vault read ...)``); opened
    without waiting for a writer, a FIFO that nobody writes reads as empty at once (outside
    review 28). Devices, sockets and folders are refused for every document.
    """
    try:
        fd = os.open(path, _OPEN_DOCUMENT)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {os.fspath(path)}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or (pipe and stat.S_ISFIFO(st.st_mode))):
            allowed = "a regular file or pipe" if pipe else "a regular file"
            raise UsageError(
                f"cannot read {what} {os.fspath(path)}: it is {_kind(st.st_mode)}, not {allowed}"
            )
        if st.st_size > limit:
            raise LimitError(f"{what} size limit: {os.fspath(path)} is {st.st_size} bytes, limit {limit}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {os.fspath(path)}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise LimitError(f"{what} size limit: {os.fspath(path)} grew past {limit} bytes while read")
    return data


def load_json_document(data: bytes, what: str) -> Any:
    """Parse JSON strictly: UTF-8, no duplicate keys, no NaN, bounded nesting (a FormatError, never a crash)."""
    return parse_json_strict(data, what)


def check_rel_path(path: object, what: str) -> str:
    """A canonical relative POSIX path (or ``.`` for a single-file model), else a FormatError."""
    if not isinstance(path, str) or not path:
        raise FormatError(f"{what}: path must be a non-empty string, got {path!r}")
    if path == ".":
        return path
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        raise FormatError(f"{what}: path {path!r} is not a canonical relative POSIX path")
    return path


def parse_digest(value: object, what: str, default: Algorithm | None = None) -> tuple[Algorithm, str]:
    """``ALG:HEX`` (or bare HEX when ``default`` is given) -> (algorithm, lowercase hex), length-checked.

    ``default`` is the algorithm a document declares for its digests: a prefix must then name it."""
    if not isinstance(value, str):
        raise FormatError(f"{what}: digest must be a string like sha256:HEX, got {value!r}")
    name, sep, hexdigest = value.partition(":")
    if not sep:
        if default is None:
            raise FormatError(f"{what}: digest {value[:80]!r} has no algorithm prefix (expected sha256:HEX)")
        name, hexdigest = default.value, value
    try:
        algorithm = Algorithm.parse(name)
    except UsageError as exc:
        raise FormatError(f"{what}: {exc}") from exc
    if default is not None and algorithm is not default:
        # ``default`` is the algorithm the document declares for all its digests: a digest whose
        # own prefix names another one would be compared as a digest of the declared algorithm
        raise FormatError(
            f"{what}: digest is labelled {algorithm.value}, but the document declares {default.value}"
        )
    if not _HEX.fullmatch(hexdigest) or len(hexdigest) != 2 * algorithm.digest_size:
        raise FormatError(
            f"{what}: {algorithm.value} digest must be {2 * algorithm.digest_size} hex digits, "
            f"got {hexdigest[:80]!r} ({len(hexdigest)} characters)"
        )
    return algorithm, hexdigest.lower()


def _size(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"{what}: size must be a non-negative integer, got {value!r}")
    return value


def _one_algorithm(seen: set[Algorithm], source: str) -> Algorithm:
    if len(seen) > 1:
        names = ", ".join(sorted(a.value for a in seen))
        raise FormatError(f"{source}: every digest must use one algorithm, found {names}")
    return next(iter(seen)) if seen else Algorithm.SHA256


def _from_lock_json(doc: dict[str, Any], source: str, limits: HashLimits) -> Expected:
    files = doc.get("files")
    if not isinstance(files, dict):
        raise FormatError(f"{source}: 'files' must be an object mapping paths to digests")
    if len(files) > limits.max_resources:
        raise LimitError(f"{source}: {len(files)} entries exceed the limit of {limits.max_resources}")
    seen: set[Algorithm] = set()
    out: dict[str, ExpectedFile] = {}
    for raw_path, value in files.items():
        path = check_rel_path(raw_path, source)
        where = f"{source}, {path}"
        size = None
        digest = value
        if isinstance(value, dict):
            unknown = set(value) - {"digest", "size"}
            if unknown:
                raise FormatError(f"{where}: unknown keys {sorted(unknown)} (expected digest, size)")
            size = _size(value.get("size"), where)
            digest = value.get("digest")
        algorithm, hexdigest = parse_digest(digest, where)
        seen.add(algorithm)
        out[path] = ExpectedFile(path, size, hexdigest)
    return Expected(_one_algorithm(seen, source), Method.FILES, None, out, source)


def _from_manifest_json(doc: dict[str, Any], source: str, limits: HashLimits) -> Expected:
    params = doc.get("parameters")
    files = doc.get("files")
    if not isinstance(params, dict) or not isinstance(files, list):
        raise FormatError(f"{source}: a manifest needs 'parameters' (object) and 'files' (list)")
    if len(files) > limits.max_resources:
        raise LimitError(f"{source}: {len(files)} entries exceed the limit of {limits.max_resources}")
    try:
        algorithm = Algorithm.parse(str(params.get("algorithm")))
        method = Method(params.get("method"))
    except (UsageError, ValueError) as exc:
        raise FormatError(f"{source}: bad parameters: {exc}") from exc
    shard_size = _size(params.get("shard_size"), source) if method is Method.SHARDS else None
    if method is Method.SHARDS:
        if shard_size is None:
            raise FormatError(f"{source}: method shards needs a shard_size")
        check_shard_size(shard_size, limits, source)
    total_shards = 0
    out: dict[str, ExpectedFile] = {}
    for item in files:
        if not isinstance(item, dict):
            raise FormatError(f"{source}: each file must be an object, got {item!r}")
        path = check_rel_path(item.get("path"), source)
        where = f"{source}, {path}"
        if path in out:
            raise FormatError(f"{where}: listed twice")
        size = _size(item.get("size"), where)
        if method is Method.FILES:
            _, hexdigest = parse_digest(item.get("digest"), where, default=algorithm)
            out[path] = ExpectedFile(path, size, hexdigest)
            continue
        shards = item.get("shards")
        if not isinstance(shards, list):
            raise FormatError(f"{where}: 'shards' must be a list")
        total_shards += len(shards)
        if total_shards > limits.max_resources:
            raise LimitError(f"{source}: more than {limits.max_resources} shards (limit max_resources)")
        parsed = []
        for shard in shards:
            if not isinstance(shard, dict):
                raise FormatError(f"{where}: each shard must be an object")
            start, end = _size(shard.get("start"), where), _size(shard.get("end"), where)
            if start is None or end is None or end < start:
                raise FormatError(f"{where}: shard bounds {start!r}..{end!r} are invalid")
            _, hexdigest = parse_digest(shard.get("digest"), where, default=algorithm)
            parsed.append(ShardDigest(start, end, hexdigest))
        if len({p.start for p in parsed}) != len(parsed):
            raise FormatError(f"{where}: a shard is listed twice")
        out[path] = ExpectedFile(path, size, None, tuple(parsed))
    return Expected(algorithm, method, shard_size, out, source)


def _from_text(text: str, source: str, limits: HashLimits) -> Expected:
    out: dict[str, ExpectedFile] = {}
    seen: set[Algorithm] = set()
    # Lines end at "\n" only, as coreutils reads them (and as Manifest.to_text escapes names):
    # str.splitlines() also breaks at \v, \f, \x1c-\x1e, \x85, U+2028 and U+2029, which may sit
    # unescaped inside a file name and would turn the rest of that name into a line of its own.
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        match = _TEXT_LINE.fullmatch(line)
        if match is None:
            raise FormatError(f"{source}, line {number}: expected 'HEX  path', got {line[:80]!r}")
        escaped, hexdigest, path = match.groups()
        if escaped:
            path = (
                path.replace("\\\\", "\x00").replace("\\n", "\n").replace("\\r", "\r").replace("\x00", "\\")
            )
        path = check_rel_path(path.removeprefix("./"), f"{source}, line {number}")
        by_length = {2 * a.digest_size: a for a in (Algorithm.SHA256, Algorithm.BLAKE2B)}
        algorithm = by_length.get(len(hexdigest))
        if algorithm is None:
            raise FormatError(
                f"{source}, line {number}: digest of {len(hexdigest)} hex digits is not sha256 or blake2b"
            )
        if path in out:
            raise FormatError(f"{source}, line {number}: {path} listed twice")
        if len(out) >= limits.max_resources:
            raise LimitError(f"{source}: more than {limits.max_resources} entries")
        seen.add(algorithm)
        out[path] = ExpectedFile(path, None, hexdigest.lower())
    if not out:
        raise FormatError(f"{source}: no entries")
    return Expected(_one_algorithm(seen, source), Method.FILES, None, out, source)


def read_lock(path: str | os.PathLike[str], limits: HashLimits) -> Expected:
    """Read a lock file in any accepted form (see the module docstring)."""
    source = f"lock file {os.path.basename(os.fspath(path))}"
    data = read_bounded(path, limits.max_document_bytes, "lock file")
    if data.lstrip()[:1] != b"{":
        try:
            return _from_text(data.decode("utf-8"), source, limits)
        except UnicodeDecodeError as exc:
            raise FormatError(f"{source} is not UTF-8 text: {exc}") from exc
    doc = load_json_document(data, source)
    if not isinstance(doc, dict):
        raise FormatError(f"{source}: expected a JSON object")
    fmt = doc.get("format")
    if fmt == LOCK_FORMAT:
        return _from_lock_json(doc, source, limits)
    if fmt == MANIFEST_FORMAT:
        return _from_manifest_json(doc, source, limits)
    raise FormatError(f"{source}: format expected {LOCK_FORMAT!r} or {MANIFEST_FORMAT!r}, got {fmt!r}")


def render_lock(manifest: Manifest) -> str:
    """The ``airlock.lock/v1`` JSON of a whole-file manifest (sizes included)."""
    if manifest.params.method is not Method.FILES:
        raise UsageError("a lock file holds whole-file digests; hash without shards to write one")
    algo = manifest.params.algorithm.value
    # A single file's entry is named "." in manifests; a lock names it after the file, as people expect.
    files = {
        (manifest.name if e.path == "." else e.path): {"digest": f"{algo}:{e.digest}", "size": e.size}
        for e in manifest.files
    }
    return json.dumps({"format": LOCK_FORMAT, "files": files}, indent=2, ensure_ascii=False) + "\n"
