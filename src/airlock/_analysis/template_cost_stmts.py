"""template_cost: the abstract interpretation of statements and loops."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace

import jinja2.nodes as jn

from airlock._analysis.template_cost_base import CostBase
from airlock._analysis.template_cost_flow import (
    _depth,
    _depths,
    _expr_key,
    _item,
    _join_states,
    _merge_namespaces,
    _merge_namespaces_into,
    _names,
    _numeric,
)
from airlock._analysis.template_cost_values import (
    _INF,
    MAX_SIMULATED,
    NOTHING,
    ONE,
    ZERO,
    D,
    Poly,
    State,
    Val,
    _Ctx,
    _digits,
    _exceeds,
    _join,
    _string,
    const,
    padd,
    pgrow,
    pmax,
    pmul,
)


class Statements(CostBase):
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
