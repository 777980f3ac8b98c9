"""Observability: Prometheus metrics (own registry, served on the loopback admin port) and JSON logs."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.unauthenticated = Counter(
            "airlock_unauthenticated", "Requests refused with 401", registry=self.registry
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        return json.dumps(entry, separators=(",", ":"))


def configure_json_logs(level: int = logging.INFO) -> None:
    """Send airlock.gateway and uvicorn logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("airlock.gateway", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def now() -> float:
    return time.time()
