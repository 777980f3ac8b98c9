"""template_cost's interpreter state and accounting; the mixins add statements, expressions and calls."""

from __future__ import annotations

import math

import jinja2.nodes as jn

from airlock._analysis.template_cost_values import (
    MAX_DEGREE,
    MAX_EVALUATIONS,
    MAX_STEPS,
    ZERO,
    Bound,
    Poly,
    State,
    Val,
    _Ctx,
    _show,
    _TooComplex,
    padd,
    pmul,
)


class CostBase:
    def __init__(self, tree: jn.Template, max_chars: int) -> None:
        self.max_chars = max_chars
        self.result = Bound()
        self.macros: dict[str, list[jn.Macro]] = {}
        for macro in tree.find_all(jn.Macro):
            self.macros.setdefault(macro.name, []).append(macro)
        #: macro -> the macros its body calls
        self.graph: dict[str, set[str]] = {
            name: {
                c.node.name
                for m in defs
                for c in m.find_all(jn.Call)
                if isinstance(c.node, jn.Name) and c.node.name in self.macros
            }
            for name, defs in self.macros.items()
        }
        self._cycles: dict[str, set[str]] = {}
        self._writes: dict[int, int] = {}  # by id of a loop body (the tree outlives the analysis)
        self.calls: list[str] = []  # macros being followed
        self.callers: list[tuple[list[jn.Node], State, _Ctx]] = []
        self.out: list[Poly] = [ZERO]
        self.evaluations = 0
        self._crossed: set[str] = set()

    # ---- accounting --------------------------------------------------------------------------

    def tick(self) -> None:
        self.evaluations += 1
        if self.evaluations > MAX_EVALUATIONS:
            raise _TooComplex

    def unbounded(self, why: str, node: jn.Node | None) -> None:
        if why not in self._crossed:
            self._crossed.add(why)
            self.result.findings.append((why, node))

    def steps(self, amount: Poly, ctx: _Ctx, node: jn.Node, what: str) -> None:
        if not ctx.record:
            return
        self.result.steps = padd(self.result.steps, pmul(ctx.m, amount))
        self.check("steps", self.result.steps, MAX_STEPS, node, what)

    def chars(self, amount: Poly, ctx: _Ctx, node: jn.Node, what: str) -> None:
        if not ctx.record:
            return
        self.result.chars = padd(self.result.chars, pmul(ctx.m, amount))
        self.check("chars", self.result.chars, self.max_chars, node, what)

    def check(self, measure: str, total: Poly, limit: int, node: jn.Node, what: str) -> None:
        if measure in self._crossed:
            return
        unit = "loop iterations, macro calls and list items" if measure == "steps" else "characters"
        if any(math.isinf(c) for c in total):
            why = f"{what} makes the {unit} of one rendering unbounded"
        elif len(total) - 1 > MAX_DEGREE:
            why = (
                f"{what} brings one rendering to {_show(total)} {unit}, D being the size of the "
                f"caller's data (a power of D above {MAX_DEGREE}: loops nested over the whole of it)"
            )
        elif any(c > limit for c in total):
            why = (
                f"{what} brings one rendering to {_show(total)} {unit}, D being the size of the "
                f"caller's data (limit {limit:,} per unit of D)"
            )
        else:
            return
        self._crossed.add(measure)
        self.result.findings.append((why, node))

    def emit(self, size: Poly, ctx: _Ctx, node: jn.Node) -> None:
        self.chars(size, ctx, node, "output")
        self.out[-1] = padd(self.out[-1], pmul(ctx.local, size))

    # ---- defined by the mixins (template_cost_stmts / _exprs / _calls) ------------------------

    def expr(self, node: jn.Node, state: State, ctx: _Ctx) -> Val:
        raise NotImplementedError

    def call(self, node: jn.Call, state: State, ctx: _Ctx) -> Val:
        raise NotImplementedError

    def filter(self, node: jn.Filter, value: Val, state: State, ctx: _Ctx) -> Val:
        raise NotImplementedError

    def filters(self, node: jn.Filter, value: Val, state: State, ctx: _Ctx) -> Val:
        raise NotImplementedError

    def built(self, value: Val, node: jn.Node, ctx: _Ctx, what: str = "a value built") -> Val:
        raise NotImplementedError

    def captured(self, body: list[jn.Node], state: State, ctx: _Ctx) -> Val:
        raise NotImplementedError

    def container(self, items: list[Val], node: jn.Node, ctx: _Ctx) -> Val:
        raise NotImplementedError

    def printf(self, fmt: Val, args: list[Val], node: jn.Node, ctx: _Ctx) -> Val:
        raise NotImplementedError

    def width(self, spec: str, args: list[Val]) -> Poly:
        raise NotImplementedError
