"""Judging the operators an ONNX graph runs (``GraphOp`` facts from ``_formats/onnx.py``).

An ALLOWLIST of operator domains: a node in a domain the runtimes implement themselves
(:data:`STANDARD_DOMAINS`) is data, and so is a call of a function the model defines; any other
domain names code from a custom-op library the *caller* registers (``onnx.custom-domain``,
SUSPICIOUS). A model-local function redefines what an operator name means (``onnx.function``,
SUSPICIOUS; in a standard domain it can shadow the standard operator).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from airlock._formats.base import GraphOp, Issue
from airlock.results import Severity

__all__ = ["STANDARD_DOMAINS", "judge_onnx_op"]

#: Operator domains implemented by the runtimes themselves, with no user-supplied code:
#: the ONNX standard sets ("" and "ai.onnx" are the same), ONNX-ML, the training sets, and
#: ``com.microsoft`` — onnxruntime's contrib operators, compiled into every onnxruntime build and
#: emitted by its transformer optimisers. Any other domain needs a custom-op library that the
#: *caller* registers; the model names code it does not carry, which is a policy decision.
STANDARD_DOMAINS: Final = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training", "com.microsoft"}
)
#: names kept in messages are cut to this many characters
_SHOW: Final = 200


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


def judge_onnx_op(fact: GraphOp) -> Iterator[Issue]:
    """The finding for one operator an ONNX model runs or defines (none when it is standard)."""
    domain = fact.domain
    if fact.defines is not None:
        qualified = f"{domain}::{fact.op}" if domain else fact.op
        shadow = (
            " in a standard domain, so it can shadow the standard operator"
            if domain in STANDARD_DOMAINS
            else ""
        )
        yield Issue(
            "onnx.function",
            Severity.SUSPICIOUS,
            f"model-local function {_show(qualified)!r} ({fact.defines} nodes){shadow}: it redefines an "
            "operator (expected only standard operators); its body is checked like a graph",
            offset=fact.offset,
            callable=_show(qualified),
        )
    elif domain not in STANDARD_DOMAINS and not fact.calls_function:
        op = f"{domain}::{fact.op}"
        yield Issue(
            "onnx.custom-domain",
            Severity.SUSPICIOUS,
            f"node {_show(fact.node)!r} in {fact.where} uses operator {_show(op)!r} from custom domain "
            f"{_show(domain)!r} (expected one of {', '.join(repr(d) for d in sorted(STANDARD_DOMAINS))}): "
            "it runs code from a custom-op library",
            offset=fact.offset,
            callable=_show(op),
        )
