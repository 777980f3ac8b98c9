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

import itertools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final, cast

import jinja2.nodes as jn

from airlock._analysis.template_fold import fold

__all__ = ["MAX_DEGREE", "MAX_EVALUATIONS", "MAX_MACRO_DEPTH", "MAX_STEPS", "Bound", "bound_template"]

#: loop iterations, macro calls and list items per unit of caller data (jinja's sandbox MAX_RANGE)
MAX_STEPS: Final = 100_000
#: the highest power of the caller's data size a rendering may take
MAX_DEGREE: Final = 8
#: loops whose values grow faster than linearly are followed iteration by iteration up to this
MAX_SIMULATED: Final = 64
#: abstract evaluations before the template is called too complex to bound
MAX_EVALUATIONS: Final = 300_000
#: macro calls one chain of recursion can nest: jinja 3.1 spends at least 4 Python frames on a
#: call (measured: a macro recursion stops near depth 200 at Python's default limit of 1000 frames)
MAX_MACRO_DEPTH: Final = 250
#: nesting of macro calls followed (a deeper chain is a recursion in disguise)
_MAX_CALL_DEPTH: Final = 32

Poly = tuple[float, ...]
_INF = math.inf
ZERO: Final[Poly] = (0.0,)
ONE: Final[Poly] = (1.0,)
D: Final[Poly] = (0.0, 1.0)
_WIDTH = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")
_BRACE_WIDTH = re.compile(r"\{[^{}:]*:[^{}]*?(\d+|\{[^{}]*\})?(?:\.(\d+|\{[^{}]*\}))?[a-zA-Z%]?\}")


def const(c: float) -> Poly:
    return (float(c),)


def padd(a: Poly, b: Poly) -> Poly:
    n = max(len(a), len(b))
    return _trim(tuple((a[i] if i < len(a) else 0.0) + (b[i] if i < len(b) else 0.0) for i in range(n)))


def pmax(a: Poly, b: Poly) -> Poly:
    n = max(len(a), len(b))
    return _trim(tuple(max(a[i] if i < len(a) else 0.0, b[i] if i < len(b) else 0.0) for i in range(n)))


def pmul(a: Poly, b: Poly) -> Poly:
    out = [0.0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if x and y:
                out[i + j] += x * y
    return _trim(tuple(out))


def pscale(a: Poly, c: float) -> Poly:
    return _trim(tuple(x * c if x else 0.0 for x in a))


def pgrow(a: Poly, b: Poly) -> Poly:
    """Coefficient-wise ``b - a`` clamped at zero (how much a size grew)."""
    n = max(len(a), len(b))
    out = []
    for i in range(n):
        x, y = (a[i] if i < len(a) else 0.0), (b[i] if i < len(b) else 0.0)
        out.append(_INF if math.isinf(y) else max(y - x, 0.0))
    return _trim(tuple(out))


def _trim(p: Poly) -> Poly:
    end = len(p)
    while end > 1 and p[end - 1] == 0.0:
        end -= 1
    return p[:end] if end else ZERO


def _exceeds(a: Poly, b: Poly) -> bool:
    """Some coefficient of ``b`` is above ``a``'s by more than rounding."""
    n = max(len(a), len(b))
    for i in range(n):
        x, y = (a[i] if i < len(a) else 0.0), (b[i] if i < len(b) else 0.0)
        if y > x * (1 + 1e-9) + 1e-9:
            return True
    return False


def _show(p: Poly) -> str:
    terms = []
    for degree, c in reversed(list(enumerate(p))):
        if not c:
            continue
        num = "unbounded" if math.isinf(c) else f"{c:,.0f}" if c < 1e15 else f"{c:.3g}"
        terms.append(num if degree == 0 else f"{num}·D" if degree == 1 else f"{num}·D^{degree}")
    return " + ".join(terms) or "0"


@dataclass(frozen=True)
class Val:
    """What the analysis knows about a value: bounds, not the value."""

    n: Poly = ZERO  # items of a list, characters of a string, magnitude of a number
    size: Poly = ZERO  # characters it renders to (and so its memory)
    elem: Poly = ZERO  # the size of anything nested in it
    data: bool = False  # caller data or read out of it
    origin: frozenset[int] = frozenset()  # data loops whose item it is a piece of
    ns: frozenset[int] = frozenset()  # namespaces it may be
    const: object = None  # the folded constant (str, int, float) when known
    is_str: bool = False
    lazy: bool = False  # a range: renders as ``range(a, b)`` until a filter makes it a list


DATA: Final = Val(D, D, D, data=True)
NOTHING: Final = Val()


def _join(a: Val, b: Val) -> Val:
    if a is b:
        return a
    return Val(
        pmax(a.n, b.n),
        pmax(a.size, b.size),
        pmax(a.elem, b.elem),
        a.data or b.data,
        a.origin | b.origin,
        a.ns | b.ns,
        a.const if a.const == b.const else None,
        a.is_str and b.is_str,
        a.lazy or b.lazy,
    )


def _num(p: Poly) -> Val:
    return Val(p, _digits(p), ZERO)


def _digits(p: Poly) -> Poly:
    if len(p) == 1 and not math.isinf(p[0]):
        return const(len(str(int(p[0]))) + 1)
    return p


def _string(n: Poly, data: bool = False) -> Val:
    return Val(n, n, ONE, data=data, is_str=True)


State = dict[object, Val]


class _TooComplex(Exception):
    pass


@dataclass(frozen=True)
class _Ctx:
    m: Poly  # times this code runs in one rendering
    local: Poly  # times it runs in one call of the enclosing macro (output accounting)
    record: bool  # charge costs (False while probing a loop's growth)
    active: frozenset[int] = frozenset()  # data loops around


@dataclass
class Bound:
    """The bounds and the first place each limit was crossed (empty when within all limits)."""

    steps: Poly = ZERO
    chars: Poly = ZERO
    findings: list[tuple[str, jn.Node | None]] = field(default_factory=list)


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


class _Cost:
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

    # ---- statements --------------------------------------------------------------------------

    def block(self, nodes: Iterable[jn.Node], state: State, ctx: _Ctx) -> State:
        for node in nodes:
            state = self.stmt(node, state, ctx)
        return state

    def stmt(self, node: jn.Node, state: State, ctx: _Ctx) -> State:
        self.tick()
        if isinstance(node, jn.Output):
            for item in node.nodes:
                if isinstance(item, jn.TemplateData):
                    self.emit(const(len(item.data)), ctx, item)
                else:
                    self.emit(self.expr(item, state, ctx).size, ctx, item)
            return state
        if isinstance(node, jn.If):
            self.expr(node.test, state, ctx)
            branches = [self.block(node.body, dict(state), ctx)]
            for elif_ in node.elif_:
                self.expr(elif_.test, state, ctx)
                branches.append(self.block(elif_.body, dict(state), ctx))
            branches.append(self.block(node.else_, dict(state), ctx))
            return _join_states(branches)
        if isinstance(node, jn.For):
            return self.loop(node, state, ctx)
        if isinstance(node, jn.Assign):
            value = self.expr(node.node, state, ctx)
            self.assign(node.target, value, state)
            return state
        if isinstance(node, jn.AssignBlock):
            value = self.captured(node.body, state, ctx)
            if node.filter is not None:
                value = self.filters(node.filter, value, state, ctx)
            self.assign(node.target, value, state)
            return state
        if isinstance(node, jn.FilterBlock):
            value = self.captured(node.body, state, ctx)
            self.emit(self.filters(node.filter, value, state, ctx).size, ctx, node)
            return state
        if isinstance(node, jn.CallBlock):
            self.callers.append((node.body, state, ctx))
            try:
                self.emit(self.expr(node.call, state, ctx).size, ctx, node)
            finally:
                self.callers.pop()
            return state
        if isinstance(node, jn.With):
            inner = dict(state)
            for target, given in zip(node.targets, node.values, strict=False):
                self.assign(target, self.expr(given, state, ctx), inner)
            return _merge_namespaces(state, self.block(node.body, inner, ctx))
        if isinstance(node, jn.Scope):
            return self.block(node.body, state, ctx)
        if isinstance(node, jn.ExprStmt):
            self.expr(node.node, state, ctx)
        return state  # macros are followed where they are called; the rest renders nothing

    def captured(self, body: list[jn.Node], state: State, ctx: _Ctx) -> Val:
        """The output of ``body`` as a string (``{% set x %}``, ``{% filter %}``); namespace
        attributes it writes are written in ``state``."""
        self.out.append(ZERO)
        try:
            after = self.block(body, dict(state), replace(ctx, local=ONE))
        finally:
            size = self.out.pop()
        _merge_namespaces_into(state, after)
        return _string(size)

    def assign(self, target: jn.Node, value: Val, state: State) -> None:
        if isinstance(target, jn.Name):
            state[target.name] = value
        elif isinstance(target, jn.NSRef):
            spaces = state.get(target.name, NOTHING).ns
            for space in spaces:
                state[(space, target.attr)] = value
        elif isinstance(target, jn.Tuple | jn.List):
            item = _item(value)
            for sub in target.items:
                self.assign(sub, item, state)

    # ---- loops -------------------------------------------------------------------------------

    def loop(self, node: jn.For, state: State, ctx: _Ctx) -> State:
        iterable = self.expr(node.iter, state, ctx)
        # a loop over a piece of the item of an enclosing loop over caller data: all such pieces
        # together are at most the data. Once: a second loop over pieces of the same item,
        # nested in the first, runs for every pair.
        used = iterable.origin & ctx.active if iterable.data else frozenset()
        factor = ONE if used else iterable.n
        if node.recursive:  # loop() visits pieces below the items: at most the data in all
            factor = padd(factor, D)
        self.steps(factor, ctx, node, "a loop")
        active = (ctx.active - used) | {id(node)} if iterable.data else ctx.active
        inner = _Ctx(
            pmul(ctx.m, factor),
            pmul(ctx.local, factor),
            ctx.record,
            active,
        )
        item = Val(D, D, D, data=True, origin=frozenset({id(node)})) if iterable.data else _item(iterable)
        if node.recursive:
            self.check_loop_recursion(node, ctx)

        def bind(s: State) -> State:
            s = dict(s)
            self.assign(node.target, item, s)
            s["loop"] = Val(factor, _digits(factor), pmax(item.size, item.elem))
            return s

        final = self.growth(node, bind(state), factor, inner)
        if ctx.record:  # a probe needs only the state after the loop, which growth() gave
            self.block(node.body, bind(final), inner)
            if node.test is not None:
                self.expr(node.test, bind(final), inner)
        after = _join_states([state, self.block(node.else_, dict(state), ctx)])
        return _merge_namespaces(after, final)

    def growth(self, node: jn.For, start: State, factor: Poly, ctx: _Ctx) -> State:
        """The state after the loop's last iteration: simulated, or extrapolated when growth is linear."""
        writes = self.writes(node.body)
        if not writes:
            return start
        dry = replace(ctx, record=False)
        history = [start]
        rounds = min(writes + 2, 12)  # a value fed by a chain of k others starts growing by round k
        for _ in range(rounds):
            history.append(self.block(node.body, dict(history[-1]), dry))
            if len(history) > 2 and history[-1] == history[-2]:
                return history[-1]  # a fixed point: nothing grows from one iteration to the next
        small = len(factor) == 1 and factor[0] <= MAX_SIMULATED
        final = dict(history[-1])
        for key in set().union(*history[1:]):
            sizes = [s.get(key, NOTHING) for s in history]
            if all(v == sizes[1] for v in sizes[2:]):
                continue  # the same after every round: it does not grow
            grow = [
                (pgrow(a.n, b.n), pgrow(a.size, b.size), pgrow(a.elem, b.elem))
                for a, b in itertools.pairwise(sizes[1:])
            ]
            if not any(any(any(c for c in g) for g in step) for step in grow):
                continue
            first, last = grow[0], grow[-1]
            value = sizes[-1]
            # a number's digits grow in steps (9 -> 10): its magnitude says whether it accelerates
            checked = (0, 2) if _numeric(value) else (0, 1, 2)
            accelerating = any(_exceeds(first[i], last[i]) for i in checked)
            if not accelerating:
                steps = pmax(factor, ONE)
                n = padd(value.n, pmul(steps, pmax(first[0], last[0])))
                final[key] = replace(
                    value,
                    n=n,
                    size=_digits(n)
                    if _numeric(value)
                    else padd(value.size, pmul(steps, pmax(first[1], last[1]))),
                    elem=padd(value.elem, pmul(steps, pmax(first[2], last[2]))),
                    const=None,
                )
            elif small:
                state = history[-1]
                for _ in range(int(factor[0]) - rounds):
                    state = self.block(node.body, dict(state), dry)
                final[key] = replace(_join(value, state.get(key, NOTHING)), const=None)
            else:
                grew = [any(any(c for c in step[i]) for step in grow) for i in range(3)]
                n = (_INF,) if grew[0] else value.n
                final[key] = replace(
                    value,
                    n=n,
                    size=_digits(n) if _numeric(value) else (_INF,) if grew[1] else value.size,
                    elem=(_INF,) if grew[2] else value.elem,
                    const=None,
                )
        return final

    def writes(self, body: list[jn.Node]) -> int:
        """How many variables and namespace attributes ``body`` (and the macros it calls) assign."""
        key = id(body)
        if key not in self._writes:
            self._writes[key] = self._count_writes(body)
        return self._writes[key]

    def _count_writes(self, body: list[jn.Node]) -> int:
        names: set[object] = set()
        seen: set[str] = set()
        todo: list[jn.Node] = list(body)
        while todo:
            node = todo.pop()
            for sub in [node, *node.find_all((jn.Assign, jn.AssignBlock, jn.Call, jn.For))]:
                if isinstance(sub, jn.Assign | jn.AssignBlock):
                    target = sub.target
                    names.add(
                        (target.name, target.attr) if isinstance(target, jn.NSRef) else _expr_key(target)
                    )
                elif isinstance(sub, jn.For):
                    names.add(_expr_key(sub.target))
                elif isinstance(sub, jn.Call) and isinstance(sub.node, jn.Name):
                    called = sub.node.name
                    if called in self.macros and called not in seen:
                        seen.add(called)
                        for macro in self.macros[called]:
                            todo.extend(macro.body)
        return len(names)

    def check_loop_recursion(self, node: jn.For, ctx: _Ctx) -> None:
        """``loop(x)`` must recurse into a strict piece of caller data, or the depth is unbounded."""
        depths = _depths(node.body, dict.fromkeys(_names(node.target), 1))
        for call in node.find_all(jn.Call):
            if (
                isinstance(call.node, jn.Name)
                and call.node.name == "loop"
                and not (call.args and _depth(call.args[0], depths) >= 1)
            ):
                self.unbounded(
                    "a recursive loop() called with something other than a piece of the loop's "
                    "item has no bounded depth",
                    call,
                )

    # ---- expressions -------------------------------------------------------------------------

    def expr(self, node: jn.Node, state: State, ctx: _Ctx) -> Val:
        self.tick()
        if isinstance(node, jn.Const):
            v = node.value
            if isinstance(v, str):
                return Val(const(len(v)), const(len(v)), ONE, const=v, is_str=True)
            if isinstance(v, int | float) and not isinstance(v, bool):
                magnitude = abs(float(v)) if math.isfinite(float(v)) else _INF
                return replace(_num(const(magnitude)), const=v)
            return Val(ONE, const(5), ZERO)
        if isinstance(node, jn.Name):
            if node.name in state:
                return state[node.name]
            return NOTHING if node.name in ("range", "namespace", "dict", "caller", "loop") else DATA
        if isinstance(node, jn.Getattr):
            return self.member(self.expr(node.node, state, ctx), node.attr, state)
        if isinstance(node, jn.Getitem):
            base = self.expr(node.node, state, ctx)
            if isinstance(node.arg, jn.Slice):
                for bound in (node.arg.start, node.arg.stop, node.arg.step):
                    if bound is not None:
                        self.expr(bound, state, ctx)
                return replace(base, const=None)
            key = self.expr(node.arg, state, ctx)
            return self.member(base, key.const if isinstance(key.const, str) else None, state)
        if isinstance(node, jn.Tuple | jn.List):
            items = [self.expr(i, state, ctx) for i in node.items]
            return self.container(items, node, ctx)
        if isinstance(node, jn.Dict):
            items = []
            for pair in node.items:
                items.append(self.expr(pair.key, state, ctx))
                items.append(self.expr(pair.value, state, ctx))
            return self.container(items, node, ctx)
        if isinstance(node, jn.Concat):
            parts = [self.expr(i, state, ctx) for i in node.nodes]
            total = ZERO
            for p in parts:
                total = padd(total, p.size)
            value = self.built(_string(total, any(p.data for p in parts)), node, ctx)
            return replace(value, const=_fold_str(node, state))
        if isinstance(node, jn.Add | jn.Sub | jn.Mul | jn.Div | jn.FloorDiv | jn.Mod | jn.Pow):
            return self.binary(node, state, ctx)
        if isinstance(node, jn.Neg | jn.Pos):
            inner = self.expr(node.node, state, ctx)
            c = inner.const
            return replace(inner, const=-c if isinstance(c, int | float) and isinstance(node, jn.Neg) else c)
        if isinstance(node, jn.Not | jn.Test):
            for child in node.iter_child_nodes():
                self.expr(child, state, ctx)
            return _num(ONE)
        if isinstance(node, jn.Compare):
            self.expr(node.expr, state, ctx)
            for op in node.ops:
                self.expr(op.expr, state, ctx)
            return _num(ONE)
        if isinstance(node, jn.And | jn.Or):
            return _join(self.expr(node.left, state, ctx), self.expr(node.right, state, ctx))
        if isinstance(node, jn.CondExpr):
            self.expr(node.test, state, ctx)
            value = self.expr(node.expr1, state, ctx)
            if node.expr2 is not None:
                value = _join(value, self.expr(node.expr2, state, ctx))
            return value
        if isinstance(node, jn.Filter):
            value = self.expr(node.node, state, ctx) if node.node is not None else NOTHING
            return self.filter(node, value, state, ctx)
        if isinstance(node, jn.Call):
            return self.call(node, state, ctx)
        if isinstance(node, jn.Keyword):
            return self.expr(node.value, state, ctx)
        for child in node.iter_child_nodes():  # anything else: its parts still run
            self.expr(child, state, ctx)
        return DATA

    def member(self, base: Val, attr: str | None, state: State) -> Val:
        """``x.attr`` / ``x[key]``."""
        if base.ns:
            found = [state.get((space, attr), NOTHING) for space in base.ns] if attr else []
            if attr is None:  # a computed key into a namespace: any of its attributes
                found = [v for k, v in state.items() if isinstance(k, tuple) and k[0] in base.ns]
            value = NOTHING
            for v in found:
                value = _join(value, v)
            return value
        if base.data:
            return Val(D, D, D, data=True, origin=base.origin)
        if base.is_str:
            return _string(ONE)
        return Val(base.elem, base.elem, base.elem)

    def container(self, items: list[Val], node: jn.Node, ctx: _Ctx) -> Val:
        size, elem = const(2 + 2 * len(items)), ZERO
        for i in items:
            size = padd(size, i.size)
            elem = pmax(elem, pmax(i.size, i.elem))
        data = [i for i in items if i.data]
        return self.built(
            Val(
                const(len(items)),
                size,
                elem,
                data=bool(data),
                origin=frozenset().union(*(i.origin for i in data)),
            ),
            node,
            ctx,
        )

    def built(self, value: Val, node: jn.Node, ctx: _Ctx, what: str = "a value built") -> Val:
        """Charge building ``value`` (its characters, and its items when it is a list)."""
        self.chars(value.size, ctx, node, what)
        if not value.is_str:
            self.steps(value.n, ctx, node, what)
        return value

    def binary(self, node: jn.BinExpr, state: State, ctx: _Ctx) -> Val:
        left, right = self.expr(node.left, state, ctx), self.expr(node.right, state, ctx)
        folded = fold(node, {}) if left.const is not None and right.const is not None else None
        if isinstance(node, jn.Mod) and (left.is_str or isinstance(left.const, str)):
            return self.printf(
                left,
                [right] if not _is_seq(node.right) else _args_of(node.right, state, self, ctx),
                node,
                ctx,
            )
        if isinstance(node, jn.Add | jn.Sub):
            n, size = padd(left.n, right.n), padd(left.size, right.size)
            elem = pmax(left.elem, right.elem)
            if left.is_str or right.is_str or (not _numeric(left) or not _numeric(right)):
                value = Val(n, size, elem, data=left.data or right.data, is_str=left.is_str or right.is_str)
                return replace(self.built(value, node, ctx), const=folded)
            return replace(_num(n), const=_fold_num(node, left.const, right.const))
        if isinstance(node, jn.Mul):
            n = pmul(left.n, right.n)
            if _numeric(left) and _numeric(right):
                return replace(_num(n), const=_fold_num(node, left.const, right.const))
            # repetition of a string or list: count x items, count x characters. The count is the
            # side that is a number of the template's; one read out of the caller's data may be
            # any number (and data times such a number is still data: any number, if a number)
            data = left.data or right.data
            left_n = left.n if _numeric(left) or not data else _count(left)
            right_n = right.n if _numeric(right) or not data else _count(right)
            if left.data and _numeric(right):
                left_n = left.n
            if right.data and _numeric(left):
                right_n = right.n
            n = pmax(pmul(left.n, right_n), pmul(left_n, right.n))
            size = pmax(pmul(left.size, right_n), pmul(left_n, right.size))
            value = Val(n, size, pmax(left.elem, right.elem), data=data, is_str=left.is_str or right.is_str)
            return replace(self.built(value, node, ctx, "repetition '*'"), const=folded)
        if isinstance(node, jn.Pow):
            a, b = left.n, right.n
            if len(a) == 1 and len(b) == 1 and a[0] <= 1:
                magnitude = ONE
            elif len(a) == 1 and len(b) == 1 and b[0] * math.log10(max(a[0], 1)) < 300:
                magnitude = const(a[0] ** b[0])
            else:
                magnitude = (_INF,)
            return _num(magnitude)
        if isinstance(node, jn.Div | jn.FloorDiv):
            # |a / b| <= |a| / |b|: a constant divisor is known, the caller's data is at least 1/D
            c = right.const
            if isinstance(c, int | float) and not isinstance(c, bool) and c:
                magnitude = pscale(left.n, max(1.0, 1 / abs(c)))
            else:
                magnitude = (_INF,)  # a divisor from data or computed may be tiny
            # a float renders in at most 24 characters whatever its magnitude
            return Val(magnitude, const(24) if isinstance(node, jn.Div) else _digits(magnitude), ZERO)
        if isinstance(right.const, int | float) and not isinstance(right.const, bool) and right.const:
            return _num(const(min(abs(right.const), _INF)))  # |a % b| < |b|
        return _num(pmax(left.n, right.n) if _numeric(left) else left.n)

    def printf(self, fmt: Val, args: list[Val], node: jn.Node, ctx: _Ctx) -> Val:
        """``'%5s' % x`` and ``|format``: the text, plus each field's width or precision, plus the args."""
        total = fmt.size
        for a in args:
            total = padd(total, a.size)
        if isinstance(fmt.const, str):
            for width, precision in _WIDTH.findall(fmt.const):
                for w in (width, precision):
                    total = padd(total, self.width(w, args))
        elif not fmt.data:
            total = (_INF,)  # a format string built at render time: widths unknown
        else:
            total = padd(total, pmul(fmt.size, _widest(args)))
        return self.built(_string(total), node, ctx, "a format width")

    def width(self, spec: str, args: list[Val]) -> Poly:
        if spec == "*" or spec.startswith("{"):
            return _widest(args)
        return const(int(spec)) if spec else ZERO

    def filter(self, node: jn.Filter, value: Val, state: State, ctx: _Ctx) -> Val:
        args = [self.expr(a, state, ctx) for a in node.args]
        keywords = cast("list[jn.Keyword]", node.kwargs)  # typed as Pair, built as Keyword
        kwargs = {kw.key: self.expr(kw.value, state, ctx) for kw in keywords}
        for extra in (node.dyn_args, node.dyn_kwargs):
            if extra is not None:
                args.append(self.expr(extra, state, ctx))
        return self.apply(node.name, value, args, kwargs, node, ctx)

    def filters(self, node: jn.Filter, value: Val, state: State, ctx: _Ctx) -> Val:
        """A filter chain of a ``{% filter %}`` / ``{% set x | f %}`` block (``node.node`` is the inner filter)."""
        if node.node is not None and isinstance(node.node, jn.Filter):
            value = self.filters(node.node, value, state, ctx)
        return self.filter(node, value, state, ctx)

    def apply(
        self, name: str, value: Val, args: list[Val], kwargs: dict[str, Val], node: jn.Node, ctx: _Ctx
    ) -> Val:
        def arg(i: int, key: str) -> Val | None:
            return kwargs.get(key, args[i] if len(args) > i else None)

        if value.lazy and name not in ("length", "count", "first", "last", "default", "d"):
            value = Val(
                value.n, pmax(value.size, pmul(value.n, padd(_digits(value.elem), const(2)))), value.elem
            )
        walked = value.n
        if name in ("length", "count", "wordcount"):
            return _num(value.n)
        if name in ("int", "float", "abs", "round"):
            if value.data:
                return _num((_INF,))  # a number read out of the data: any magnitude
            if _numeric(value):
                return _num(value.n)
            if isinstance(value.const, str):
                try:
                    return _num(const(abs(float(value.const))))
                except (ValueError, OverflowError):
                    return _num(ZERO)
            return _num((_INF,))  # digits the template built: any magnitude
        if name in ("center", "indent", "truncate", "wordwrap", "filesizeformat", "format"):
            if name == "format":
                return self.printf(value, args + list(kwargs.values()), node, ctx)
            width = arg(0, "width") or _num(const(80 if name in ("center", "wordwrap") else 4))
            if name == "center":
                return self.built(_string(pmax(value.size, _count(width))), node, ctx, "a width argument")
            if name == "indent":
                lines = padd(value.size, ONE)  # a width may also be given as a string
                return self.built(
                    _string(padd(value.size, pmul(lines, pmax(_count(width), width.size)))),
                    node,
                    ctx,
                    "a width argument",
                )
            if name == "wordwrap":
                wrap = arg(2, "wrapstring")
                per = padd(ONE, wrap.size if wrap else ONE)
                return self.built(_string(pmul(value.size, per)), node, ctx, "a width argument")
            if name == "truncate":
                end = arg(2, "end")
                return self.built(_string(padd(value.size, end.size if end else const(3))), node, ctx)
            return _string(const(12))
        if name in ("batch", "slice"):
            count = arg(0, "linecount" if name == "batch" else "slices") or NOTHING
            fill = arg(1, "fill_with")
            n = padd(value.n, _count(count))
            size = padd(value.size, pmul(_count(count), padd(const(4), fill.size if fill else ZERO)))
            self.steps(walked, ctx, node, f"filter {name!r}")
            return self.built(
                Val(n, size, pmax(value.size, value.elem)), node, ctx, f"the count of filter {name!r}"
            )
        if name in ("join",):
            sep = arg(0, "d") or _string(ZERO)
            self.steps(walked, ctx, node, "filter 'join'")
            size = padd(value.size, pmul(value.n, sep.size))
            return self.built(_string(size, value.data), node, ctx, "filter 'join'")
        if name in ("replace",):
            new = arg(1, "new") or _string(ZERO)
            size = pmul(padd(value.size, ONE), padd(new.size, ONE))
            return self.built(_string(size, value.data), node, ctx, "filter 'replace'")
        if name in ("tojson",):
            indent = arg(0, "indent")
            per = padd(const(6), _count(indent) if indent else ZERO)
            return self.built(_string(pmul(value.size, per)), node, ctx, "filter 'tojson'")
        if name in ("e", "escape", "forceescape", "urlencode", "string", "pprint", "xmlattr", "urlize"):
            return self.built(_string(pscale(value.size, 9), value.data), node, ctx, f"filter {name!r}")
        if name == "map" and args and isinstance(args[0].const, str) and "attribute" not in kwargs:
            # map('center', n): the named filter on every item
            self.steps(walked, ctx, node, "filter 'map'")
            each = replace(ctx, m=pmul(ctx.m, walked))
            item = self.apply(args[0].const, _item(value), args[1:], kwargs, node, each)
            size = pmul(walked, padd(item.size, const(2)))
            return Val(walked, size, pmax(item.size, item.elem), data=value.data, origin=value.origin)
        if name in ("list", "map", "select", "reject", "selectattr", "rejectattr", "sort", "unique",
                    "dictsort", "items", "groupby", "reverse", "sum", "min", "max", "first", "last",
                    "random"):  # fmt: skip
            self.steps(walked, ctx, node, f"filter {name!r}")
            if name in ("first", "last", "random", "min", "max"):
                if value.data:
                    return replace(DATA, origin=value.origin)
                return _string(ONE) if value.is_str else Val(value.elem, value.elem, value.elem)
            if name == "sum":
                start = arg(1, "start")
                return _join(_num(pmul(value.n, value.elem)), start or NOTHING)
            if name == "list" and value.is_str:
                return Val(value.n, pscale(value.size, 5), ONE)
            if name in ("items", "dictsort", "groupby"):
                return replace(value, size=pscale(value.size, 2), const=None, is_str=False)
            return replace(value, const=None, is_str=False if name != "reverse" else value.is_str)
        if name in ("default", "d"):
            other = arg(0, "default_value") or NOTHING
            return _join(value, other)
        # trim, lower, upper, title, capitalize, striptags, safe, ...: no larger than the input
        return replace(value, const=None)

    def call(self, node: jn.Call, state: State, ctx: _Ctx) -> Val:
        args = [self.expr(a, state, ctx) for a in node.args]
        kwargs = {kw.key: self.expr(kw.value, state, ctx) for kw in node.kwargs}
        for extra in (node.dyn_args, node.dyn_kwargs):
            if extra is not None:
                args.append(self.expr(extra, state, ctx))
        target = node.node
        if isinstance(target, jn.Getattr):
            receiver = self.expr(target.node, state, ctx)
            return self.method(target.attr, receiver, args, kwargs, node, ctx)
        if not isinstance(target, jn.Name) or (target.name in state and target.name != "loop"):
            if not isinstance(target, jn.Name):
                self.expr(target, state, ctx)
            return DATA
        name = target.name
        if name == "range":
            count = ZERO  # |stop - start| <= |start| + |stop|; a step only shortens it
            for bound in [_count(a) for a in args][:2]:
                count = padd(count, bound)
            return Val(count, const(40), count, lazy=True)
        if name == "namespace":
            space = id(node)
            for old in [k for k in state if isinstance(k, tuple) and k[0] == space]:
                del state[old]  # a new namespace each time this runs
            for attr, initial in kwargs.items():
                state[(space, attr)] = initial
            for mapping in args:  # namespace(mapping): any attribute
                state[(space, None)] = mapping
            return Val(ONE, ONE, ONE, ns=frozenset({space}))
        if name == "dict":
            return self.container(list(kwargs.values()) * 2 + args, node, ctx)
        if name == "lipsum":
            n = arg_or(args, kwargs, 0, "n", const(5))
            words = arg_or(args, kwargs, 3, "max", const(100))
            return self.built(_string(pmul(pmul(n, pmax(words, const(100))), const(16))), node, ctx, "lipsum")
        if name in ("cycler", "joiner"):
            value = NOTHING
            for a in args:
                value = _join(value, a)
            return Val(value.size, value.size, value.elem, data=value.data)
        if name == "caller":
            return self.call_caller(node, ctx)
        if name == "loop":
            self.steps(ONE, ctx, node, "a recursive loop() call")
            return DATA
        if name == "strftime_now":
            fmt = args[0] if args else _string(ZERO)
            return _string(pscale(padd(fmt.size, ONE), 40))
        if name in self.macros:
            return self.macro(name, args, kwargs, node, state, ctx)
        return DATA  # raise_exception, unknown helpers: reported by the walker, renders nothing here

    def method(
        self, attr: str, receiver: Val, args: list[Val], kwargs: dict[str, Val], node: jn.Node, ctx: _Ctx
    ) -> Val:
        if attr == "format":
            return self.printf_braces(receiver, args + list(kwargs.values()), node, ctx)
        if attr == "join":
            items = args[0] if args else NOTHING
            self.steps(items.n, ctx, node, "str.join")
            size = padd(items.size, pmul(items.n, receiver.size))
            return self.built(_string(size, receiver.data or items.data), node, ctx, "str.join")
        if attr == "replace":
            return self.apply("replace", receiver, args, kwargs, node, ctx)
        if attr in ("center", "ljust", "rjust", "zfill"):
            width = args[0] if args else NOTHING
            return self.built(_string(pmax(receiver.size, _count(width))), node, ctx, "a width argument")
        if attr == "expandtabs":
            tab = args[0] if args else _num(const(8))
            return self.built(
                _string(pmul(receiver.size, padd(_count(tab), ONE))), node, ctx, "a width argument"
            )
        if attr in ("split", "rsplit", "splitlines", "items", "keys", "values", "partition", "rpartition"):
            self.steps(receiver.n, ctx, node, f"method {attr!r}")
            return Val(
                receiver.n,
                pscale(receiver.size, 5),
                receiver.size,
                data=receiver.data,
                origin=receiver.origin,
            )
        if attr in ("get", "pop", "cycle"):
            value = NOTHING
            for a in args[1:] if attr != "cycle" else args:
                value = _join(value, a)
            if receiver.data:
                return _join(replace(DATA, origin=receiver.origin), value)
            return _join(Val(receiver.elem, receiver.elem, receiver.elem), value)
        if attr in ("count", "find", "rfind", "index", "rindex"):
            return _num(receiver.n)
        if attr in ("startswith", "endswith") or attr.startswith("is"):
            return _num(ONE)
        # strip, lower, upper, title, ...: no larger than the receiver
        return replace(receiver, const=None)

    def printf_braces(self, fmt: Val, args: list[Val], node: jn.Node, ctx: _Ctx) -> Val:
        total = fmt.size
        for a in args:
            total = padd(total, a.size)
        if isinstance(fmt.const, str):
            for width, precision in _BRACE_WIDTH.findall(fmt.const):
                for w in (width, precision):
                    total = padd(total, self.width(w, args))
        elif not fmt.data:
            total = (_INF,)
        else:
            total = padd(total, pmul(fmt.size, _widest(args)))
        return self.built(_string(total), node, ctx, "a format width")

    def call_caller(self, node: jn.Call, ctx: _Ctx) -> Val:
        if not self.callers:
            return NOTHING
        body, state, outer = self.callers[-1]
        self.callers.pop()
        try:
            return self.captured(body, dict(state), replace(ctx, active=ctx.active | outer.active))
        finally:
            self.callers.append((body, state, outer))

    def macro(
        self, name: str, args: list[Val], kwargs: dict[str, Val], node: jn.Call, state: State, ctx: _Ctx
    ) -> Val:
        self.steps(ONE, ctx, node, f"a call of macro {name!r}")
        if name in self.calls:
            self.recursion(name, node, ctx)
            return DATA
        if len(self.calls) >= _MAX_CALL_DEPTH:
            self.unbounded(f"macro calls nested deeper than {_MAX_CALL_DEPTH}", node)
            return DATA
        result = NOTHING
        self.calls.append(name)
        try:
            for macro in self.macros[name]:
                inner = dict(state)
                for i, param in enumerate(macro.args):
                    default_at = i - (len(macro.args) - len(macro.defaults))
                    given = kwargs.get(param.name, args[i] if i < len(args) else None)
                    if given is None and default_at >= 0:
                        given = self.expr(macro.defaults[default_at], state, ctx)
                    inner[param.name] = given or NOTHING
                for extra in ("varargs", "kwargs"):
                    inner[extra] = DATA
                # entering a recursion: its body may run many times; inside it, once per call
                inside = any(c in self.cycle(name) for c in self.calls[:-1])
                factor = ONE if inside else self.recursion_factor(macro)
                body_ctx = _Ctx(pmul(ctx.m, factor), ONE, ctx.record, ctx.active)
                value = self.captured(macro.body, inner, body_ctx)
                value = replace(value, n=pmul(value.n, factor), size=pmul(value.size, factor))
                _merge_namespaces_into(state, inner)
                result = _join(result, value)
        finally:
            self.calls.pop()
        return self.built(result, node, ctx, f"macro {name!r}")

    def cycle(self, name: str) -> set[str]:
        """The macros that ``name`` calls, directly or not, and that call it back (with itself)."""
        if name not in self._cycles:
            self._cycles[name] = self._cycle(name)
        return self._cycles[name]

    def _cycle(self, name: str) -> set[str]:

        def reach(start: str) -> set[str]:
            seen: set[str] = set()
            todo = list(self.graph.get(start, ()))
            while todo:
                n = todo.pop()
                if n not in seen:
                    seen.add(n)
                    todo.extend(self.graph.get(n, ()))
            return seen

        if name not in reach(name):
            return set()
        return {other for other in reach(name) if name in reach(other)} | {name}

    def edges(self, cycle: set[str]) -> list[tuple[jn.Macro, jn.Call, dict[str, int]]]:
        """Every call from a macro of ``cycle`` to one of it, with the caller's depths."""
        found = []
        for name in sorted(cycle):
            for macro in self.macros[name]:
                depths = _depths(macro.body, dict.fromkeys((p.name for p in macro.args), 0))
                for call in macro.find_all(jn.Call):
                    if isinstance(call.node, jn.Name) and call.node.name in cycle:
                        found.append((macro, call, depths))
        return found

    def recursion_factor(self, macro: jn.Macro) -> Poly:
        """How often a macro's body runs per outside call: D when it recurses into caller data."""
        cycle = self.cycle(macro.name)
        if not cycle:
            return ONE
        strict = all(_progresses(call, depths) for _, call, depths in self.edges(cycle))
        # a chain of calls that do not descend into the data ends at Python's recursion limit
        return D if strict else pscale(D, MAX_MACRO_DEPTH)

    def recursion(self, name: str, node: jn.Call, ctx: _Ctx) -> None:
        cycle = self.cycle(name)
        edges = self.edges(cycle)
        if all(_progresses(call, depths) for _, call, depths in edges):
            return  # every call descends into the caller's data: depth bounded by the data
        if len(cycle) > 1:
            self.unbounded(
                f"macros {', '.join(sorted(cycle))} call each other with arguments that are not "
                "pieces of the caller's data (no bounded depth)",
                node,
            )
            return
        macro = self.macros[name][0]
        depths = _depths(macro.body, dict.fromkeys((p.name for p in macro.args), 0))
        if _branching(macro.body, name, lambda c: _progresses(c, depths)) > 1:
            self.unbounded(
                f"macro {name!r} calls itself more than once per call with arguments that are not "
                "pieces of the caller's data (exponential in the recursion depth)",
                node,
            )


def arg_or(args: list[Val], kwargs: dict[str, Val], i: int, key: str, default: Poly) -> Poly:
    if key in kwargs:
        return _count(kwargs[key])
    return _count(args[i]) if len(args) > i else default


def _numeric(v: Val) -> bool:
    return not v.is_str and not v.data and not v.ns and v.elem == ZERO


def _item(v: Val) -> Val:
    if v.data:
        return Val(D, D, D, data=True, origin=v.origin)
    if v.is_str:
        return _string(ONE)
    return Val(v.elem, v.elem, v.elem)


def _count(v: Val) -> Poly:
    """``v`` used as a number (a count, a width): a number read out of the caller's data may be
    anything; its length is bounded, its value is not."""
    return (_INF,) if v.data else v.n


def _widest(args: list[Val]) -> Poly:
    widest = ZERO
    for a in args:
        widest = pmax(widest, _count(a))
    return widest


def _fold_num(node: jn.Node, a: object, b: object) -> object:
    if not (isinstance(a, int | float) and isinstance(b, int | float)):
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    try:
        if isinstance(node, jn.Add):
            return a + b
        if isinstance(node, jn.Sub):
            return a - b
        if isinstance(node, jn.Mul) and abs(a) * abs(b) < 1e300:
            return a * b
    except OverflowError:
        return None
    return None


def _fold_str(node: jn.Node, state: State) -> object:
    consts = {k: v.const for k, v in state.items() if isinstance(k, str) and v.const is not None}
    value = fold(node, consts)
    return value if isinstance(value, str) else None


def _is_seq(node: jn.Node) -> bool:
    return isinstance(node, jn.Tuple | jn.List)


def _args_of(node: jn.Node, state: State, cost: _Cost, ctx: _Ctx) -> list[Val]:
    assert isinstance(node, jn.Tuple | jn.List)
    return [cost.expr(i, state, replace(ctx, record=False)) for i in node.items]


#: filters whose result is one element of their input (one level deeper in the data)
_ELEMENT_FILTERS: Final = frozenset({"first", "last", "random", "min", "max"})


def _depth(node: jn.Node, depths: dict[str, int]) -> int:
    """How many levels below the recursion's own input the value of ``node`` is: ``x`` 0,
    ``x.a`` 1, an item of ``x.a`` 2, ``{'type': t}`` one less than ``t``; -1 when it is not a
    piece of it at all (a constant, arithmetic, the caller's other data)."""
    if isinstance(node, jn.Name):
        return depths.get(node.name, -1)
    if isinstance(node, jn.Getattr | jn.Getitem):
        inner = _depth(node.node, depths)
        if isinstance(node, jn.Getitem) and isinstance(node.arg, jn.Slice):
            return inner  # shorter, not deeper
        return inner + 1 if inner >= 0 else -1
    if isinstance(node, jn.Filter) and node.node is not None:
        inner = _depth(node.node, depths)
        return inner + 1 if node.name in _ELEMENT_FILTERS and inner >= 0 else inner
    if isinstance(node, jn.CondExpr):
        branches = [node.expr1] + ([node.expr2] if node.expr2 is not None else [])
        return min(_depth(b, depths) for b in branches)
    items: list[jn.Node] = []
    if isinstance(node, jn.Dict):
        items = [p.value for p in node.items]
    elif isinstance(node, jn.List | jn.Tuple):
        items = list(node.items)
    moving = [i for i in items if not isinstance(i, jn.Const)]
    if not moving:
        return -1
    # a container wraps its items one level up: [x] is no deeper than x's parent
    return max(min(_depth(i, depths) for i in moving) - 1, -1)


def _depths(body: Iterable[jn.Node], seeds: dict[str, int]) -> dict[str, int]:
    """The depth of every name ``body`` binds (loop variables one deeper than what they iterate,
    ``set`` targets as deep as their value), the least over all its bindings; -1 once any
    binding is not a piece."""
    bindings: list[tuple[set[str], jn.Node, int]] = []
    for top in body:
        for n in [top, *top.find_all((jn.For, jn.Assign))]:
            if isinstance(n, jn.For):
                bindings.append((_names(n.target), n.iter, 1))
            elif isinstance(n, jn.Assign):
                bindings.append((_names(n.target), n.node, 0))
    depths = dict(seeds)
    for _ in range(len(bindings) + 1):
        changed = False
        for names, value, deeper in bindings:
            d = _depth(value, depths)
            d = d + deeper if d >= 0 else -1
            for name in names:
                old = depths.get(name)
                new = d if old is None else min(old, d)
                if new != old:
                    depths[name] = new
                    changed = True
        if not changed:
            break
    return depths


def _names(target: jn.Node) -> set[str]:
    if isinstance(target, jn.Name):
        return {target.name}
    return {x.name for x in target.find_all(jn.Name)}


def _expr_key(target: jn.Node) -> str:
    return ",".join(sorted(_names(target)))


def _progresses(call: jn.Call, depths: dict[str, int]) -> bool:
    """Some argument is strictly inside the recursion's input: the recursion descends the data."""
    return any(_depth(a, depths) >= 1 for a in [*call.args, *(k.value for k in call.kwargs)])


def _branching(nodes: Iterable[jn.Node], name: str, progress: Callable[[jn.Call], bool]) -> float:
    """Self-calls that do not descend into the data one call of macro ``name`` can make (the
    larger branch of an if; in a loop, as many as it iterates)."""
    total = 0.0
    for node in nodes:
        if isinstance(node, jn.If):
            options = [_branching(node.body, name, progress), _branching(node.else_, name, progress)]
            options += [
                _branching(e.body, name, progress) + _count_calls(e.test, name, progress) for e in node.elif_
            ]
            total += _count_calls(node.test, name, progress) + max(options)
        elif isinstance(node, jn.For):
            inner = _branching(node.body, name, progress) + _branching(node.else_, name, progress)
            total += _INF if inner else 0.0
        elif isinstance(node, jn.Macro):
            continue
        else:
            total += _count_calls(node, name, progress)
    return total


def _count_calls(node: jn.Node, name: str, progress: Callable[[jn.Call], bool]) -> float:
    inner = sum(
        _count_calls(c, name, progress) for c in node.iter_child_nodes() if not isinstance(c, jn.If | jn.For)
    )
    inner += _branching([c for c in node.iter_child_nodes() if isinstance(c, jn.If | jn.For)], name, progress)
    if isinstance(node, jn.Call) and isinstance(node.node, jn.Name) and node.node.name == name:
        return inner + (0.0 if progress(node) else 1.0)
    return inner


def _join_states(states: list[State]) -> State:
    out: State = {}
    for s in states:
        for k, v in s.items():
            out[k] = _join(out[k], v) if k in out else v
    return out


def _merge_namespaces(outer: State, inner: State) -> State:
    """Names set in a scope stay in it; namespace attributes written there are seen outside."""
    merged = dict(outer)
    for k, v in inner.items():
        if isinstance(k, tuple) or k not in outer:
            merged[k] = v if k not in outer else _join(outer[k], v)
        else:
            merged[k] = _join(outer[k], v)
    return merged


def _merge_namespaces_into(outer: State, inner: State) -> None:
    for k, v in inner.items():
        if isinstance(k, tuple):
            outer[k] = v
