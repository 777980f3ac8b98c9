"""Observability: Prometheus metrics (own registry, served on the loopback admin port) and JSON logs."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["JsonFormatter", "Metrics", "configure_json_logs"]

#: LogRecord attributes that are not "extra" fields
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "airlock_requests", "Requests answered, by tenant, model and HTTP status",
            ["tenant", "model", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "airlock_request_seconds", "Time from request to response for inference calls",
            ["tenant", "model"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.limited = Counter(
            "airlock_rate_limited", "Requests refused by a tenant budget (429)",
            ["tenant", "budget"], registry=self.registry,
        )  # fmt: skip
        self.restarts = Counter(
            "airlock_worker_failures", "Workers that crashed or timed out and were replaced",
            ["tenant", "model", "reason"], registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "airlock_in_flight", "Inference requests in flight", ["tenant"], registry=self.registry
        )
        self.tokens = Counter(
            "airlock_tokens", "Text tokens used, by tenant, model and kind (prompt, completion)",
            ["tenant", "model", "kind"], registry=self.registry,
        )  # fmt: skip
        self.unauthenticated = Counter(
            "airlock_unauthenticated", "Requests refused with 401", registry=self.registry
        )
        # the text guard (docs/serve.md, "Guarding text"): decisions and rule ids, never text
        self.guard_decisions = Counter(
            "airlock_guard_decisions", "Guard decisions on text, by model, direction (input, output) and decision",
            ["model", "direction", "decision"], registry=self.registry,
        )  # fmt: skip
        self.guard_findings = Counter(
            "airlock_guard_findings", "Guard findings on text, by model, direction and rule id",
            ["model", "direction", "rule"], registry=self.registry,
        )  # fmt: skip
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.audit_failures = Counter(
            "airlock_audit_failures", "Audit rows that could not be written (each refused a request)",
            registry=self.registry,
        )  # fmt: skip

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the per-request metrics are looked up without
        prometheus_client's lock and label checks. Label values are configured names and fixed
        statuses only, so the table stays as small as the metrics themselves."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def watch(self, name: str, help_text: str, read: Callable[[], Mapping[tuple[str, ...], float]],
              labels: tuple[str, ...], *, gauge: bool = False) -> None:  # fmt: skip
        """Export counts kept elsewhere (the pre-auth guard, the lanes), read at scrape time."""
        self.registry.register(_Read(name, help_text, read, labels, gauge))


class _Read(Collector):
    def __init__(
        self, name: str, help_text: str, read: Callable[[], Mapping[tuple[str, ...], float]],
        labels: tuple[str, ...], gauge: bool,
    ) -> None:  # fmt: skip
        self.name, self.help, self.read, self.labels, self.gauge = name, help_text, read, labels, gauge

    def collect(self) -> Iterable[Metric]:
        family: CounterMetricFamily | GaugeMetricFamily
        if self.gauge:
            family = GaugeMetricFamily(self.name, self.help, labels=list(self.labels))
        else:
            family = CounterMetricFamily(self.name, self.help, labels=list(self.labels))
        for values, number in self.read().items():
            family.add_metric(list(values), number)
        yield family


#: no log field is longer than this (a caller's bytes can reach a log only through a bug; even then
#: a line stays bounded)
MAX_FIELD: Final = 512


_PLAIN: Final = frozenset({int, float, bool, type(None)})
#: one encoder for every line (json.dumps with options builds a new one per call)
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def _bounded(value: object) -> object:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is str and len(value) <= MAX_FIELD:  # type: ignore[arg-type]
        return value
    if isinstance(value, int | float | bool | type(None)):
        return value
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_FIELD else text[:MAX_FIELD] + "...[truncated]"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra`` field.

    Strings are bounded (:data:`MAX_FIELD`) and JSON-escaped (control characters, quotes and
    non-ASCII included), so no field can forge or flood a log line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _bounded(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key[:64]] = _bounded(value)
        return _ENCODER.encode(entry)


def configure_json_logs(level: int = logging.INFO) -> None:
    """Send airlock.gateway and uvicorn logs to stderr as JSON lines.

    For the ``airlock serve`` process: records no longer collect what no line shows (the calling
    source line, which walks the stack, and thread and process names), the optimisations the
    logging documentation lists; a line per request is then a fraction of the cost."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("airlock.gateway", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # the PostgreSQL pool's own reconnection warnings ([state] url), as JSON lines like the rest
    pool = logging.getLogger("psycopg.pool")
    pool.handlers[:] = [handler]
    pool.propagate = False


def now() -> float:
    return time.time()
