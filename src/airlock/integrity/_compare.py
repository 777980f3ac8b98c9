"""Compare what a model should hold (from a lock file or signature) with what it holds, item by item.

Strict: a file listed but absent is ``missing``, a file present but not listed is ``extra``, a
different digest is ``hash mismatch``. Every problem is one line naming the check and the file, with
expected-vs-got values; the caller raises one ``IntegrityError`` that lists them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from airlock.errors import IntegrityError
from airlock.integrity._manifest import FileEntry, Manifest, ShardDigest
from airlock.integrity._params import Algorithm, Method
from airlock.integrity._walk import is_excluded

__all__ = ["Expected", "ExpectedFile", "ItemisedIntegrityError", "compare", "integrity_error"]

#: problems listed in one message; the rest are counted
_MAX_LISTED = 200


@dataclass(frozen=True)
class ExpectedFile:
    """What one file should be: a whole-file digest, or shard digests; a size when the source has one."""

    path: str
    size: int | None
    digest: str | None
    shards: tuple[ShardDigest, ...] = ()


@dataclass(frozen=True)
class Expected:
    """Known-good digests of a whole model, all made with one algorithm and method."""

    algorithm: Algorithm
    method: Method
    shard_size: int | None
    files: Mapping[str, ExpectedFile]
    #: where the values came from, for messages ("lock file x.lock", "signature model.sig")
    source: str
    #: paths the source says were left out on purpose (OMS ``ignore_paths``); still extra if present
    excluded_by_source: tuple[str, ...] = ()


def _compare_file(algo: str, want: ExpectedFile, got: FileEntry, shown: str) -> list[str]:
    if want.size is not None and want.size != got.size:
        return [f"size mismatch: {shown} expected {want.size} bytes got {got.size}"]
    if want.digest is not None:
        if want.digest != got.digest:
            return [f"hash mismatch: {shown} expected {algo}:{want.digest} got {algo}:{got.digest}"]
        return []
    want_shards = {(s.start, s.end): s.digest for s in want.shards}
    got_shards = {(s.start, s.end): s.digest for s in got.shards}
    if want_shards.keys() != got_shards.keys():
        want_end = max((end for _, end in want_shards), default=0)
        return [f"size mismatch: {shown} expected {want_end} bytes (from its shards) got {got.size}"]
    out = []
    for (start, end), digest in sorted(want_shards.items()):
        if got_shards[(start, end)] != digest:
            out.append(
                f"hash mismatch: {shown} bytes {start}..{end} expected {algo}:{digest} "
                f"got {algo}:{got_shards[(start, end)]}"
            )
    return out


def compare(expected: Expected, actual: Manifest, *, allow_extra: bool = False) -> list[str]:
    """Every difference between ``expected`` and ``actual``, one line each, in path order."""
    algo = expected.algorithm.value
    problems: list[str] = []
    seen: set[str] = set()
    for entry in actual.files:
        want = expected.files.get(entry.path)
        if want is None:
            if not allow_extra:
                note = (
                    "excluded by the signer" if is_excluded(entry.path, expected.excluded_by_source) else ""
                )
                problems.append(
                    f"extra: {entry.path} (not in {expected.source}{'; ' + note if note else ''})"
                )
            continue
        seen.add(entry.path)
        # A single file's entry is named "." (as OMS signers name it); messages use the file's name.
        problems.extend(_compare_file(algo, want, entry, actual.name if entry.path == "." else entry.path))
    problems.extend(
        f"missing: {actual.name if path == '.' else path}"
        for path in sorted(expected.files)
        if path not in seen
    )
    return problems


class ItemisedIntegrityError(IntegrityError):
    """An ``IntegrityError`` that also keeps its problems as a tuple, for machine-readable reports."""

    def __init__(self, message: str, problems: tuple[str, ...]) -> None:
        super().__init__(message)
        self.problems = problems


def integrity_error(subject: str, problems: Iterable[str]) -> ItemisedIntegrityError:
    """One error listing every problem, one per line: ``integrity check failed for X (N problems):``."""
    items = list(problems)
    shown = items[:_MAX_LISTED]
    more = f"\n  ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    noun = "problem" if len(items) == 1 else "problems"
    body = "".join(f"\n  {item}" for item in shown)
    return ItemisedIntegrityError(
        f"integrity check failed for {subject} ({len(items)} {noun}):{body}{more}", tuple(items)
    )
