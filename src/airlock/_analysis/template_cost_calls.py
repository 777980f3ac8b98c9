"""template_cost: the abstract interpretation of filters, calls, methods and macros."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import jinja2.nodes as jn

from airlock._analysis.template_cost_base import CostBase
from airlock._analysis.template_cost_flow import (
    _branching,
    _count,
    _depths,
    _item,
    _merge_namespaces_into,
    _numeric,
    _progresses,
    _widest,
    arg_or,
)
from airlock._analysis.template_cost_values import (
    _BRACE_WIDTH,
    _INF,
    _MAX_CALL_DEPTH,
    DATA,
    MAX_MACRO_DEPTH,
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


class Calls(CostBase):
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
