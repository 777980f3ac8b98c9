"""Suite-wide fixtures."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

#: loggers ``airlock serve`` configures for its own process (airlock.gateway._observe.configure_json_logs)
_SERVE_LOGGERS = ("airlock.gateway", "uvicorn", "uvicorn.error", "psycopg.pool")
_LOGGING_FLAGS = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs ``airlock serve`` in this process (``main(["serve", ...])``) leaves its
    JSON handlers and ``propagate = False`` on the gateway's loggers; later tests that read log
    records (pytest's ``caplog``) would see none. Put every such setting back after each test."""
    loggers = [logging.getLogger(name) for name in _SERVE_LOGGERS]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    flags = {name: getattr(logging, name) for name in _LOGGING_FLAGS}
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
    for name, value in flags.items():
        setattr(logging, name, value)
