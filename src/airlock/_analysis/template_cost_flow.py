"""template_cost's helpers outside the interpreter: folding, items and counts, recursion depth, joining states."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Final

import jinja2.nodes as jn

from airlock._analysis.template_cost_values import (
    _INF,
    ONE,
    ZERO,
    D,
    Poly,
    State,
    Val,
    _Ctx,
    _join,
    _string,
    pmax,
)
from airlock._analysis.template_fold import fold

if TYPE_CHECKING:
    from airlock._analysis.template_cost_base import CostBase


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


def _args_of(node: jn.Node, state: State, cost: CostBase, ctx: _Ctx) -> list[Val]:
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
