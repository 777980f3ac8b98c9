"""The abstract values of template_cost: polynomials in the caller's data size, value bounds, limits."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final

import jinja2.nodes as jn

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
