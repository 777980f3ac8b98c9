"""What a worker process answers for a batch of files, and the checks an answer passes before it
enters a report: the record of one file (format, size, seconds, blob, findings; or skipped).

A worker parses untrusted bytes, so the process that builds the report treats its answer as
untrusted too: never a Python object of the worker's choosing (no ``pickle``), only values of the
record's fixed shape, each checked, and the verdict derived here from the findings. A broken or
compromised worker can lie about the files it was given, but never run code in the process that
reads its answer, never name a file it was not given, nor make a file milder than what this
process itself knows about it (its folder findings).

Two encodings of the same record, one set of checks (:func:`judge`, :func:`judge_skipped`):

* JSON for the workers of a Ray cluster (:mod:`airlock._scan.cluster`: ``encode``/``decode``);
* :func:`pack`/:func:`unpack` for the forked workers of a local scan (:mod:`airlock._scan.pool`): a
  fixed-size table of records and findings (:mod:`struct`), their texts once each in a string
  table. Decoding JSON and checking it cost the parent 18 ms on the 1,000 files a worker scans of a
  tree of 2,000 small ones, too much of what the second process saves; this costs ~1.7 ms (``pickle.loads``: ~0.9).

Anything that does not fit is :class:`BadResult`; the caller makes every file of the batch an
ERROR (:func:`bad_batch`).
"""

from __future__ import annotations

import struct

from airlock._formats.base import Issue
from airlock._formats.registry import looks_like_model_file
from airlock._scan.collect import Collector
from airlock._scan.engine import SKIPPED_UNKNOWN
from airlock.limits import Limits
from airlock.results import FileReport, Finding, Location, Severity, Skipped, Verdict

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every
#: scan with worker processes
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from airlock._scan.pool import Task

__all__ = [
    "BadResult",
    "answer_bytes",
    "bad_batch",
    "error",
    "judge",
    "judge_skipped",
    "max_findings",
    "pack",
    "unpack",
]

#: bytes one file's record may take: the findings a file may list (limit max_findings_per_file,
#: plus one summary per severity) at this many bytes each, plus this much for the rest
_FINDING_BYTES: Final = 16 * 1024
_RECORD_BYTES: Final = 16 * 1024
SEVERITIES: Final = {s.value: s for s in Severity}
_CODES: Final = {s: i for i, s in enumerate(Severity)}
_BY_CODE: Final = tuple(Severity)

_MAGIC: Final = b"ALR1"
#: magic, records, findings, members (all findings), strings, bytes of the strings
_HEAD: Final = struct.Struct("<4sIIIII")
#: position, kind (0 a report, 1 skipped), format (skipped: the reason), seconds, size, blob, findings
_RECORD: Final = struct.Struct("<IBIdQII")
#: rule, severity, message, members, offset (-1: none), callable, evidence, count
_FINDING: Final = struct.Struct("<IBIIqIII")
#: strings are referred to by their place in the table plus one; 0 is None


class BadResult(Exception):
    """A worker's answer that is not a record of the expected shape for its batch."""


def max_findings(limits: Limits) -> int:
    """Findings one file's record may hold: the limit, and one summary per severity."""
    return limits.max_findings_per_file + len(SEVERITIES)


def answer_bytes(limits: Limits, files: int) -> int:
    """The most bytes an answer for ``files`` files may take (either encoding; 256 for its header)."""
    return (_RECORD_BYTES + max_findings(limits) * _FINDING_BYTES) * files + 256


def judge_skipped(task: Task, reason: object) -> Skipped:
    """A worker's "skipped" for ``task``: only for content no reader knows, in a file that is no
    model by its names and that no folder check spoke about (the engine judges all others)."""
    if reason != SKIPPED_UNKNOWN:
        raise BadResult(f"the record of {task.display} has unexpected fields")
    if task.folder_issues or any(looks_like_model_file(n) for n in (task.path.name, *task.aliases)):
        raise BadResult(f"{task.display} was reported skipped; a file of its name is always judged")
    return Skipped(task.display, SKIPPED_UNKNOWN)


def judge(
    task: Task,
    fmt: str | None,
    size: int,
    seconds: float,
    blob: str | None,
    findings: tuple[Finding, ...],
    *,
    walked_size: bool,
) -> FileReport:
    """The report of ``task`` from a worker's record whose values have their types already;
    ``walked_size``: the size must be the one this process walked (a Ray worker reads the file
    on another machine and could read another one; a forked worker reads this machine's file,
    which may have changed since the walk, as it may under one process)."""
    if blob is not None and (task.blob is None or blob != str(task.blob)):
        raise BadResult(f"the record of {task.display} names a blob it was not given")
    if not 0 <= seconds < 1e9:  # NaN fails too
        raise BadResult(f"the record of {task.display} has no valid seconds")
    verdict = Verdict.worst([f.severity.verdict for f in findings]) if findings else Verdict.CLEAN
    if walked_size and size != task.size and not _unopened(size, verdict, findings):
        raise BadResult(f"the record of {task.display} is about {size} bytes, the file has {task.size}")
    if task.folder_issues:
        # what the folder checks found about the file is known here: it must be in the report
        # (unless the findings limit dropped it, which a limit.findings summary then says), by
        # rule and callable (the collector merges repeats of those, keeping the first severity)
        listed = {(f.rule, f.callable) for f in findings if not f.location.members}
        if not any(f.rule == "limit.findings" for f in findings):
            for issue in task.folder_issues:
                if (issue.rule, issue.callable) not in listed:
                    raise BadResult(f"the record of {task.display} lacks the folder finding {issue.rule}")
        # a limit.findings summary excuses a missing folder finding, never a verdict below it
        # (outside review 2, finding 3)
        if Verdict.worst([issue.severity.verdict for issue in task.folder_issues]).rank > verdict.rank:
            raise BadResult(f"the record of {task.display} is milder than its folder findings")
    # the verdict is derived here, as Collector.report derives it: never the worker's word
    return FileReport(task.display, fmt, verdict, findings, size, float(seconds), blob)


#: the rules under which the engine reports a file it could not open or read (size 0): where the
#: worker's view of the file system is not the client's (a mount missing on its node)
_UNOPENED: Final = frozenset({"file.unreadable", "integrity.changed"})


def _unopened(size: int, verdict: Verdict, findings: tuple[Finding, ...]) -> bool:
    """A record that says its worker could not open or read the file: size 0, an ERROR verdict
    under a rule of :data:`_UNOPENED`. It stands for that file alone, as in a local scan (outside
    review 15: a node without the mount made every file of the batch ``cluster.bad-result``); a
    worker that lies so gains nothing, the file is an ERROR either way."""
    return size == 0 and verdict is Verdict.ERROR and any(f.rule in _UNOPENED for f in findings)


def error(
    task: Task, limits: Limits, rule: str, message: str, *, folder_findings: bool = False
) -> FileReport:
    """An ERROR report for ``task`` under ``rule`` (with its folder findings first, if asked)."""
    collector = Collector(task.display, limits)
    for issue in task.folder_issues if folder_findings else ():
        collector.add((), issue)
    collector.add((), Issue(rule, Severity.ERROR, message))
    return collector.report(None, task.size, 0.0, task.blob)


def bad_batch(
    batch: list[Task], limits: Limits, rule: str, message: str
) -> list[tuple[int, FileReport | Skipped]]:
    """Every file of ``batch`` an ERROR under ``rule`` (its folder findings kept): its answer
    could not be believed."""
    return [(task.position, error(task, limits, rule, message, folder_findings=True)) for task in batch]


# -- the compact encoding of the forked workers ------------------------------------------------


def pack(results: list[tuple[int, FileReport | Skipped]]) -> bytes:
    """The records of one batch (what :func:`unpack` reads)."""
    table: dict[str, int] = {}

    def ref(text: str | None) -> int:
        if text is None:
            return 0
        number = table.get(text)
        if number is None:
            number = table[text] = len(table) + 1
        return number

    records: list[bytes] = []
    findings: list[bytes] = []
    members: list[int] = []
    for position, result in results:
        if isinstance(result, Skipped):
            records.append(_RECORD.pack(position, 1, ref(result.reason), 0.0, 0, 0, 0))
            continue
        records.append(
            _RECORD.pack(
                position, 0, ref(result.format), result.seconds, result.size, ref(result.blob),
                len(result.findings),
            )
        )  # fmt: skip
        for f in result.findings:
            location = f.location
            offset = -1 if location.offset is None else location.offset
            findings.append(
                _FINDING.pack(
                    ref(f.rule), _CODES[f.severity], ref(f.message), len(location.members), offset,
                    ref(f.callable), ref(f.evidence), f.count,
                )
            )  # fmt: skip
            members.extend(ref(m) for m in location.members)
    # surrogatepass: a name taken from a file may hold a lone surrogate; the report keeps it as is
    texts = [text.encode("utf-8", "surrogatepass") for text in table]
    head = _HEAD.pack(_MAGIC, len(records), len(findings), len(members), len(texts), sum(map(len, texts)))
    counts = struct.pack(f"<{len(members)}I{len(texts)}I", *members, *map(len, texts))
    return b"".join([head, *records, *findings, counts, *texts])


#: bytes of an answer's head (:func:`check_head` needs no more)
HEAD_BYTES: Final = _HEAD.size


def check_head(
    head: bytes | memoryview, length: int, batch: list[Task], limits: Limits
) -> tuple[int, int, int, int, int]:
    """The counts of an answer of ``length`` bytes from its first :data:`HEAD_BYTES`: raises
    :class:`BadResult` unless they are ``batch``'s and add up to ``length`` exactly. Checked before
    the rest is read, so an answer whose head does not hold up costs nothing to refuse."""
    if length < _HEAD.size or len(head) < _HEAD.size or length > answer_bytes(limits, len(batch)):
        raise BadResult(f"the worker's answer is {length} bytes")
    magic, n_records, n_findings, n_members, n_texts, text_bytes = _HEAD.unpack_from(head)
    if magic != _MAGIC or n_records != len(batch):
        raise BadResult(f"the worker's answer is not {len(batch)} airlock record(s)")
    if n_findings > n_records * max_findings(limits):
        raise BadResult(f"the worker's answer lists {n_findings} findings")
    total = _HEAD.size + n_records * _RECORD.size + n_findings * _FINDING.size + 4 * (n_members + n_texts)
    if total + text_bytes != length:
        raise BadResult("the worker's answer is not as long as its counts say")
    return n_records, n_findings, n_members, n_texts, text_bytes


def unpack(
    data: bytes | memoryview, batch: list[Task], limits: Limits
) -> list[tuple[int, FileReport | Skipped]]:
    """One result per file of ``batch`` from a forked worker's answer (:func:`pack`); raises
    :class:`BadResult` for anything else. Every count is checked against the answer's length
    before anything is unpacked, so nothing is allocated beyond what the answer holds."""
    view = memoryview(data)
    n_records, n_findings, n_members, n_texts, _ = check_head(view, len(view), batch, limits)
    at = _HEAD.size
    ends = (
        at + n_records * _RECORD.size,
        at + n_records * _RECORD.size + n_findings * _FINDING.size,
    )
    counts_end = ends[1] + 4 * (n_members + n_texts)
    refs = struct.unpack_from(f"<{n_members}I{n_texts}I", view, ends[1])
    member_refs = refs[:n_members]
    texts: list[str | None] = [None]
    start = counts_end
    try:
        for length in refs[n_members:]:
            texts.append(str(view[start : start + length], "utf-8", "surrogatepass"))
            start += length
    except UnicodeDecodeError as exc:
        raise BadResult("a text of the worker's answer is not UTF-8") from exc
    if start != len(view):
        raise BadResult("the worker's texts are not as long as their counts say")
    found = _FINDING.iter_unpack(view[ends[0] : ends[1]])
    taken = 0  # members used so far
    by_position = {task.position: task for task in batch}
    out: list[tuple[int, FileReport | Skipped]] = []
    limit = max_findings(limits)
    for position, kind, fmt, seconds, size, blob, count in _RECORD.iter_unpack(view[at : ends[0]]):
        task = by_position.pop(position, None)
        if task is None:
            raise BadResult("a record for a file not in the batch, or two for one file")
        if fmt > n_texts or blob > n_texts or count > limit:
            raise BadResult(f"the record of {task.display} is out of range")
        if kind == 1:
            if blob or count or size or seconds:
                raise BadResult(f"the record of {task.display} has unexpected fields")
            out.append((position, judge_skipped(task, texts[fmt])))
            continue
        if kind != 0:
            raise BadResult(f"the record of {task.display} has kind {kind}")
        findings: tuple[Finding, ...] = ()
        if count:
            items = []
            for _ in range(count):
                entry = next(found, None)
                if entry is None:
                    raise BadResult(f"the record of {task.display} counts findings the answer lacks")
                rule, code, message, n, offset, callable_, evidence, times = entry
                if (
                    max(rule, message, callable_, evidence) > n_texts
                    or not rule
                    or not message
                    or code >= len(_BY_CODE)
                    or offset < -1
                    or times < 1
                    or taken + n > n_members
                ):
                    raise BadResult(f"a finding of {task.display} is out of range")
                names = member_refs[taken : taken + n]
                taken += n
                if n and (max(names) > n_texts or not min(names)):
                    raise BadResult(f"a finding of {task.display} names a member out of range")
                items.append(
                    Finding(
                        texts[rule], _BY_CODE[code], texts[message],
                        Location(task.display, tuple(texts[m] for m in names), None if offset < 0 else offset),
                        texts[callable_], texts[evidence], times,
                    )
                )  # fmt: skip
            findings = tuple(items)
        out.append(
            (position, judge(task, texts[fmt], size, seconds, texts[blob], findings, walked_size=False))
        )
    if taken != n_members or next(found, None) is not None:
        raise BadResult("the worker's answer holds findings or members of no file")
    return out
