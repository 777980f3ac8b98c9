"""Scanning many files in forked worker processes, cheaply enough to pay on small files.

A pool of ``concurrent.futures`` workers cost more than it saved on a tree of small files (2,000 of
them: 1.1 s in one process, 3 s with two jobs): every task crossed a queue, a feeder thread and a
result pipe, and the parent spent its time feeding them instead of scanning. Here

* the work is cut into batches before any worker starts (:func:`batches`): a large file alone,
  small files together up to :data:`BATCH_FILES` files or :data:`BATCH_BYTES` bytes, largest first,
  so the last batch to finish is a small one and nobody idles behind a big file started late;
* the batch numbers are written once into a pipe, and every process (the parent too: it scans, it
  does not idle) takes the next number by reading four bytes from it (a pipe read is atomic), so a
  batch costs one ``read`` to hand out and nobody waits on the parent;
* workers are ``fork``\\ ed: they inherit the imported modules, the tasks and what every file shares
  (folder, limits, policy, verification) as they are, nothing is pickled to them;
* a worker appends each finished batch (its records, :func:`airlock._scan.records.pack`) to an
  anonymous in-memory file of its own, which the parent reads frame by frame as they complete
  (between its own batches, and while the worker finishes), so a worker never blocks on the
  parent; a four-byte note on a second pipe tells the parent's progress display that a batch is
  done; its last frame is an end frame, and the parent waits for that, not for the worker's exit
  (which tears down its copy of the address space): the workers are reaped after the report
  (:func:`reap_after`), killed if they linger;
* a worker parses untrusted bytes, so its answer is untrusted too: never unpickled, only records
  of a fixed shape, each value checked (:func:`airlock._scan.records.unpack`); an answer that does
  not fit makes every file of its batch an ERROR (``scan.bad-result``), never clean; a second
  answer for one batch too;
* results come back by the files' places in the walk, so a report is the same bytes for any number
  of jobs (apart from timings).

Fail closed: a batch whose results are not all back when its worker has exited (the worker was
killed, ran out of memory, crashed) is scanned again one file per fresh process (never in the
parent, which a file that kills its scanner would kill too); a file whose own process dies is
reported as an ERROR (``scan.worker-died``), never left out and never clean. The parent scans
batches too, so a file that kills the process scanning it ends the whole scan when the parent drew
it (no report, a non-zero exit: closed too, never a shorter or cleaner report); which process draws
which batch is a race. A worker looks for its parent between two batches and stops when it is gone.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from airlock import _progress
from airlock._formats.base import Issue
from airlock._scan.collect import Collector
from airlock._scan.engine import scan_file
from airlock.errors import AirlockError
from airlock.limits import Limits
from airlock.policy import Policy
from airlock.results import FileReport, Severity, Skipped

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, NamedTuple

    from airlock.integrity import Verified
else:
    from airlock._record import NamedTuple

__all__ = [
    "AUTO_MIN_BYTES",
    "AUTO_MIN_FILES",
    "BATCH_BYTES",
    "BATCH_FILES",
    "MAX_BATCHES",
    "Task",
    "auto_jobs",
    "batches",
    "reap_after",
    "run",
]

#: small files one batch holds at most (a batch is one hand-out to a process)
BATCH_FILES: Final = 64
#: bytes one batch of small files holds at most; a file this size or larger is a batch of its own
BATCH_BYTES: Final = 8 * 1024 * 1024
#: batches one scan is cut into at most: their numbers fill the hand-out pipe before any worker
#: starts, four bytes each, so they must fit in the smallest buffer a pipe may have (one page:
#: Linux gives new pipes of a user over ``pipe-user-pages-soft`` only that)
MAX_BATCHES: Final = 1024
#: with ``jobs=None`` (the CLI's default) a scan uses worker processes from this many files ...
AUTO_MIN_FILES: Final = 256
#: ... or from this many bytes in two or more files (then one file takes long enough to pay a fork)
AUTO_MIN_BYTES: Final = 256 * 1024 * 1024
#: workers ``jobs=None`` uses at most (each holds its own read buffers)
AUTO_MAX_JOBS: Final = 8

#: with this many batches or more, the last _TAIL are cut in _TAIL_SPLIT (:func:`batches`)
_TAIL_FROM: Final = 8
_TAIL: Final = 4
_TAIL_SPLIT: Final = 4

_NUMBER = struct.Struct("<I")  # a batch number on the pipes
_FRAME = struct.Struct("<IQ")  # a batch's results in a worker's file: number, length of its records
#: the number of a worker's last frame (length 0): it has written every answer it will write
_END: Final = 0xFFFFFFFF
#: SIGKILL, which POSIX (XSI) numbers 9: ``import signal`` builds its enums (~1-4 ms measured),
#: and every scan with workers now kills them on its way to the report
_SIGKILL: Final = 9


class Task(NamedTuple):
    """One file to scan: what differs from file to file (the rest is :class:`_Shared`)."""

    position: int  # the file's place in the walk (the report keeps that order)
    path: Path
    display: str
    size: int
    rel: str | None
    blob: Path | None
    folder_issues: tuple[Issue, ...]
    aliases: tuple[str, ...]


class _Shared(NamedTuple):
    base: Path
    limits: Limits
    policy: Policy
    verified: Verified | None
    folder_format: str | None


Result = tuple[int, FileReport | Skipped]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def auto_jobs(files: int, total_bytes: int) -> int:
    """Processes for ``jobs=None``: the CPUs available (at most :data:`AUTO_MAX_JOBS`) when the
    scan is big enough to pay for them, else 1 (no worker at all)."""
    cpus = min(available_cpus(), AUTO_MAX_JOBS)
    if cpus < 2 or files < 2:
        return 1
    if files >= AUTO_MIN_FILES or total_bytes >= AUTO_MIN_BYTES:
        return min(cpus, files)
    return 1


def batches(tasks: list[Task]) -> list[list[Task]]:
    """Largest files first; a file of :data:`BATCH_BYTES` or more alone, smaller ones grouped by
    :data:`BATCH_FILES` (more per batch when that would make more than :data:`MAX_BATCHES`); of
    many batches, the last few are cut in four."""
    per_batch = max(BATCH_FILES, -(-len(tasks) // (MAX_BATCHES // 2)))
    out: list[list[Task]] = []
    current: list[Task] = []
    held = 0
    for task in sorted(tasks, key=lambda t: (-t.size, t.position)):
        if task.size >= BATCH_BYTES:
            out.append([task])
            continue
        if current and (len(current) >= per_batch or held + task.size > BATCH_BYTES):
            out.append(current)
            current, held = [], 0
        current.append(task)
        held += task.size
    if current:
        out.append(current)
    if len(out) > MAX_BATCHES:  # more than MAX_BATCHES / 2 files of BATCH_BYTES or more
        return [[task for batch in out[i::MAX_BATCHES] for task in batch] for i in range(MAX_BATCHES)]
    if len(out) >= _TAIL_FROM and len(out) + _TAIL * (_TAIL_SPLIT - 1) <= MAX_BATCHES:
        # The last batches are cut smaller: the processes then finish closer together (the one
        # that draws the last batch is the one the others wait for).
        tail = [batch[i::_TAIL_SPLIT] for batch in out[-_TAIL:] for i in range(_TAIL_SPLIT)]
        out[-_TAIL:] = [part for part in tail if part]
    return out


def _one(task: Task, shared: _Shared) -> FileReport | Skipped:
    return scan_file(
        task.path, task.display, shared.base, shared.limits, shared.policy, shared.verified, task.rel,
        blob=task.blob, folder_issues=task.folder_issues, folder_format=shared.folder_format,
        aliases=task.aliases,
    )  # fmt: skip


def run(
    tasks: list[Task],
    jobs: int,
    *,
    base: Path,
    limits: Limits,
    policy: Policy,
    verified: Verified | None,
    folder_format: str | None,
    advance: Callable[[int, int], None],
    parent_scans: bool = True,
) -> Iterator[Result]:
    """Scan ``tasks`` in ``jobs`` processes (this one included unless ``parent_scans`` is false:
    then in ``jobs`` workers); ``advance(bytes, files)`` after each file (one process) or batch."""
    shared = _Shared(base, limits, policy, verified, folder_format)
    if (jobs == 1 and parent_scans) or len(tasks) < 2 or not hasattr(os, "fork"):
        for task in tasks:
            yield task.position, _one(task, shared)
            advance(task.size, 1)
        return
    work = batches(tasks)
    results: dict[int, list[Result]] = {}
    if not (yield from _run_batches(work, jobs, shared, advance, parent_scans, results)):
        for task in tasks:  # pragma: no cover - the batch numbers did not fit in the pipe
            yield task.position, _one(task, shared)
            advance(task.size, 1)
        return
    lost = [task for number, batch in enumerate(work) if number not in results for task in batch]
    yield from _rescue(lost, jobs, shared, advance)


def _run_batches(
    work: list[list[Task]],
    jobs: int,
    shared: _Shared,
    advance: Callable[[int, int], None],
    parent_scans: bool,
    results: dict[int, list[Result]],
) -> Generator[Result, None, bool]:
    """Hand out ``work`` through a pipe to forked workers and, with ``parent_scans``, to this
    process; fill ``results`` (batch number -> its results) with every batch that came back.
    False, with nothing started, when the batch numbers do not fit in the pipe."""
    import gc

    from airlock._scan import records  # noqa: F401 - imported once, before the workers fork

    # the parent takes a batch itself: one batch is scanned without forking anything
    workers = min(jobs - 1, len(work) - 1) if parent_scans else min(jobs, len(work))
    _reap_earlier()  # a previous scan's workers (reap_after): never more than one scan's left over
    todo_r, todo_w = os.pipe()
    done_r, done_w = os.pipe()
    children: list[tuple[int, int]] = []  # (pid, file holding its results)
    try:
        numbers = b"".join(_NUMBER.pack(n) for n in range(len(work)))  # MAX_BATCHES: one page at most
        os.set_blocking(todo_w, False)  # never wait here for a reader: none exists yet
        try:
            written = os.write(todo_w, numbers)
        except BlockingIOError:
            written = 0
        if written != len(numbers):  # pragma: no cover - a pipe smaller than a page
            return False
        os.close(todo_w)
        todo_w = -1
        # Frozen, the objects made so far are left alone by the collections of every process (a
        # collection writes to each object it walks: copied pages in the workers and the parent).
        # The command line froze its start-up objects already and keeps them frozen; a library
        # caller's objects are unfrozen again once the workers are started.
        thaw = gc.get_freeze_count() == 0
        parent = os.getpid()
        gc.freeze()
        try:
            for _ in range(workers):
                out = _results_file()
                try:
                    pid = os.fork()
                except OSError:  # no more processes (RLIMIT_NPROC): fewer workers; none: rescued
                    os.close(out)
                    break
                if pid == 0:  # pragma: no cover - the worker (its coverage is not collected)
                    for _, other in children:  # the other workers' results are not its to write
                        os.close(other)
                    _worker(work, shared, todo_r, done_w, out, parent)
                children.append((pid, out))
        finally:
            if thaw:
                gc.unfreeze()
        os.close(done_w)
        done_w = -1
        os.set_blocking(done_r, False)
        answers = {pid: _Answers(out, work, shared.limits) for pid, out in children}

        def collect(pid: int) -> Iterator[Result]:
            """What the worker ``pid`` has answered since the last look, checked."""
            for number, answer in answers[pid].take():
                found = answer
                if number in results:  # a second answer for one batch: both are in doubt
                    found = _bad(work[number], shared.limits, "two answers came back for its batch")
                results[number] = found
                yield from found

        if parent_scans:
            while (number := _take(todo_r, len(work))) is not None:
                if number in results:
                    break  # handed out twice: the pipe was tampered with (the rest is rescued)
                batch = work[number]
                mine = [(task.position, _one(task, shared)) for task in batch]
                results[number] = mine
                yield from mine
                advance(sum(task.size for task in batch), len(batch))
                _advance_done(done_r, work, advance)
                # the workers' answers are checked between the parent's own batches (which the
                # workers then take more of), not all after the workers have exited
                for pid, _ in children:
                    yield from collect(pid)
        # No batch is left to take: wait for the workers' last answers (each ends its results
        # file with an end frame), not for their exits (an exit tears down the worker's copy of
        # the address space: a millisecond or more that the report need not wait for).
        yield from _last_answers(children, answers, collect, done_r, work, advance)
        return True
    finally:
        for fd in (todo_r, todo_w, done_r, done_w):
            if fd >= 0:
                os.close(fd)
        for pid, out in children:  # only left running when the parent fails (Ctrl-C)
            _reap(pid)
            os.close(out)


def _last_answers(
    children: list[tuple[int, int]],
    answers: dict[int, _Answers],
    collect: Callable[[int], Iterator[Result]],
    done_r: int,
    work: list[list[Task]],
    advance: Callable[[int, int], None],
) -> Iterator[Result]:
    """Read each worker's answers until its end frame (then it is reaped later, :func:`_reap_later`)
    or its exit (a worker that died: what it wrote before counts, the rest is rescued). Removes
    each worker from ``children`` (closing its results file) once done with it.

    Between two looks the parent sleeps in ``poll`` on the progress pipe (a worker writes a note
    after each answer and after its end frame) and on a pidfd per worker (readable at its exit);
    where pidfds are missing, a look every 20 ms finds the exits (``waitpid`` with ``WNOHANG``)."""
    import select

    waiter = select.poll()
    waiter.register(done_r, select.POLLIN)
    pidfds: dict[int, int] = {}
    for pid, _ in children:
        try:
            pidfds[pid] = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux 5.3+: the timeout below finds the exits
            continue
        waiter.register(pidfds[pid], select.POLLIN)
    try:
        while children:
            for pid, out in list(children):
                yield from collect(pid)
                if answers[pid].ended:  # every answer it wrote is read; it is leaving
                    gone = True
                    _reap_later(pid)
                else:
                    exited, _ = os.waitpid(pid, os.WNOHANG)
                    # its exit status is not what counts: which batches came back is
                    gone = exited == pid
                    if gone:
                        _advance_done(done_r, work, advance)
                        yield from collect(pid)  # all it wrote before it exited
                if gone:
                    children.remove((pid, out))
                    os.close(out)
                    if pid in pidfds:
                        waiter.unregister(pidfds[pid])
                        os.close(pidfds.pop(pid))
            if not children:
                break
            for fd, event in waiter.poll(None if len(pidfds) == len(children) else 20):
                if fd == done_r and event & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    waiter.unregister(done_r)  # every worker closed it: the pidfds (or the timeout) remain
            _advance_done(done_r, work, advance)
    finally:
        for fd in pidfds.values():
            os.close(fd)


#: workers to reap when the outermost :func:`reap_after` of their thread ends (None: none open)
_later: list[int] | None = None
_later_thread = 0


@contextlib.contextmanager
def reap_after() -> Iterator[None]:
    """Within it, a worker that has given all its answers (its end frame) is killed at once but
    reaped as the block ends (or as the next scan starts), not as its scan ends: the command line
    writes its report while the workers' exits run. Reaped also when the block ends with an
    exception."""
    import _thread

    global _later, _later_thread
    if _later is not None and _later_thread == _thread.get_ident():
        yield  # nested: the outermost block reaps
        return
    if _later is not None:  # another thread's block: this one reaps as its scans end
        yield
        return
    _later, _later_thread = [], _thread.get_ident()
    try:
        yield
    finally:
        pids, _later = _later, None
        for pid in pids:
            _reap(pid)


def _reap_earlier() -> None:
    """Reap the workers this thread's :func:`reap_after` holds from earlier scans (each has
    written its end frame long ago): ``airlock scan`` of many paths keeps at most one scan's
    workers unreaped (each would hold a process slot, RLIMIT_NPROC)."""
    if _later:
        import _thread

        if _later_thread == _thread.get_ident():
            while _later:
                _reap(_later.pop())


def _reap_later(pid: int) -> None:
    """Kill ``pid`` (a worker that wrote its end frame: it has nothing left to do) and reap it now,
    or at the end of this thread's :func:`reap_after`. The kill is at once either way: a worker
    taken over that lingers after its end frame does nothing more while the report is made (a
    signal costs no wait; the exit it causes is what the reaping waits for)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, _SIGKILL)
    if _later is not None:
        import _thread

        if _later_thread == _thread.get_ident():
            _later.append(pid)
            return
    _reap(pid)


def _rescue(
    lost: list[Task], jobs: int, shared: _Shared, advance: Callable[[int, int], None]
) -> Iterator[Result]:
    """Scan each file of a batch whose worker died in a process of its own (at most ``jobs`` at
    a time): the files that did not kill it get their report, the one that did an ERROR."""
    running: dict[int, tuple[Task, int]] = {}  # pid -> (task, its results file)
    pending = list(reversed(lost))
    parent = os.getpid()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop()
                out = _results_file()
                try:
                    pid = os.fork()
                except OSError as exc:
                    os.close(out)
                    raise AirlockError(f"cannot start a scan worker process: {exc.strerror}") from exc
                if pid == 0:  # pragma: no cover - the worker
                    for _, other in running.values():  # the other workers' results are not its
                        os.close(other)
                    _worker([[task]], shared, -1, -1, out, parent)
                running[pid] = (task, out)
            pid = next(iter(running))  # the oldest (never os.wait: it would reap the caller's children)
            _, status = os.waitpid(pid, 0)
            task, out = running.pop(pid)
            found = dict(_read_results(out, [[task]], shared.limits))
            os.close(out)
            if 0 in found:
                yield from found[0]
            else:
                yield task.position, _died(task, shared.limits, status)
            advance(task.size, 1)
    finally:
        for pid, (_, out) in running.items():
            _reap(pid)
            os.close(out)


def _died(task: Task, limits: Limits, status: int) -> FileReport:
    how = (
        f"killed by signal {os.WTERMSIG(status)}"
        if os.WIFSIGNALED(status)
        else f"exit status {os.waitstatus_to_exitcode(status)}"
    )
    collector = Collector(task.display, limits)
    for issue in task.folder_issues:
        collector.add((), issue)
    collector.add(
        (),
        Issue(
            "scan.worker-died",
            Severity.ERROR,
            f"the process scanning this file died ({how}; out of memory, killed, or a crash) before it "
            "reported: not proven clean",
        ),
    )
    return collector.report(None, task.size, 0.0, task.blob)


def _worker(work: list[list[Task]], shared: _Shared, todo: int, done: int, out: int, parent: int) -> None:
    """A forked worker: scan the batches it takes (all of ``work`` when ``todo`` is -1), append
    their results to ``out``, and leave without running the parent's exit handlers — also as soon
    as it sees, between two batches, that ``parent`` is gone (killed: nobody will read the results,
    and the worker must not scan on for minutes)."""
    from airlock._scan.records import pack

    code = 1
    try:
        _progress.forget()  # the parent counts the batches; a worker draws nothing
        if done >= 0:
            os.set_blocking(done, False)  # progress notes only: dropped when the parent lags
        numbers = iter(range(len(work))) if todo < 0 else iter(lambda: _take(todo, len(work)), None)
        for number in numbers:
            if os.getppid() != parent:
                break
            found = [(task.position, _one(task, shared)) for task in work[number]]
            records = pack(found)
            _write_all(out, _FRAME.pack(number, len(records)) + records)
            if done >= 0:
                with contextlib.suppress(BlockingIOError):
                    os.write(done, _NUMBER.pack(number))
        # the end frame: every answer of this worker is written (the parent stops waiting for it)
        _write_all(out, _FRAME.pack(_END, 0))
        if done >= 0:
            with contextlib.suppress(BlockingIOError):
                os.write(done, _NUMBER.pack(_END))  # names no batch: a wake-up, not progress
        code = 0
    except KeyboardInterrupt:
        pass
    except BaseException:  # a worker reports through its exit status
        import traceback

        # Straight to the descriptor: sys.stderr's lock may have been held by the parent's
        # progress thread at the fork, and this process has no thread to release it.
        with contextlib.suppress(OSError):
            os.write(2, traceback.format_exc().encode("utf-8", "replace"))
    finally:
        os._exit(code)


def _take(todo: int, count: int) -> int | None:
    """The next batch number from the hand-out pipe, or None when all are taken.

    Every process reads the same pipe, and a worker parses hostile files: one that reads a stray
    byte shifts every number after it. A short read, or a number that names none of the ``count``
    batches, ends the hand-out for this process (the batches nobody answered are rescued)."""
    data = os.read(todo, _NUMBER.size)
    if len(data) != _NUMBER.size:  # nothing left, or torn (a pipe read of four bytes is atomic)
        return None
    number: int = _NUMBER.unpack(data)[0]
    return number if number < count else None


def _advance_done(done: int, work: list[list[Task]], advance: Callable[[int, int], None]) -> None:
    """Count the batches workers finished since the last look (for the progress display only).

    The notes come from workers, which parse hostile files: a note is a display hint, never
    believed beyond that. A number that names no batch, or a torn note, is ignored; and one look
    reads no more than every batch's note could take, so a worker that floods the pipe cannot keep
    the parent here (what it writes beyond that waits for the next look)."""
    for _ in range(len(work) // 256 + 1):
        try:
            data = os.read(done, _NUMBER.size * 256)
        except BlockingIOError:
            return
        if not data:
            return
        whole = len(data) - len(data) % _NUMBER.size
        for (number,) in _NUMBER.iter_unpack(data[:whole]):
            if number < len(work):
                advance(sum(task.size for task in work[number]), len(work[number]))


def _results_file() -> int:
    """An anonymous file for one worker's results (memory-backed where the system has memfd)."""
    create = getattr(os, "memfd_create", None)
    if create is not None:
        try:
            fd: int = create("airlock-scan", getattr(os, "MFD_CLOEXEC", 0))
            return fd
        except OSError:  # pragma: no cover - memfd forbidden (a seccomp filter)
            pass
    import tempfile

    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Answers:
    """A worker's results file, read as it grows: its complete frames are taken (and checked,
    :func:`airlock._scan.records.unpack`) as soon as they are there. One whose answer does not fit,
    or is longer than an answer for its batch may be (not even read), is an ERROR for each file of
    its batch (``scan.bad-result``). A frame not complete when the worker has exited (it died while
    writing it) counts as not written, and so does anything after a frame that names no batch. One
    frame is read at a time: never more than one batch's answer may take.

    The file is the worker's, and a worker parses hostile files: an honest one writes each of its
    batches once, every answer believable. So after an answer that is not believed, or a second
    answer for one batch, nothing more of the file is read (a worker that wrote gigabytes of empty
    frames costs one ERROR batch, not a loop over every frame); and a file that shrinks under the
    reader (a short read) is "not complete yet"."""

    __slots__ = ("at", "ended", "fd", "limits", "seen", "stopped", "work")

    def __init__(self, fd: int, work: list[list[Task]], limits: Limits) -> None:
        self.fd = fd
        self.work = work
        self.limits = limits
        self.at = 0  # where the first frame not yet taken starts
        self.stopped = False
        #: its end frame was read: every answer the worker wrote before it is taken
        self.ended = False
        self.seen: set[int] = set()  # the batches this file has answered

    def take(self) -> list[tuple[int, list[Result]]]:
        """The frames completed since the last call, each as (batch number, its results)."""
        from airlock._scan.records import HEAD_BYTES, BadResult, answer_bytes, check_head, unpack

        out: list[tuple[int, list[Result]]] = []
        size = os.fstat(self.fd).st_size
        while not self.stopped and size - self.at >= _FRAME.size:
            head = os.pread(self.fd, _FRAME.size, self.at)
            if len(head) < _FRAME.size:
                break  # the file shrank under us: not complete (yet)
            number, length = _FRAME.unpack(head)
            if number >= len(self.work):
                # names no batch: nothing after it is believed either; the end frame (the
                # worker's last) says so on purpose
                self.stopped = True
                self.ended = number == _END and length == 0
                break
            start = self.at + _FRAME.size
            if start + length > size:
                break  # not complete (yet)
            batch = self.work[number]
            if number in self.seen:
                self.stopped = True  # a second answer for one batch: nothing more is believed
                found = _bad(batch, self.limits, "two answers came back for its batch")
            elif length > answer_bytes(self.limits, len(batch)):
                self.stopped = True
                found = _bad(batch, self.limits, f"the worker's answer for its batch is {length} bytes")
            else:
                try:
                    # the head first: an answer whose counts do not hold up is refused unread
                    check_head(os.pread(self.fd, min(length, HEAD_BYTES), start), length, batch, self.limits)
                    data = os.pread(self.fd, length, start)
                    if len(data) < length:
                        break  # the file shrank under us: not complete (yet)
                    found = unpack(data, batch, self.limits)
                except BadResult as exc:
                    self.stopped = True
                    found = _bad(
                        batch, self.limits, f"the worker's answer for its batch was not believed: {exc}"
                    )
            self.seen.add(number)
            out.append((number, found))
            self.at = start + length
        return out


def _read_results(out: int, work: list[list[Task]], limits: Limits) -> list[tuple[int, list[Result]]]:
    """The batches an exited worker wrote to ``out`` (:class:`_Answers`)."""
    return _Answers(out, work, limits).take()


def _bad(batch: list[Task], limits: Limits, message: str) -> list[Result]:
    from airlock._scan.records import bad_batch

    return bad_batch(batch, limits, "scan.bad-result", message)


def _reap(pid: int) -> None:
    try:
        os.kill(pid, _SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
