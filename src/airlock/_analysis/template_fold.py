"""Constant folding for template analysis: the value of an expression built only from constants.

Used to see through keys and attribute names assembled from pieces (``'__cla' ~ 'ss__'``,
``'%s%s' % (...)``, ``|join``, ``|reverse``, slicing, ``{% set %}`` constants). Bounded (no result
longer than 4096 characters); evaluates nothing but str/list operations on constants.
"""

from __future__ import annotations

import re
from typing import Final

import jinja2.nodes as jn

__all__ = ["BUILT", "built_names", "fold", "may_build_string"]

_PRINTF_SIMPLE: Final = re.compile(r"%[%scd]")
_PRINTF_ANY: Final = re.compile(r"%")
_MAX_FOLD: Final = 4096
#: a dunder word, or a Python internal without underscores, anywhere in a string
_INTERNAL_TEXT: Final = re.compile(
    r"__[A-Za-z_]\w*__|mro|func_globals|func_code|func_closure|gi_frame|gi_code|gi_yieldfrom|f_globals|f_locals|f_builtins|f_back|f_code|"
    r"co_code|co_consts|tb_frame|tb_next|im_func|im_self|im_class|cr_frame|cr_code|ag_frame|ag_code|format_map"
)
_STRING_FILTERS: Final = frozenset(
    "join format string replace reverse lower upper trim first last center".split()
)
#: the parameters a keyword argument may name, by filter folded (``join(d='_')``, ``trim(chars='x')``);
#: None: positional arguments only (``format``, whose keywords fill ``%(name)s``)
_FILTER_PARAMS: Final[dict[str, tuple[str, ...] | None]] = {
    "join": ("d",), "trim": ("chars",), "replace": ("old", "new"), "format": None,
}  # fmt: skip


#: what a name bound to a string the template writes (``{% set k %}...{% endset %}``) stands for
BUILT: Final = jn.Concat([])


def may_build_string(
    node: jn.Node, consts: dict[str, object] | None = None, built: frozenset[str] | set[str] = frozenset()
) -> bool:
    """True when an unresolved key expression may assemble a string (and so an attribute name).

    Besides the string-building operators, any key computed from a constant that holds a Python
    internal's name (``'zz__class__'.split('zz')[1]``, ``'zz__class__'[n:]`` with ``n`` from data):
    the folder does not model every string operation, and what it cannot fold it must not trust.
    ``built`` (:func:`built_names`): the template's names bound to such strings, followed through.
    """
    consts = consts or {}
    return _builds(node, consts) or bool(built and not built.isdisjoint(_references(node)))


def built_names(bindings: dict[str, list[jn.Node]], consts: dict[str, object]) -> set[str]:
    """The names (a name, ``.attr`` for a namespace attribute, ``()m`` for macro ``m``'s output)
    that some binding of the template makes a string it assembles, directly or through other such
    names: ``{% set k %}__init__{% endset %}`` then ``x[k]``, a dict value, a loop over strings
    the template built, a macro's parameter given one. ``bindings``: every expression each name is
    bound to (:data:`BUILT` for a string the template writes). One pass over the bindings, then
    the names that depend on a built one (linear; names the template does not bind are data)."""
    built: set[str] = set()
    users: dict[str, set[str]] = {}
    for name, values in bindings.items():
        for value in values:
            if _builds(value, consts):
                built.add(name)
            for used in _references(value):
                users.setdefault(used, set()).add(name)
    todo = list(built)
    while todo:
        for user in users.get(todo.pop(), ()):
            if user not in built:
                built.add(user)
                todo.append(user)
    return built


def _references(node: jn.Node) -> set[str]:
    """The names an expression reads (``.attr`` for attribute reads, ``()m`` for calls of ``m``)."""
    found: set[str] = set()
    for sub in [node, *node.find_all((jn.Name, jn.Getattr, jn.Call))]:
        if isinstance(sub, jn.Name) and sub.ctx == "load":
            found.add(sub.name)
        elif isinstance(sub, jn.Getattr):
            found.add("." + sub.attr)
        elif isinstance(sub, jn.Call) and isinstance(sub.node, jn.Name):
            found.add("()" + sub.node.name)
    return found


def _builds(node: jn.Node, consts: dict[str, object]) -> bool:
    """The expression, or a part of it, assembles a string (or names an internal in a constant)."""
    if _holds_internal(node, consts) or isinstance(node, jn.Concat):
        return True
    for sub in [node, *node.find_all((jn.Add, jn.Mul, jn.Mod, jn.Filter, jn.Call, jn.Concat))]:
        if sub is not node and _builds_here(sub, consts):
            return True
    return _builds_here(node, consts)


def _builds_here(node: jn.Node, consts: dict[str, object]) -> bool:
    if isinstance(node, jn.Concat):
        return True
    if isinstance(node, jn.Add | jn.Mul | jn.Mod):
        return any(isinstance(c.value, str) for c in node.find_all(jn.Const))
    if isinstance(node, jn.Filter):
        # map('replace', ...) applies a string filter to every item
        applied = fold(node.args[0], consts) if node.name == "map" and node.args else None
        return node.name in _STRING_FILTERS or applied in _STRING_FILTERS
    if isinstance(node, jn.Call) and isinstance(node.node, jn.Getattr):
        return node.node.attr in ("join", "format", "replace", "lower", "upper", "strip", "lstrip", "rstrip")
    return False


def _holds_internal(node: jn.Node, consts: dict[str, object]) -> bool:
    """A string constant (or a ``{% set %}`` constant) in the expression names a Python internal."""
    texts = [c.value for c in node.find_all(jn.Const) if isinstance(c.value, str)]
    texts += [v for n in node.find_all(jn.Name) if isinstance(v := consts.get(n.name), str)]
    return any(_INTERNAL_TEXT.search(t) for t in texts)


def fold(node: jn.Node, consts: dict[str, object]) -> object:
    """The value of an expression built only from constants, or None. Bounded; runs nothing."""
    if isinstance(node, jn.Const):
        value = node.value
        return value if isinstance(value, str | int | float | bool) else None
    if isinstance(node, jn.Name) and node.ctx == "load":
        return consts.get(node.name)
    if isinstance(node, jn.Neg):  # a negative literal (``[::-1]``) parses as Neg(Const)
        value = fold(node.node, consts)
        return -value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(node, jn.List | jn.Tuple):
        items = [fold(item, consts) for item in node.items]
        return None if any(i is None for i in items) else items
    if isinstance(node, jn.Concat):
        parts = [fold(item, consts) for item in node.nodes]
        if any(p is None or isinstance(p, list) for p in parts):
            return None
        return _bounded("".join(str(p) for p in parts))
    if isinstance(node, jn.Add | jn.Mul | jn.Mod):
        left, right = fold(node.left, consts), fold(node.right, consts)
        return _binary(node, left, right)
    if isinstance(node, jn.Getitem):
        base = fold(node.node, consts)
        if isinstance(base, str | list) and isinstance(node.arg, jn.Slice):
            given = [b for b in (node.arg.start, node.arg.stop, node.arg.step)]
            bounds = [None if b is None else fold(b, consts) for b in given]
            # a bound that is given but not constant is unknown, not absent: no value
            known = all(b is None or v is not None for b, v in zip(given, bounds, strict=True))
            if known and all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds):
                start, stop, step = (b if isinstance(b, int) else None for b in bounds)
                if step == 0:
                    return None
                return base[start:stop:step]
        index = fold(node.arg, consts)
        if isinstance(base, str | list) and isinstance(index, int) and -len(base) <= index < len(base):
            return base[index]
        return None
    if isinstance(node, jn.Filter) and node.node is not None:
        args = _arguments(node, consts, _FILTER_PARAMS.get(node.name, ()))
        return None if args is None else _fold_filter(node, fold(node.node, consts), args)
    if isinstance(node, jn.Call) and isinstance(node.node, jn.Getattr):
        receiver = fold(node.node.node, consts)
        args = _arguments(node, consts, ())
        if args is None or not isinstance(receiver, str):
            return None
        attr = node.node.attr
        if attr == "join" and len(args) == 1 and isinstance(args[0], list):
            return _bounded(receiver.join(str(a) for a in args[0]))
        if attr in ("lower", "upper") and not args:
            return getattr(receiver, attr)()
        if attr in ("strip", "lstrip", "rstrip") and (
            not args or (len(args) == 1 and isinstance(args[0], str))
        ):
            return getattr(receiver, attr)(*args)
        if attr == "replace":
            return _replace(receiver, args)
    return None


def _arguments(
    node: jn.Filter | jn.Call, consts: dict[str, object], params: tuple[str, ...] | None
) -> list[object] | None:
    """Every argument of a filter or call folded, keywords put at their parameter's position
    (``params``; None: positional arguments only, as ``format`` takes them), or None when any is
    unknown: a value folded without one of its arguments would be a wrong value, trusted as a key
    (``'x__class__x'|trim('x')`` is ``'__class__'``, not ``'x__class__x'``)."""
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        return None
    args = [fold(a, consts) for a in node.args]
    for keyword in node.kwargs:
        if params is None or keyword.key not in params or params.index(keyword.key) != len(args):
            return None
        args.append(fold(keyword.value, consts))
    return None if any(a is None for a in args) else args


def _binary(node: jn.Node, left: object, right: object) -> object:
    if left is None or right is None:
        return None
    if isinstance(node, jn.Add):
        if isinstance(left, str) and isinstance(right, str):
            return _bounded(left + right)
        return None
    if isinstance(node, jn.Mul):
        if isinstance(left, int) and isinstance(right, str):
            left, right = right, left
        if isinstance(left, str) and isinstance(right, int) and not isinstance(right, bool):
            return left * right if len(left) * max(right, 0) <= _MAX_FOLD else None
        return None
    # '%' formatting only with %s %c %d and no width or precision: bounded output, no attribute access.
    if isinstance(left, str) and len(_PRINTF_ANY.findall(left)) == len(_PRINTF_SIMPLE.findall(left)):
        args = tuple(right) if isinstance(right, list) else (right,)
        try:
            return _bounded(left % args)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def _fold_filter(node: jn.Filter, value: object, args: list[object]) -> object:
    if value is None:
        return None
    if node.name == "join" and isinstance(value, list) and len(args) <= 1:
        sep = args[0] if args else ""  # jinja joins with str(d): join(2) puts '2' between items
        return _bounded(str(sep).join(str(v) for v in value)) if type(sep) in (str, int) else None
    if node.name == "trim" and isinstance(value, str) and len(args) <= 1:
        chars = args[0] if args else None
        return value.strip(chars) if chars is None or isinstance(chars, str) else None
    if args and node.name not in ("format", "replace"):
        return None  # the filters below take no arguments
    if node.name == "reverse" and isinstance(value, str | list):
        return value[::-1]
    if node.name in ("lower", "upper", "string") and isinstance(value, str):
        return value.lower() if node.name == "lower" else value.upper() if node.name == "upper" else value
    if node.name in ("first", "last") and isinstance(value, str | list) and value:
        return value[0] if node.name == "first" else value[-1]
    if node.name == "format" and isinstance(value, str):
        return _binary(jn.Mod(), value, list(args))
    if node.name == "replace" and isinstance(value, str):
        return _replace(value, args)
    return None


def _replace(text: str, args: list[object]) -> str | None:
    old, new = [*args, None, None][:2]
    if len(args) != 2 or not isinstance(old, str) or not isinstance(new, str):
        return None
    return text.replace(old, new) if len(text) * (len(new) + 1) <= _MAX_FOLD else None


def _bounded(text: str) -> str | None:
    return text if len(text) <= _MAX_FOLD else None
