"""``airlock.scan``: the public entry point of the scanner."""

from __future__ import annotations

import os
from pathlib import Path

from airlock import _progress
from airlock._formats.base import FolderCheck, Issue, ReadContext
from airlock._formats.registry import HF_FOLDER_SUFFIXES, folder_checks, looks_like_model_file
from airlock._scan.collect import Collector
from airlock._scan.engine import judge_folder_fact, scan_file
from airlock._scan.pool import Task, auto_jobs, run
from airlock._scan.walk import Entry, walk
from airlock.errors import AirlockError, UsageError
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.policy import Policy
from airlock.results import FileReport, Report, Severity, Skipped

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from airlock.integrity import Verified

__all__ = ["Plan", "plan_scan", "scan", "scan_fd"]


def scan(
    path: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    limits: Limits = DEFAULT_LIMITS,
    jobs: int | None = 1,
    verified: Verified | None = None,
) -> Report:
    """Scan a file or a folder, statically, and return a :class:`~airlock.results.Report`.

    Nothing in the scanned files is executed; nothing is written; no network is used; no
    configuration is read from the current directory or from the scanned tree. Every file is
    sniffed by content. ``jobs`` > 1 scans files in that many worker processes; ``None`` picks
    the number: the CPUs available (at most 8) for a scan of 256 files or more, or of 256 MiB or
    more in two files or more, else one process (a pool costs more than it saves on a few files).
    The report is the same for any number of jobs.

    ``verified``: the result of :func:`airlock.integrity.verify` for this same ``path``. Every
    file it lists is then read through it (refused if it is no longer the file that was hashed),
    so the verdict is about exactly the verified bytes.
    """
    if jobs is not None and jobs < 1:
        raise UsageError(f"jobs must be at least 1, got {jobs}")
    plan = plan_scan(path, policy=policy, limits=limits, verified=verified)
    workers = auto_jobs(len(plan.tasks), plan.total_bytes) if jobs is None else jobs
    results: dict[int, FileReport | Skipped] = {}
    with _progress.task(f"scanning {plan.root}", plan.total_bytes, len(plan.tasks)):
        for index, result in run(
            plan.tasks, workers, base=plan.base, limits=plan.limits, policy=plan.policy,
            verified=plan.verified, folder_format=plan.folder_format,
            advance=lambda nbytes, count: _progress.advance(nbytes, files=count),
        ):  # fmt: skip
            results[index] = result
    return plan.finish(results)


class Plan:
    """A scan up to the point where its files are read: the walk, the folder checks and the
    tasks, one per file (what :func:`airlock._scan.pool.run` or a Ray cluster scans), and
    :meth:`finish`, which puts their results into the report. :func:`scan` is plan, run, finish;
    ``airlock scan --ray`` runs the tasks of several plans on a cluster."""

    def __init__(
        self,
        root: Path,
        base: Path,
        policy: Policy,
        limits: Limits,
        verified: Verified | None,
        folder_format: str | None,
        tasks: list[Task],
        reports: dict[int, FileReport],
        skipped: list[Skipped],
    ) -> None:
        self.root = root
        self.base = base
        self.policy = policy
        self.limits = limits
        self.verified = verified
        self.folder_format = folder_format
        self.tasks = tasks
        self.total_bytes = sum(t.size for t in tasks)
        self._reports = reports
        self._skipped = skipped

    def finish(self, results: dict[int, FileReport | Skipped]) -> Report:
        """The report, from one result per task (keyed by :attr:`Task.position`)."""
        missing = [t.display for t in self.tasks if t.position not in results]
        if missing:  # a runner that lost files: never a report without them
            raise AirlockError(f"{len(missing)} file(s) have no result, e.g. {missing[0]}; no report")
        reports = dict(self._reports)
        skipped = list(self._skipped)
        for index in sorted(results):
            result = results[index]
            if isinstance(result, Skipped):
                skipped.append(result)
            else:
                reports[index] = result
        ordered = tuple(reports[i] for i in sorted(reports))
        verified = self.verified
        return Report(
            root=str(self.root),
            files=ordered,
            skipped=tuple(skipped),
            unsafe_options=verified.unsafe if verified is not None else (),
            allowances=tuple(sorted(self.policy.allow)),
            integrity=_describe(verified) if verified is not None else None,
        )


def plan_scan(
    path: str | os.PathLike[str],
    *,
    policy: Policy | None = None,
    limits: Limits = DEFAULT_LIMITS,
    verified: Verified | None = None,
) -> Plan:
    """Walk ``path`` and run its folder checks: everything of :func:`scan` but reading the files."""
    policy = policy or Policy()
    root = Path(path)
    if verified is not None and Path(verified.path).resolve() != root.resolve():
        raise UsageError(f"the verification is for {verified.path}, not for {root}")
    entries = list(walk(root, limits))
    base = root if root.is_dir() and not root.is_symlink() else root.parent
    files: list[tuple[int, Entry]] = []
    reports: dict[int, FileReport] = {}
    skipped: list[Skipped] = []
    # Hugging Face cache: a blob that a snapshot link names is scanned under the link's name
    # (the name the loader sees), not a second time under its hash.
    linked = {entry.blob for entry in entries if entry.blob is not None}
    unverified = _unverified_test(verified, root, base)
    stray: set[str] = set()
    specials: list[tuple[int, Entry]] = []
    for index, entry in enumerate(entries):
        if unverified is not None and unverified(entry):
            # The walk met a name the verification never saw (added, or a file replaced by a
            # folder or link, after the check): its bytes are not the verified ones, so it is
            # not read at all, and the scan cannot be clean.
            reports[index] = _folder_report(entry.display, [_UNVERIFIED], limits, None)
            stray.add(entry.path.as_posix())
        elif entry.kind == "file" and entry.blob is None and linked and entry.path.resolve() in linked:
            skipped.append(
                Skipped(
                    entry.display, "Hugging Face cache blob: scanned as the snapshot file(s) linking to it"
                )
            )
        elif entry.kind == "file":
            files.append((index, entry))
        elif entry.kind == "bookkeeping":
            skipped.append(
                Skipped(entry.display, "Hugging Face cache bookkeeping (markers and locks, never loaded)")
            )
        elif entry.kind == "unlistable":
            reports[index] = _folder_report(entry.display, [_UNLISTABLE], limits, None)
        elif entry.kind == "symlink":
            if entry.inside:
                skipped.append(
                    Skipped(
                        entry.display, f"symlink to {entry.target} (not followed; target scanned in place)"
                    )
                )
            else:
                reports[index] = _symlink_report(entry, limits)
        else:
            specials.append((index, entry))
    # A link inside the folder gives its target another name, the one the loader opens.
    aliases: dict[Path, tuple[str, ...]] = {}
    for entry in entries:
        if entry.kind == "symlink" and entry.inside:
            target = entry.path.resolve()
            aliases[target] = (*aliases.get(target, ()), entry.path.name)
    for index, entry in specials:
        # A device, FIFO or socket is never opened (a FIFO would block, a device never end). By
        # the rule for content no reader knows, its name decides: a loader opens a model file name,
        # and transformers a config, template or remote-code file (the names the folder check
        # judges), by its own name or a link's in the folder, and reads whatever the FIFO or device
        # gives it, which nothing proved clean: an ERROR. Any other name is listed as skipped.
        names = (entry.path.name, *(aliases.get(entry.path.resolve(), ()) if aliases else ()))
        if any(looks_like_model_file(name) or name.endswith(HF_FOLDER_SUFFIXES) for name in names):
            reports[index] = _folder_report(entry.display, [_SPECIAL], limits, None)
        else:
            skipped.append(Skipped(entry.display, "special file (device, FIFO or socket): not opened"))
    listed = {f.path for f in verified.manifest.files} if verified is not None else set()
    # Folder checks first: what they find about a file joins that file's report while it is
    # still open (scan_file), so no report is ever rebuilt from its findings.
    by_file: dict[int, tuple[Issue, ...]] = {}
    folder_format = None
    # One file given: only the checks that say something about a file of its name.
    checks = folder_checks(None if base == root else [entry.path.name for _, entry in files]) if files else ()
    if checks:
        folder_format = checks[0].name
        reader = _verified_reader(verified, root, base) if verified is not None else None
        by_file, others = _run_folder_checks(
            base, entries, [i for i, _ in files], limits, policy, checks, reader
        )
        # One file given: the checks of its folder say what its name makes of it (a template,
        # remote code); findings about the folder's other files are not part of this scan.
        # A name the verification did not cover is already an error of its own (above).
        others = [(display, issues) for display, issues in others if display not in stray]
        for offset, (display, issues) in enumerate(others if base == root else []):
            reports[len(entries) + offset] = _folder_report(display, issues, limits, folder_format)
    for name in _missing(verified, entries, root, base):
        display = str(root) if base != root else f"{root.as_posix().rstrip('/')}/{name}"
        after = max(reports, default=len(entries) - 1) + 1  # after the walk's and the checks' reports
        reports[max(after, len(entries))] = _folder_report(display, [_MISSING], limits, None)

    def rel(entry: Entry) -> str | None:
        if verified is None:
            return None
        name = "." if base != root else entry.path.relative_to(root).as_posix()
        return name if name in listed else None  # extra files exist only under --unsafe-allow-extra

    tasks = [
        Task(
            index,
            entry.path,
            entry.display,
            entry.size if entry.blob is None else _size(entry.blob),
            rel(entry),
            entry.blob,
            by_file.get(index, ()),
            aliases.get(entry.path.resolve(), ()) if aliases else (),
        )
        for index, entry in files
    ]
    return Plan(root, base, policy, limits, verified, folder_format, tasks, reports, skipped)


def scan_fd(fd: int, name: Path, *, policy: Policy | None = None, limits: Limits = DEFAULT_LIMITS) -> Report:
    """Scan the regular file open as ``fd`` (named ``name`` in the report) exactly as :func:`scan`
    scans one file. The sandbox gate scans its sealed private copy this way, so the verdict is
    about exactly the bytes the sandbox loads."""
    policy = policy or Policy()
    result = scan_file(name, str(name), name.parent, limits, policy, opened=fd)
    files = (result,) if isinstance(result, FileReport) else ()
    skipped = (result,) if isinstance(result, Skipped) else ()
    return Report(root=str(name), files=files, skipped=skipped, allowances=tuple(sorted(policy.allow)))


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _describe(verified: Verified) -> str:
    signer = f", signed by {verified.signer}" if verified.signer else ""
    count = len(verified.manifest.files)
    return f"{count} file(s) verified against {verified.source}{signer} before scanning"


# --- folder checks (Hugging Face layout ...) -------------------------------------------------
# Each check in folder_checks() looks at one folder at a time and yields (relative path, Issue).
# The issues are handed to scan_file with that file's other inputs and join its report; a file
# the reader alone would list as skipped (JSON, templates, .py) is then reported, CLEAN unless an
# issue says otherwise (checks mark every file they analysed completely with an INFO finding).
# Issues for "." or for a path not scanned as a file get a report named after that path.


def _run_folder_checks(
    base: Path,
    entries: list[Entry],
    scanned: list[int],
    limits: Limits,
    policy: Policy,
    checks: tuple[FolderCheck, ...],
    read_verified: Callable[[Path, int], bytes | None] | None = None,
) -> tuple[dict[int, tuple[Issue, ...]], list[tuple[str, list[Issue]]]]:
    # The folders of the scanned files: the walk's own folder objects (one per folder; hashed
    # once), not a Path or a dirname per file.
    folders = sorted({base} | {_folder(entries[index]) for index in scanned})
    # Keyed by the path's text (hashing a Path builds that text anyway); built only once a check
    # says something (most folders give it nothing to say: then it is never built).
    by_path: dict[str, int] | None = None
    by_file: dict[int, list[Issue]] = {}
    others: dict[str, list[Issue]] = {}
    for folder in folders:
        ctx = ReadContext(limits=limits, file_path=folder, root=base, read_verified=read_verified)
        for check in checks:
            for rel, found in check.check(folder, ctx):
                if by_path is None:
                    by_path = {str(entries[index].path): index for index in scanned}
                target = folder / rel if rel != "." else folder
                index = by_path.get(str(target))
                for issue in judge_folder_fact(found, limits, policy):
                    if index is None:
                        others.setdefault(target.as_posix(), []).append(issue)
                    else:
                        by_file.setdefault(index, []).append(issue)
    return {i: tuple(v) for i, v in by_file.items()}, list(others.items())


def _folder(entry: Entry) -> Path:
    return entry.folder if entry.folder is not None else entry.path.parent


_UNVERIFIED = Issue(
    "integrity.changed",
    Severity.ERROR,
    "not in the verified manifest: added, or put in place of a verified file, after verification; not scanned",
)
_MISSING = Issue(
    "integrity.changed",
    Severity.ERROR,
    "missing after verification: a verified file is gone (deleted, or replaced by a folder); not scanned",
)
_UNLISTABLE = Issue(
    "file.unreadable",
    Severity.ERROR,
    "a folder this user may not list (permission denied): none of its files was scanned",
)
_SPECIAL = Issue(
    "file.unreadable",
    Severity.ERROR,
    "special file (device, FIFO or socket) with the name of a file loaders read (a model, config, "
    "template or Python file): a loader would read whatever it gives, which cannot be proven clean; "
    "not opened",
)


def _verified_name(root: Path, base: Path) -> Callable[[Path], str | None]:
    """The manifest name of a path met in a verified scan: relative to the folder scanned, ``.``
    for the one file scanned; None for a path outside what was verified (a neighbour of the one
    file given, which only its folder's checks look at)."""

    def name(path: Path) -> str | None:
        if base != root:
            return "." if path == root else None  # (the walk's one entry: see _entry_name)
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return None

    return name


def _entry_name(root: Path, base: Path) -> Callable[[Entry], str | None]:
    """The manifest name of a walked entry: for one file given, its one entry is ``.`` (even
    when the walk met it as the target of the link named on the command line)."""
    name_of = _verified_name(root, base)
    return (lambda entry: ".") if base != root else (lambda entry: name_of(entry.path))


def _unverified_test(verified: Verified | None, root: Path, base: Path) -> Callable[[Entry], bool] | None:
    """For a verified scan: a test that is true for a walked entry the verification did not cover.

    A name of the manifest is covered as what was hashed: a file the scan reads through the
    verification (or, hashed through a link under ``--unsafe-allow-symlinks``, a link); met as a
    link, a FIFO or another special file (put in its place after the check) it is not. Any other
    name is covered only when the verification accepted it on purpose (``Verified.exempt``: under
    an ``--unsafe-ignore`` path, or the very signature file that was read; never a folder, link or
    other file in the signature's place, nor anything under its name), or under
    ``--unsafe-allow-extra``.
    """
    if verified is None:
        return None
    refs = {ref.rel: ref for ref in verified._files}
    allow_extra = "unsafe-allow-extra" in verified.unsafe
    name_of = _entry_name(root, base)

    def test(entry: Entry) -> bool:
        name = name_of(entry)
        if name is None:
            return True
        if entry.kind == "bookkeeping":
            # a folder of the Hugging Face cache, never read: its empty markers are not entries
            # (nor ever loaded), anything else in it is an entry of its own, checked as any other
            return False
        ref = refs.get(name)
        if ref is not None:
            return not (entry.kind == "file" or (ref.via_symlink and entry.kind == "symlink"))
        return not allow_extra and not verified.exempt(name, entry.path)

    return test


def _verified_reader(verified: Verified, root: Path, base: Path) -> Callable[[Path, int], bytes | None]:
    """``ReadContext.read_verified`` of a verified scan's folder checks: a name of the manifest is
    read through ``Verified.open`` (the bytes hashed again into a sealed copy, whatever lies on
    disk now), a name verification accepted unchecked from disk (None), any other name not at all
    (IntegrityError: the walk reports it as unverified)."""
    from airlock.errors import FormatError, IntegrityError

    sizes = {f.path: f.size for f in verified.manifest.files}
    allow_extra = "unsafe-allow-extra" in verified.unsafe
    name_of = _verified_name(root, base)

    def read(path: Path, limit: int) -> bytes | None:
        name = name_of(path)
        if name is None:
            if base != root:
                return None  # a neighbour of the one file scanned: its findings are not reported
            raise IntegrityError(f"changed after verification: {path} lies outside the verified folder")
        size = sizes.get(name)
        if size is None:
            if allow_extra or verified.exempt(name, path):
                return None
            raise IntegrityError(f"changed after verification: {name} is not in the verified manifest")
        if size > limit:  # before the sealed copy is made: it holds the whole file
            raise FormatError(f"{size} bytes exceeds limit max_header_bytes {limit}")
        with verified.open(name) as handle:
            return handle.read(limit + 1)

    return read


def _missing(verified: Verified | None, entries: list[Entry], root: Path, base: Path) -> list[str]:
    """The manifest's names the walk did not meet (deleted, or a folder now, since the check)."""
    if verified is None:
        return []
    from airlock.integrity._walk import is_excluded  # only for a verified scan (loaded already)

    name_of = _entry_name(root, base)
    met = {name_of(entry) for entry in entries}
    # empty markers in the Hugging Face cache's bookkeeping folders are not entries of their own
    books = tuple(n for e in entries if e.kind == "bookkeeping" and (n := name_of(e)) is not None)
    return [f.path for f in verified.manifest.files if f.path not in met and not is_excluded(f.path, books)]


def _folder_report(display: str, issues: list[Issue], limits: Limits, fmt: str | None) -> FileReport:
    collector = Collector(display, limits)
    for issue in issues:
        collector.add((), issue)
    return collector.report(fmt, 0, 0.0)


def _symlink_report(entry: Entry, limits: Limits) -> FileReport:
    collector = Collector(entry.display, limits)
    collector.add(
        (),
        Issue(
            "fs.symlink-outside",
            Severity.SUSPICIOUS,
            f"symlink to {entry.target} leaves the scanned folder, loops, or is a Hugging Face cache link "
            "that is not a file of its repository; not followed, so its target is unscanned",
        ),
    )
    return collector.report(None, 0, 0.0)
