"""template_cost: the abstract interpretation of expressions."""

from __future__ import annotations

import math
from dataclasses import replace

import jinja2.nodes as jn

from airlock._analysis.template_cost_base import CostBase
from airlock._analysis.template_cost_flow import (
    _args_of,
    _count,
    _fold_num,
    _fold_str,
    _is_seq,
    _numeric,
    _widest,
)
from airlock._analysis.template_cost_values import (
    _INF,
    _WIDTH,
    DATA,
    NOTHING,
    ONE,
    ZERO,
    D,
    Poly,
    State,
    Val,
    _Ctx,
    _digits,
    _join,
    _num,
    _string,
    const,
    padd,
    pmax,
    pmul,
    pscale,
)
from airlock._analysis.template_fold import fold


class Expressions(CostBase):
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
