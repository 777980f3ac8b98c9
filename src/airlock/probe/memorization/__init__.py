"""Memorization audit of a model before it is published (issue 16, ``airlock probe --memorization``).

Given a model and the canaries or sensitive records put into its training data, measure each
one's *exposure* (Carlini et al., "The Secret Sharer": its rank by log-likelihood among random
texts of the same format) and whether completing its prefix *extracts* it; report which records
are at risk. The model is untrusted: it is gated like ``airlock run`` gates one and loaded,
scored and run only inside the sandbox (runtime ``lm-score``). See docs/memorization.md.

Public API::

    load_records(path) / parse_records(bytes) -> list[Record]
    audit(model, records, Settings(...), policy=..., ...) -> Report   .to_json() .to_text() .exit_code
    main(argv) -> int                                                  the command line
"""

from __future__ import annotations

from airlock.probe.memorization._audit import audit, measure
from airlock.probe.memorization._cli import add_arguments, main, run
from airlock.probe.memorization._records import (
    Record,
    Template,
    candidates,
    load_records,
    parse_records,
    parse_template,
)
from airlock.probe.memorization._report import (
    EXIT_AT_RISK,
    EXIT_CLEAN,
    SCHEMA,
    Extraction,
    RecordResult,
    Report,
    Settings,
)

__all__ = [
    "EXIT_AT_RISK",
    "EXIT_CLEAN",
    "SCHEMA",
    "Extraction",
    "Record",
    "RecordResult",
    "Report",
    "Settings",
    "Template",
    "add_arguments",
    "audit",
    "candidates",
    "load_records",
    "main",
    "measure",
    "parse_records",
    "parse_template",
    "run",
]
