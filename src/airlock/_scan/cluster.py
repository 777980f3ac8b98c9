"""``airlock scan --ray ADDRESS``: the files of one or more scans read by the workers of a Ray cluster.

The trusted client (the ``airlock scan`` process) walks every PATH and runs the folder checks
itself (:func:`airlock._scan.api.plan_scan`), exactly as a local scan does; only the reading of
the files is fanned out. Each Ray task is one batch of files (:func:`airlock._scan.pool.batches`)
that a worker scans with airlock's own engine (:func:`airlock._scan.engine.scan_file`, the code
the local scan runs) and answers with a small JSON record per file: never the bytes, never a
Python object of the worker's choosing (:func:`decode`). So the report is the local scan's, byte
for byte apart from timings.

* **Token authentication, always.** The client sets ``RAY_AUTH_MODE=token`` for itself and refuses
  to start without a token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or Ray's default file).
  A cluster started without ``RAY_AUTH_MODE=token`` lets any client in, so before connecting the
  client checks (:func:`_probe`) that the cluster answers its token and refuses a random one.
  Usage statistics are off (``RAY_USAGE_STATS_ENABLED=0``).
* **Bounded in-flight work**: at most :func:`in_flight` batches are submitted at once (twice the
  cluster's CPUs, at most :data:`MAX_IN_FLIGHT`); results stream back as they finish.
* **A worker that dies re-queues its files** (Ray's own retries are off so every death is seen):
  the batch runs again; a batch that failed twice runs again file by file, so a file that kills
  its worker each time costs only itself: after :data:`MAX_ATTEMPTS` deaths it is an ERROR
  (``cluster.worker-died``), never missing and never clean.
* **Worker answers are checked** (:func:`decode`): one record per file of the batch, the right
  names, the documented shape and bounded size; the verdict is derived here from the findings.
  Anything else makes each file of the batch an ERROR (``cluster.bad-result``).
* **A worker's answer runs no code here** (:func:`_stored`): ``ray.get`` unpickles what a worker
  stored (its return value or its exception), so the client never calls it on an answer; it reads
  the stored bytes and Ray's type tag itself and believes only raw bytes (outside review 15).

The workers must see the files at the same paths as the client (a shared or identically mounted
file system, the Hugging Face cache included) and run the same airlock version (checked).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from airlock import __version__, _progress
from airlock._scan.pool import BATCH_FILES, Task, _one, _Shared, batches
from airlock._scan.records import (
    SEVERITIES,
    BadResult,
    answer_bytes,
    bad_batch,
    error,
    judge,
    judge_skipped,
    max_findings,
)
from airlock.errors import AirlockError, UsageError
from airlock.limits import Limits
from airlock.results import FileReport, Finding, Location, Skipped

if TYPE_CHECKING:
    from airlock._scan.api import Plan

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_IN_FLIGHT",
    "PROTOCOL",
    "batch_seconds",
    "connect",
    "decode",
    "encode",
    "in_flight",
    "run_plans",
    "scan_batch",
]

#: version of the record a worker sends back (bumped on any change of its shape)
PROTOCOL: Final = 1
#: how often a file may see its worker die before it is reported as ``cluster.worker-died``
MAX_ATTEMPTS: Final = 3
#: batches in flight at most, whatever the cluster's size (each holds a result in the object store)
MAX_IN_FLIGHT: Final = 256
#: seconds a batch's deadline adds for starting a worker and carrying its answer back
_START_SLACK: Final = 30.0
#: the type tag Ray stores ``bytes`` under (its ``OBJECT_METADATA_TYPE_RAW``): no pickle in them
_RAW: Final = b"RAW"
#: how long the token probes (:func:`_probe`) wait for the cluster's GCS
_PROBE_TIMEOUT_MS: Final = 10_000


# -- the worker's side -----------------------------------------------------------------------


def scan_batch(shared: _Shared, batch: list[Task]) -> bytes:
    """Run in a Ray worker: scan each file of ``batch`` as a local scan does; JSON records back."""
    _progress.forget()  # a worker draws nothing
    return encode([(task.position, _one(task, shared)) for task in batch])


def encode(results: list[tuple[int, FileReport | Skipped]]) -> bytes:
    """The records of one batch (what :func:`decode` reads)."""
    records: list[dict[str, Any]] = []
    for position, result in results:
        if isinstance(result, Skipped):
            records.append({"p": position, "path": result.path, "skipped": result.reason})
            continue
        findings = [
            [f.rule, f.severity.value, f.message, list(f.location.members), f.location.offset, f.callable,
             f.evidence, f.count]
            for f in result.findings
        ]  # fmt: skip
        records.append(
            {
                "p": position,
                "path": result.path,
                "format": result.format,
                "size": result.size,
                "seconds": result.seconds,
                "blob": result.blob,
                "findings": findings,
            }
        )
    document = {"protocol": PROTOCOL, "airlock": __version__, "results": records}
    return json.dumps(document, ensure_ascii=True, allow_nan=False).encode("ascii")


# -- the client's side -----------------------------------------------------------------------


def decode(data: object, batch: list[Task], limits: Limits) -> list[tuple[int, FileReport | Skipped]]:
    """One result per file of ``batch`` from a worker's answer, or an ERROR for each of them
    (``cluster.bad-result``) when the answer is not exactly what :func:`encode` writes for it."""
    try:
        return _decode(data, batch, limits)
    except BadResult as exc:
        return bad_batch(batch, limits, "cluster.bad-result", str(exc))


def _decode(data: object, batch: list[Task], limits: Limits) -> list[tuple[int, FileReport | Skipped]]:
    from airlock._strictjson import parse_json_strict
    from airlock.errors import FormatError

    if not isinstance(data, bytes):
        raise BadResult(f"the worker answered a {type(data).__name__}, not the JSON record")
    if len(data) > answer_bytes(limits, len(batch)):
        per_file = answer_bytes(limits, 1)
        raise BadResult(f"the worker's answer is {len(data)} bytes, more than {per_file} a file")
    try:
        document = parse_json_strict(data, "Ray worker result")
    except FormatError as exc:
        raise BadResult(f"the worker's answer is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or set(document) != {"protocol", "airlock", "results"}:
        raise BadResult("the worker's answer is not an airlock result record")
    if document["protocol"] != PROTOCOL or document["airlock"] != __version__:
        raise BadResult(
            f"the worker runs airlock {document['airlock']!r} (record {document['protocol']!r}); "
            f"this client is airlock {__version__} (record {PROTOCOL}): install the same version on the cluster"
        )
    records = document["results"]
    by_position = {task.position: task for task in batch}
    if not isinstance(records, list) or len(records) != len(batch):
        raise BadResult(f"the worker answered for {_count(records)} file(s), not {len(batch)}")
    out: list[tuple[int, FileReport | Skipped]] = []
    for record in records:
        if not isinstance(record, dict):
            raise BadResult("a record is not a JSON object")
        task = by_position.pop(_int(record.get("p"), "p"), None)
        if task is None:
            raise BadResult("a record for a file not in the batch, or two for one file")
        if record.get("path") != task.display:
            raise BadResult(f"a record names {_text(record.get('path'))} for {task.display}")
        out.append((task.position, _result(record, task, limits)))
    return out


def _result(record: dict[str, object], task: Task, limits: Limits) -> FileReport | Skipped:
    """The JSON record's types checked; what it says checked by the rules of every worker's
    answer (:func:`airlock._scan.records.judge`)."""
    if "skipped" in record:
        if set(record) != {"p", "path", "skipped"}:
            raise BadResult(f"the record of {task.display} has unexpected fields")
        return judge_skipped(task, record["skipped"])
    if set(record) != {"p", "path", "format", "size", "seconds", "blob", "findings"}:
        raise BadResult(f"the record of {task.display} has unexpected fields")
    seconds = record["seconds"]
    if not isinstance(seconds, float | int) or isinstance(seconds, bool):
        raise BadResult(f"the record of {task.display} has no valid seconds")
    findings_in = record["findings"]
    if not isinstance(findings_in, list) or len(findings_in) > max_findings(limits):
        raise BadResult(f"the record of {task.display} has no valid findings list")
    return judge(
        task,
        _opt_str(record["format"], "format"),
        _int(record["size"], "size"),
        seconds,
        _opt_str(record["blob"], "blob"),
        tuple(_finding(item, task.display) for item in findings_in),
        walked_size=True,
    )


def _finding(item: object, display: str) -> Finding:
    if not isinstance(item, list) or len(item) != 8:
        raise BadResult(f"a finding of {display} is not an 8-item list")
    rule, severity, message, members, offset, callable_, evidence, count = item
    if severity not in SEVERITIES:
        raise BadResult(f"a finding of {display} has severity {_text(severity)}")
    if not isinstance(members, list):
        raise BadResult(f"a finding of {display} has no members list")
    count_value = _int(count, "count")
    if count_value < 1:
        raise BadResult(f"a finding of {display} counts {count_value}")
    return Finding(
        rule=_str(rule, "rule"),
        severity=SEVERITIES[severity],
        message=_str(message, "message"),
        location=Location(display, tuple(_str(m, "member") for m in members), _opt_int(offset, "offset")),
        callable=_opt_str(callable_, "callable"),
        evidence=_opt_str(evidence, "evidence"),
        count=count_value,
    )


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadResult(f"field {name} is not a non-negative integer")
    return value


def _opt_int(value: object, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise BadResult(f"field {name} is not a string")
    return value


def _opt_str(value: object, name: str) -> str | None:
    return None if value is None else _str(value, name)


def _count(value: object) -> str:
    return str(len(value)) if isinstance(value, list) else "no list of"


def _text(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


# -- connecting and running ------------------------------------------------------------------


def _token_source() -> str | None:
    """Where Ray will take the token from (its own order), or None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH ({path})"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def connect(address: str) -> Any:
    """Connect to the Ray cluster at ``address`` with token authentication; return the ``ray`` module.

    Nothing is started (an address that would start a local cluster is refused) and nothing is
    sent home: usage statistics are off for this process."""
    if not address or address == "local":
        raise UsageError(
            "--ray needs the address of a running Ray cluster (HOST:PORT, or RAY_ADDRESS); "
            "airlock never starts one"
        )
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        raise UsageError(f"--ray always uses Ray token authentication; RAY_AUTH_MODE is {mode!r}")
    if _token_source() is None:
        raise UsageError(
            "--ray needs the cluster's token: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or put it in "
            "~/.ray/auth_token (ray get-auth-token); see docs/scale.md"
        )
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import logging

    import ray  # only here: the 'ray' extra (a missing one is named by the CLI)

    source = _token_source()
    cluster_id = _probe(address, None, None)
    if cluster_id is None:
        raise AirlockError(f"the Ray cluster at {address} refused the token from {source}")
    # A client with a token is let in by a cluster that checks none: make sure this one checks.
    if _probe(address, secrets.token_hex(32), cluster_id) is not None:
        raise AirlockError(
            f"the Ray cluster at {address} accepts any token: it runs without token authentication; "
            "start every node with RAY_AUTH_MODE=token and its token (docs/scale.md)"
        )
    # Ray puts the driver's current directory first on every worker's sys.path: from a folder being
    # scanned, its airlock/ package would replace the workers' scanner (outside review 2, finding 1).
    # Connect from "/" (no configuration or code is taken from the current directory).
    here = os.getcwd()
    os.chdir("/")
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=True,
            namespace="airlock-scan",
        )
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        raise AirlockError(
            f"cannot connect to the Ray cluster at {address} with token authentication "
            f"(token from {source}): {exc}"
        ) from exc
    finally:
        os.chdir(here)
    # Ray unpickles an error object that is freed unread, to log it ("Unhandled error"): what a
    # worker wrote. Every answer is read here without deserializing (_stored), so nothing is lost.
    ray._private.worker.global_worker.raise_errors = _unread_errors  # type: ignore[method-assign]
    return ray


def _unread_errors(serialized_objects: object, object_refs: object) -> None:
    """Ray's ``Worker.raise_errors`` for this client: deserializes nothing."""


def _probe(address: str, token: str | None, cluster_id: str | None) -> str | None:
    """The cluster's id (hex) if its GCS at ``address`` answers a call made with ``token`` (None:
    the configured one), None if it refuses the token; anything else fails the scan. With
    ``cluster_id`` known, the client does not ask for it first (a refused ask logs a warning)."""
    from ray._raylet import AuthenticationTokenLoader, InnerGcsClient  # type: ignore[attr-defined]
    from ray.exceptions import AuthenticationError

    saved = os.environ.get("RAY_AUTH_TOKEN")
    if token is not None:
        os.environ["RAY_AUTH_TOKEN"] = token  # Ray's first source
    AuthenticationTokenLoader.instance().reset_cache()
    try:
        client = InnerGcsClient.standalone(address, cluster_id, _PROBE_TIMEOUT_MS)
        client.internal_kv_get(b"airlock-probe", None, timeout=_PROBE_TIMEOUT_MS / 1000)
        found: str = client.cluster_id.hex()
    except AuthenticationError:
        return None
    except Exception as exc:  # Ray's client raises several types for an unreachable cluster
        raise AirlockError(f"cannot reach the Ray cluster at {address}: {type(exc).__name__}: {exc}") from exc
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        else:
            os.environ["RAY_AUTH_TOKEN"] = saved
        AuthenticationTokenLoader.instance().reset_cache()
    return found


def in_flight(cpus: float) -> int:
    """Batches submitted at once to a cluster of ``cpus`` CPUs: enough to keep each busy while
    results travel back, and never more than :data:`MAX_IN_FLIGHT`."""
    return max(2, min(MAX_IN_FLIGHT, 2 * int(cpus)))


class _Job:
    __slots__ = ("attempts", "batch", "plan")

    def __init__(self, plan: int, batch: list[Task], attempts: int) -> None:
        self.plan = plan
        self.batch = batch
        self.attempts = attempts


def run_plans(
    ray: Any, plans: list[Plan], *, note: Callable[[str], None] = lambda text: None
) -> list[dict[int, FileReport | Skipped]]:
    """Scan the tasks of every plan on the cluster ``ray`` is connected to; one result per task
    (keyed by position, per plan). ``note`` hears about each worker death and what it re-queued."""
    remote = ray.remote(num_cpus=1, max_retries=0, retry_exceptions=False)(scan_batch)
    shared = [
        ray.put(_Shared(_absolute(p.base), p.limits, p.policy, p.verified, p.folder_format)) for p in plans
    ]  # each plan's shared state travels once, not with every batch
    queue = [_Job(i, batch, 0) for i, plan in enumerate(plans) for batch in batches(plan.tasks)]
    queue.reverse()  # popped from the end: first batch first
    results: list[dict[int, FileReport | Skipped]] = [{} for _ in plans]
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        raise AirlockError("the Ray cluster has no CPU to run scans on; no report")
    limit = in_flight(cpus)
    # every batch has a deadline (batch_seconds): one that does not answer by then is cancelled
    # (its worker killed) and re-queued like a dead one. A cluster that answers nothing for as
    # long as a batch's every attempt may take has stalled (its nodes lost, its tasks never
    # scheduled): no report.
    stall = MAX_ATTEMPTS * max(batch_seconds(BATCH_FILES, p.limits) for p in plans)
    pending: dict[Any, tuple[_Job, float]] = {}  # the job and its deadline (monotonic)
    answered = time.monotonic()
    total = sum(p.total_bytes for p in plans)
    with _progress.task("scanning on the Ray cluster", total, sum(len(p.tasks) for p in plans)):
        while queue or pending:
            while queue and len(pending) < limit:
                job = queue.pop()
                batch = [  # workers run elsewhere: paths from this process's directory
                    t._replace(path=_absolute(t.path), blob=t.blob and _absolute(t.blob)) for t in job.batch
                ]
                due = time.monotonic() + batch_seconds(len(batch), plans[job.plan].limits)
                pending[remote.remote(shared[job.plan], batch)] = (job, due)
            now = time.monotonic()
            if now - answered > stall:
                raise AirlockError(f"the Ray cluster answered no scan in {stall:.0f} s; no report")
            wait = max(0.0, min([due for _, due in pending.values()] + [answered + stall]) - now)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
            if done:
                answered = time.monotonic()
            for ref in done:
                job, _ = pending.pop(ref)
                limits = plans[job.plan].limits
                decoded: list[tuple[int, FileReport | Skipped]]
                answer = _stored(ray, ref, limits, len(job.batch), stall)
                if isinstance(answer, bytes):
                    decoded = decode(answer, job.batch, limits)
                elif answer[0]:  # the worker (or its node) died
                    queue.extend(_requeue(job, answer[1], limits, results[job.plan], note))
                    continue
                else:  # the scan raised (a bug) or the worker stored no bytes: fail closed
                    decoded = bad_batch(job.batch, limits, "cluster.bad-result", answer[1])
                results[job.plan].update(decoded)
                _progress.advance(sum(t.size for t in job.batch), files=len(job.batch))
            queue.extend(_overdue(ray, pending, plans, results, note))
    return results


def batch_seconds(files: int, limits: Limits) -> float:
    """Seconds a batch of ``files`` files may take from its submission to its answer: a full batch
    ahead of it on its CPU (:func:`in_flight` is twice the CPUs), then its own files, each stopped
    at ``max_seconds_per_file`` by the engine, and the start of a worker."""
    return (BATCH_FILES + files) * limits.max_seconds_per_file + _START_SLACK


def _overdue(
    ray: Any,
    pending: dict[Any, tuple[_Job, float]],
    plans: list[Plan],
    results: list[dict[int, FileReport | Skipped]],
    note: Callable[[str], None],
) -> list[_Job]:
    """Cancel the batches past their deadline (force: their workers are killed, a worker that
    hangs forever included) and re-queue them as for a death (:func:`_requeue`)."""
    now = time.monotonic()
    again: list[_Job] = []
    for ref, (job, due) in list(pending.items()):
        if due > now:
            continue
        del pending[ref]
        with contextlib.suppress(Exception):  # it may have ended meanwhile: its answer is dropped
            ray.cancel(ref, force=True)
        limits = plans[job.plan].limits
        seconds = batch_seconds(len(job.batch), limits)
        again += _requeue(job, f"no answer in {seconds:.0f} s", limits, results[job.plan], note)
    return again


def _stored(ray: Any, ref: Any, limits: Limits, files: int, timeout: float) -> bytes | tuple[bool, str]:
    """What the task of ``ref`` stored, read WITHOUT deserializing it: the raw bytes of its answer
    (at most :func:`answer_bytes`), ``(True, why)`` for an error Ray stores when a worker or node
    is lost, ``(False, why)`` for anything else.

    ``ray.get`` unpickles what a worker stored (its return value, or the exception it raised,
    whose pickle the worker writes): a worker taken over by the bytes it parsed ran code in this
    process that way (outside review 15). Honest workers return ``bytes``, which Ray stores as raw
    bytes under the type tag ``RAW``; only those are believed, their size checked before they are
    copied. Error tags are numbers (Ray's ``ErrorType``), taken by number alone."""
    from ray.core.generated.common_pb2 import ErrorType  # type: ignore[attr-defined]

    core = ray._private.worker.global_worker.core_worker
    try:
        [stored] = core.get_objects([ref], int(timeout * 1000))
    except ray.exceptions.RayError as exc:  # lost, or not fetched in time: as a death
        return True, type(exc).__name__
    data, metadata = stored[0], stored[1]
    tag = bytes(metadata or b"").split(b",")[0]
    if tag == _RAW:
        size = 0 if data is None else len(data)
        if size > answer_bytes(limits, files):
            return False, f"the worker's answer is {size} bytes, more than {answer_bytes(limits, 1)} a file"
        return b"" if data is None else bytes(data.to_pybytes())
    if tag.isdigit() and tag.isascii():
        code = int(tag)
        if code == ErrorType.Value("TASK_EXECUTION_EXCEPTION"):
            return False, "the scan failed on the Ray worker (its exception is not read)"
        return True, ErrorType.Name(code) if code in ErrorType.values() else f"Ray error {code}"
    return False, f"the worker stored {_text(tag[:20])} data, not the JSON record's bytes"


def _absolute(path: Path) -> Path:
    """``path`` from this process's current directory, not normalised (``a/../b`` through a
    symlinked ``a`` stays what a local scan opens): a worker's current directory is another."""
    return Path(os.getcwd(), path)


def _requeue(
    job: _Job,
    what: str,
    limits: Limits,
    results: dict[int, FileReport | Skipped],
    note: Callable[[str], None],
) -> list[_Job]:
    attempts = job.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        for task in job.batch:
            results[task.position] = error(
                task,
                limits,
                "cluster.worker-died",
                f"the Ray worker scanning this file died {attempts} times ({what})",
                folder_findings=True,
            )
        _progress.advance(sum(t.size for t in job.batch), files=len(job.batch))
        note(
            f"a Ray worker died ({what}) scanning {job.batch[0].display} {attempts} times: reported as an error"
        )
        return []
    note(f"a Ray worker died ({what}); {len(job.batch)} file(s) re-queued")
    if attempts >= 2 and len(job.batch) > 1:  # a file that kills its worker costs only itself
        return [_Job(job.plan, [task], attempts) for task in reversed(job.batch)]
    return [_Job(job.plan, job.batch, attempts)]


def stderr_note(text: str) -> None:
    """``note`` for the command line: one line on stderr."""
    _progress.clear()
    print(f"airlock scan: {text}", file=sys.stderr)
