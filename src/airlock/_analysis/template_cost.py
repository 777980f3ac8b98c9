"""An upper bound on the work of rendering a template, from its structure alone (never rendered).

A template can exhaust the renderer without any forbidden construct: loops nested inside loops,
a string doubled in a loop through a ``namespace``, ``'x' * n``, ``'x'|center(n)``,
``'%0999999999d'|format(1)``, ``batch``/``slice`` with a huge count, recursion of a macro or of a
``loop()``. This module abstractly interprets the template over sizes instead of values and
bounds two measures of one rendering:

* **steps**: loop iterations, macro calls and list items built or walked by filters;
* **chars**: characters of every string built and every value output (memory and output).

Every bound is a polynomial in ``D``, the size of the caller's data (the ``messages``, ``tools``
and every other variable the runtime passes: each list has at most ``D`` items, each string at
most ``D`` characters; a *number* read out of it may be anything, so one that sizes something —
a range, a repetition count, a width — makes the bound infinite). A loop over caller data counts
``D`` iterations; the first loop over a piece of the item of an enclosing loop over caller data
(``message.tool_calls``) counts nothing more (the pieces of all items together are at most
``D``). The template's own factors are the polynomial's coefficients; the template is SUSPICIOUS
(``template.resource``) when

* a coefficient of steps exceeds :data:`MAX_STEPS` (100,000: jinja's sandbox bound on one
  ``range``, here over the whole rendering, per unit of caller data),
* a coefficient of chars exceeds ``max_template_bytes`` (a template may output its own text once
  per unit of caller data, not more),
* the degree in ``D`` exceeds :data:`MAX_DEGREE` (nested loops over the whole of the caller's data),
* or no bound exists: a value that grows faster than linearly per loop iteration over more than
  :data:`MAX_SIMULATED` iterations (``s ~ s``), a macro or ``loop()`` recursion that is not driven
  by a strictly smaller piece of caller data and branches, or a template too complex to bound
  within :data:`MAX_EVALUATIONS` abstract steps (fail closed).

Sizes are over-approximated: both branches of an ``if`` are taken, a variable keeps the largest
size it has anywhere, sizes inside a loop are those after its last iteration.
"""

from __future__ import annotations

import jinja2.nodes as jn

from airlock._analysis.template_cost_calls import Calls
from airlock._analysis.template_cost_exprs import Expressions
from airlock._analysis.template_cost_stmts import Statements
from airlock._analysis.template_cost_values import (
    MAX_DEGREE,
    MAX_EVALUATIONS,
    MAX_MACRO_DEPTH,
    MAX_SIMULATED,
    MAX_STEPS,
    ONE,
    Bound,
    _Ctx,
    _TooComplex,
)

__all__ = [
    "MAX_DEGREE",
    "MAX_EVALUATIONS",
    "MAX_MACRO_DEPTH",
    "MAX_SIMULATED",
    "MAX_STEPS",
    "Bound",
    "bound_template",
]


def bound_template(tree: jn.Template, max_chars: int) -> Bound:
    """Bound the work of one rendering of ``tree``; findings say which limit it crosses and where."""
    analysis = _Cost(tree, max_chars)
    try:
        analysis.block(tree.body, {}, _Ctx(ONE, ONE, True))
    except _TooComplex:
        analysis.unbounded(f"too complex to bound within {MAX_EVALUATIONS} abstract evaluations", None)
    except RecursionError:
        analysis.unbounded("nested too deeply to bound", None)
    return analysis.result


class _Cost(Statements, Expressions, Calls):
    """The whole interpreter: statements and loops, expressions, filters and calls over :class:`CostBase`."""
