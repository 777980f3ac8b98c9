"""Scan one file: open without following links, map it, sniff, read, analyse, aggregate findings."""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from airlock._analysis import analyse_template
from airlock._analysis.pickle_findings import analyse_pickle_stream
from airlock._formats.base import (
    CodeReference,
    Fact,
    FolderFact,
    GraphOp,
    Issue,
    Nested,
    PickleStream,
    PythonSource,
    ReadContext,
    Template,
)
from airlock._formats.pickle import looks_like_pickle
from airlock._formats.registry import Format, looks_like_model_file, sniff_format, torch_tar_reading
from airlock._scan.collect import Collector
from airlock.errors import FormatError, IntegrityError, LimitError
from airlock.limits import Limits
from airlock.policy import Policy
from airlock.results import FileReport, Severity, Skipped

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from airlock.integrity import Verified

__all__ = [
    "ALLOWABLE_RULES",
    "READ_WHOLE_BYTES",
    "SKIPPED_UNKNOWN",
    "apply_allowances",
    "judge_folder_fact",
    "scan_file",
    "sniff",
]

#: why :func:`scan_file` skips a file: the only reason it has (no folder finding about it, and
#: neither its name nor a link's is a model file name)
SKIPPED_UNKNOWN = "content of no known model format, and not a model file name"

#: Findings about a name the loader imports that is simply not on an allowlist (custom Keras
#: objects, Hugging Face remote code and modules named in configs). ``--allow NAME`` / a policy
#: file turns such a SUSPICIOUS finding into INFO; a MALICIOUS finding is never allowed away.
ALLOWABLE_RULES = frozenset(
    {"keras.custom-object", "hf.remote-code", "hf.dynamic-module", "savedmodel.unknown-op"}
)


def apply_allowances(issue: Issue, policy: Policy) -> Issue:
    """``issue``, or an INFO note when the user allowed the exact name it is about.

    A Python file (``hf.remote-code`` on ``modeling_x.py``, callable ``modeling_x``) counts as
    allowed when a class in it is (``--allow modeling_x.MyModel``); a TensorFlow op as ``tf.OpName``."""
    name = issue.callable
    if issue.severity is not Severity.SUSPICIOUS or issue.rule not in ALLOWABLE_RULES or not name:
        return issue
    if issue.rule == "savedmodel.unknown-op":
        name = f"tf.{name}"  # TensorFlow op names are allowed as tf.OpName
    if name not in policy.allow and not (
        issue.rule == "hf.remote-code"
        and "." not in name
        and any(a.startswith(f"{name}.") for a in policy.allow)
    ):
        return issue
    where = f" ({', '.join(policy.sources)})" if policy.sources else ""
    return issue._replace(severity=Severity.INFO, message=f"{issue.message} [allowed explicitly{where}]")


def judge_reference(ref: CodeReference) -> Iterator[Issue]:
    """The findings for a name the loader imports (imported on first use: most scans meet none)."""
    if ref.ecosystem == "hf":
        from airlock._analysis.hf_refs import judge_hf_reference

        return judge_hf_reference(ref)
    from airlock._analysis.keras_names import judge_keras_reference

    if ref.ecosystem != "keras":
        raise AssertionError(f"no judge for {ref.ecosystem} references")
    return judge_keras_reference(ref)


def judge_graph_op(fact: GraphOp) -> Iterator[Issue]:
    """The finding for an op a TensorFlow or ONNX graph runs (imported on first use)."""
    if fact.ecosystem == "onnx":
        from airlock._analysis.onnx_ops import judge_onnx_op

        return judge_onnx_op(fact)
    if fact.ecosystem != "tf":
        raise AssertionError(f"no judge for {fact.ecosystem} graph ops")
    from airlock._analysis.tf_ops import judge_graph_op as judge

    return judge(fact)


def judge_folder_fact(fact: FolderFact, limits: Limits, policy: Policy) -> list[Issue]:
    """The findings for one fact a folder check found in a file (see ``base.FolderCheck``)."""
    if isinstance(fact, Template):
        issues = analyse_template(fact.name, fact.text, limits, fact.offset)
    elif isinstance(fact, PythonSource):
        from airlock._analysis.python_source import analyse_python  # only for folders with code

        issues = list(analyse_python(fact))
    elif isinstance(fact, CodeReference):
        issues = list(judge_reference(fact))
    else:
        issues = [fact]
    return [apply_allowances(issue, policy) for issue in issues]


_HEAD = 4096
#: files up to this size are read into memory in one call instead of being mapped
READ_WHOLE_BYTES = 64 * 1024
#: Readers that read the whole file front to back (a pickle stream, a compressed stream) get the
#: kernel's read-ahead. Every other reader touches a directory, headers and a few members, and
#: read-ahead around each of those reads pulls in tensor data nobody looks at: with an 8 MiB
#: read-ahead window, a scan of a 1 GiB torch zip that was not in the page cache read all 1 GiB
#: from disk to look at 2 MiB. So the mapping is advised MADV_RANDOM until its reader is known
#: (``Format.sequential``).
_MADV_RANDOM: int | None = getattr(mmap, "MADV_RANDOM", None)
_MADV_NORMAL: int | None = getattr(mmap, "MADV_NORMAL", None)
_PICKLE_STEP = "as pickle.load reads it"
_TAR_STEP = "as torch.load reads it (a tar)"
_COMPRESSION_SUFFIXES = frozenset({".gz", ".gzip", ".bz2", ".xz", ".lzma", ".z", ".zlib", ".lz4", ".zst"})


def sniff(data: memoryview | bytes) -> Format | None:
    """The first registered format whose reader recognises ``data`` by content, or None."""
    return sniff_format(bytes(data[:_HEAD]), len(data))


def scan_file(
    path: Path,
    display: str,
    root: Path,
    limits: Limits,
    policy: Policy,
    verified: Verified | None = None,
    rel: str | None = None,
    opened: int | None = None,
    blob: Path | None = None,
    folder_issues: tuple[Issue, ...] = (),
    folder_format: str | None = None,
    aliases: tuple[str, ...] = (),
) -> FileReport | Skipped:
    """Scan one regular file. Never raises for bad input: every failure is a finding.

    A file whose content no reader recognises and whose name is not a model file name (a README,
    a licence) is returned as :class:`Skipped`; with a model file name it is an ERROR.

    With ``verified`` (the result of ``airlock.integrity.verify``), the file is opened through it,
    which refuses a file that is no longer the one that was hashed, and it is checked again after
    the scan, so the verdict is about exactly the verified bytes.

    ``opened``: an already open descriptor to scan instead of opening ``path`` (the sandbox gate
    scans its sealed private copy this way); ``path`` then only names the file.

    ``blob``: for a Hugging Face cache snapshot link, the resolved blob to read; ``path`` (the
    link) still gives the file its name, as the loader sees it.

    ``folder_issues``: what the folder checks found about this file (``folder_format`` names the
    check); they join the file's findings before its report is closed, and a file they analysed is
    reported (in that format) instead of skipped.

    ``aliases``: names of links inside the scanned folder that point at this file. A loader opens
    the link by its name, so when one of them is a model file name (``pytorch_model.bin`` ->
    ``notes.txt``) the file is judged by it: content no reader knows is then an ERROR, not skipped.
    """
    start = time.monotonic()
    collector = Collector(display, limits)
    size = 0
    fmt: str | None = None

    def close(fmt: str | None, size: int) -> FileReport:
        for issue in folder_issues:
            collector.add((), issue)
        if fmt is None and folder_issues:
            fmt = folder_format
        return collector.report(fmt, size, time.monotonic() - start, blob)

    try:
        if opened is not None:
            fd = os.dup(opened)
        elif verified is not None and rel is not None:
            with verified.open(rel) as handle:
                fd = os.dup(handle.fileno())
        else:
            # O_NOFOLLOW: the walk saw a regular file; if it was swapped for a link since, refuse.
            # O_NONBLOCK: if it was swapped for a FIFO, the open must not wait for a writer.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(blob or path, flags)
    except OSError as exc:
        collector.add((), Issue("file.unreadable", Severity.ERROR, f"cannot open: {exc.strerror}"))
        return close(None, 0)
    except IntegrityError as exc:
        collector.add((), Issue("integrity.changed", Severity.ERROR, str(exc)))
        return close(None, 0)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            collector.add((), Issue("file.unreadable", Severity.ERROR, "not a regular file: not read"))
            return collector.report(None, 0, time.monotonic() - start)
        size = before.st_size
        if size == 0:
            # No bytes is content no reader knows: the rule below for such content applies (an
            # empty `.gitkeep` or `__init__.py` is listed as skipped); a file a loader opens as a
            # model, by its name or a link's, is a model with nothing in it: not proven clean.
            if not folder_issues and not any(looks_like_model_file(n) for n in (path.name, *aliases)):
                return Skipped(display, SKIPPED_UNKNOWN)
            collector.add((), Issue("format.empty", Severity.ERROR, "empty file: nothing to prove clean"))
            return close(None, 0)
        mapped: mmap.mmap | None = None
        buffer: bytes | mmap.mmap
        if size <= READ_WHOLE_BYTES:
            # A small file is read in one call: a mapping costs more system calls (map, advise,
            # unmap) and page faults than copying a few pages does.
            content = _read_exactly(fd, size)
            if content is None:
                collector.add(
                    (), Issue("file.unreadable", Severity.ERROR, "the file shrank while it was being read")
                )
                return close(None, size)
            buffer = content
        else:
            buffer = mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            _advise(mapped, _MADV_RANDOM)
        try:
            view = memoryview(buffer)
            try:
                deadline = start + limits.max_seconds_per_file

                def check_time() -> None:
                    if time.monotonic() > deadline:
                        raise LimitError(
                            f"analysis took longer than {limits.max_seconds_per_file} s (limit max_seconds_per_file)"
                        )

                ctx = ReadContext(limits=limits, file_path=path, root=root, check_time=check_time)
                name = next((n for n in (path.name, *aliases) if looks_like_model_file(n)), path.name)
                fmt = _scan_data(view, ctx, collector, policy, top_name=name, mapping=mapped)
                if fmt is None and not folder_issues and not looks_like_model_file(name):
                    return Skipped(display, SKIPPED_UNKNOWN)
            finally:
                view.release()
        finally:
            if mapped is not None:
                _close_mapping(mapped)
        if verified is not None:
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
                before.st_size,
                before.st_mtime_ns,
                before.st_ctime_ns,
            ):
                collector.add(
                    (),
                    Issue("integrity.changed", Severity.ERROR, "the file changed while it was being scanned"),
                )
    except OSError as exc:
        collector.add((), Issue("file.unreadable", Severity.ERROR, f"cannot read: {exc.strerror}"))
    finally:
        os.close(fd)
    return close(fmt, size)


def _read_exactly(fd: int, size: int) -> bytes | None:
    """The file's first ``size`` bytes, or None when it ends sooner (it shrank since ``fstat``).

    Read at offsets from 0 (``pread``), as the mapping of a larger file is: the descriptor may be
    a caller's (:func:`airlock._scan.api.scan_fd` dups it, sharing its offset), which must neither
    decide what is scanned nor be moved by the scan."""
    content = os.pread(fd, size, 0)
    if len(content) < size:  # a regular file reads short only at its end, or on a signal
        parts = [content]
        held = len(content)
        while held < size and (more := os.pread(fd, size - held, held)):
            parts.append(more)
            held += len(more)
        if held < size:
            return None
        content = b"".join(parts)
    return content


def _advise(mapped: mmap.mmap, advice: int | None) -> None:
    """Tell the kernel how the mapping will be read; a hint only (absent on some systems)."""
    if advice is not None:
        with contextlib.suppress(OSError):
            mapped.madvise(advice)


def _close_mapping(mapped: mmap.mmap) -> None:
    """Unmap now; if a view of the mapping is still referenced somewhere (a reference cycle not
    yet collected), collect and retry, and otherwise leave the unmapping to the garbage collector."""
    try:
        mapped.close()
    except BufferError:
        gc.collect()
        with contextlib.suppress(BufferError):
            mapped.close()


def _scan_data(
    data: memoryview,
    ctx: ReadContext,
    collector: Collector,
    policy: Policy,
    top_name: str,
    mapping: mmap.mmap | None = None,
) -> str | None:
    """Sniff and read ``data``; route every fact. Returns the format name, or None if unknown.

    ``mapping``: the file's mapping, when ``data`` is the whole file (read-ahead follows the reader).
    """
    fmt = sniff(data)
    if mapping is not None and fmt is not None and fmt.sequential:
        _advise(mapping, _MADV_NORMAL)
    if fmt is None:
        if not ctx.members and not looks_like_model_file(top_name):
            return None  # the caller lists the file as skipped
        if ctx.members and not looks_like_model_file(top_name):
            collector.add(
                ctx.members,
                Issue(
                    "format.not-analysed", Severity.INFO, "member of unknown format, not a model file name"
                ),
            )
        else:
            collector.add(
                ctx.members,
                Issue(
                    "format.unsupported",
                    Severity.ERROR,
                    "no reader recognises this content; it cannot be proven clean",
                ),
            )
        return None
    _read_as(fmt, data, ctx, collector, policy)
    head = bytes(data[:_HEAD])
    tar = torch_tar_reading(fmt, head)
    if tar is not None:
        # A polyglot: content another format claims that torch.load opens as a tar (an npy whose
        # header ends inside the tar's first header). That reading is analysed too; that it does
        # not parse as a tar is no finding (torch.load then unpickles from the first byte: below).
        tar_ctx = ctx._replace(members=(*ctx.members, _TAR_STEP))
        _read_as(tar, data, tar_ctx, _RawBytes(collector), policy)
    if not fmt.whole_pickle and looks_like_pickle(head, len(data)):
        # A polyglot: content another format claims that pickle.load would also run (a tar whose
        # first member name is a pickle, a GGUF magic that decodes as BINFLOAT). That reading is
        # analysed too; only what it imports or calls is reported (lenient).
        stream = PickleStream(
            data, 0, "pickle", member=_PICKLE_STEP, max_pickles=1, trailing_ok=True, lenient=True
        )
        _route(stream, ctx, collector, policy)
    return fmt.name


def _read_as(fmt: Format, data: memoryview, ctx: ReadContext, collector: Collector, policy: Policy) -> None:
    try:
        for fact in fmt.reader().read(data, ctx):
            _route(fact, ctx, collector, policy)
    except LimitError as exc:
        collector.add(ctx.members, Issue("limit.exceeded", Severity.ERROR, str(exc), offset=exc.offset))
    except FormatError as exc:
        collector.add(
            ctx.members,
            Issue("format.error", Severity.ERROR, f"{fmt.name}: {exc}", offset=exc.offset),
        )


def _route(fact: Fact, ctx: ReadContext, collector: Collector, policy: Policy) -> None:
    if isinstance(fact, Issue):
        collector.add(ctx.members, apply_allowances(fact, policy) if policy.allow else fact)
    elif isinstance(fact, CodeReference | GraphOp):
        for issue in judge_reference(fact) if isinstance(fact, CodeReference) else judge_graph_op(fact):
            collector.add(ctx.members, apply_allowances(issue, policy) if policy.allow else issue)
    elif isinstance(fact, PickleStream):
        base = (*ctx.members, fact.member) if fact.member else ctx.members
        for members, issue in analyse_pickle_stream(fact, ctx, policy):
            collector.add(base + members, issue)
    elif isinstance(fact, Nested):
        _scan_nested(fact, ctx, collector, policy)
    else:
        # one template's analysis is bounded by its size (max_template_bytes), not the file's: a
        # file of many templates is checked against the file's deadline before each one
        ctx.check_time()
        for issue in analyse_template(fact.name, fact.text, ctx.limits, fact.offset):
            collector.add(ctx.members, issue)


def _scan_nested(fact: Nested, ctx: ReadContext, collector: Collector, policy: Policy) -> None:
    members = (*ctx.members, fact.name)
    if len(members) > ctx.limits.max_archive_depth:
        collector.add(
            members,
            Issue(
                "limit.exceeded",
                Severity.ERROR,
                f"nested deeper than {ctx.limits.max_archive_depth} levels (limit max_archive_depth)",
            ),
        )
        return
    view = fact.data if isinstance(fact.data, memoryview) else memoryview(fact.data)
    if len(view) == 0:
        collector.add(members, Issue("format.not-analysed", Severity.INFO, "empty member"))
        return
    inner = ReadContext(
        limits=ctx.limits,
        file_path=ctx.file_path,
        root=ctx.root,
        members=members,
        on_disk=False,
        check_time=ctx.check_time,
    )
    name = fact.name
    if name.startswith("<"):
        # A derived stream (``<gzip>`` ...): whether unknown content is a model file of an unknown
        # format is judged by the name of what was decompressed ("model.bin.gz" -> "model.bin").
        outer = ctx.members[-1] if ctx.members else ctx.file_path.name
        stem, dot, suffix = outer.rpartition(".")
        name = stem if dot and f".{suffix.lower()}" in _COMPRESSION_SUFFIXES else outer
    if fact.raw:
        _scan_data(view, inner, _RawBytes(collector), policy, top_name=name)
    else:
        collector.note_format(_scan_data(view, inner, collector, policy, top_name=name))


class _RawBytes(Collector):
    """What a scan of raw bytes that start like a file reports (``Nested.raw``): every finding but
    those saying the bytes do not parse as the format (``format.*``). Limits stay errors: a reading
    stopped by one has not been read to its end."""

    def __init__(self, inner: Collector) -> None:  # a view: holds nothing itself
        self._inner = inner

    def add(self, members: tuple[str, ...], issue: Issue) -> None:
        if not issue.rule.startswith("format."):
            self._inner.add(members, issue)

    def note_format(self, name: str | None) -> None:
        pass
