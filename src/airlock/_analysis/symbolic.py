"""Reasoning over the symbolic object graph: name computed callables, render calls, fold constants.

All walks are bounded in depth and output size, so cyclic or deeply nested graphs cannot make them
recurse without end.
"""

from __future__ import annotations

from collections.abc import Callable

from airlock._analysis.pickle_vm import (
    Call,
    Const,
    DictNode,
    Ext,
    Global,
    ListNode,
    Node,
    PersId,
    SetNode,
    TupleNode,
)

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["args_of", "fold_bytes", "render", "resolve"]

_MAX_DEPTH: Final = 6
_RENDER_DEPTH: Final = 5
_RENDER_CHARS: Final = 240

_GETATTR: Final = frozenset({"builtins.getattr", "builtins.object.__getattribute__"})
_IMPORTERS: Final = frozenset(
    {
        "builtins.__import__",
        "importlib.import_module",
        "importlib.__import__",
        "importlib._bootstrap._gcd_import",
    }
)
_RESOLVERS: Final = frozenset({"pkgutil.resolve_name", "pydoc.locate", "pydoc._builtin_resolve"})
_ATTRGETTER: Final = frozenset({"operator.attrgetter", "_operator.attrgetter"})
_METHODCALLER: Final = frozenset({"operator.methodcaller", "_operator.methodcaller"})
_PARTIAL: Final = frozenset({"functools.partial", "_functools.partial", "functools.partialmethod"})
_LOOKUP_SUFFIXES: Final = (".__dict__.get", ".__dict__.__getitem__", ".__getattribute__", ".modules.get")


def args_of(call: Call) -> list[Node] | None:
    """The positional arguments of a call when they are a literal tuple or list."""
    if isinstance(call.args, TupleNode | ListNode):
        return call.args.items
    return None


def _const_str(node: Node) -> str | None:
    if isinstance(node, Const) and isinstance(node.value, str):
        return node.value
    return None


def resolve(node: Node, depth: int = 0) -> str | None:
    """The dotted name of the object ``node`` evaluates to, when that can be known statically.

    Follows imports, attribute walks by ``getattr`` / ``attrgetter`` / ``__dict__.get``,
    ``__import__`` / ``import_module`` / ``pkgutil.resolve_name`` of constant names, and
    ``functools.partial`` wrappers.
    """
    if depth > _MAX_DEPTH:
        return None
    if isinstance(node, Global):
        return node.dotted
    if isinstance(node, PersId):
        # torch's legacy persistent_load returns the class for ('module', cls, source_file, source)
        pid = node.pid
        if (
            isinstance(pid, TupleNode)
            and len(pid.items) >= 2
            and isinstance(pid.items[0], Const)
            and pid.items[0].value == "module"
        ):
            return resolve(pid.items[1], depth + 1)
        return None
    if not isinstance(node, Call):
        return None
    func = resolve(node.func, depth + 1)
    args = args_of(node)
    if func is None or args is None:
        # attrgetter('a.b')(x): the callee is itself a call
        if isinstance(node.func, Call) and args:
            inner = resolve(node.func.func, depth + 1)
            inner_args = args_of(node.func)
            if inner in _ATTRGETTER and inner_args and (path := _const_str(inner_args[0])) is not None:
                base = resolve(args[0], depth + 1)
                return f"{base}.{path}" if base else None
            if inner in _PARTIAL and inner_args:
                return None  # calling a partial returns whatever the wrapped callable returns
        return None
    if func in _GETATTR and len(args) >= 2 and (attr := _const_str(args[1])) is not None:
        base = resolve(args[0], depth + 1)
        return f"{base}.{attr}" if base else None
    if func in _IMPORTERS and args and (name := _const_str(args[0])) is not None:
        return name
    if func in _RESOLVERS and args and (name := _const_str(args[0])) is not None:
        return name.replace(":", ".")
    for suffix in _LOOKUP_SUFFIXES:
        if func.endswith(suffix) and args and (attr := _const_str(args[0])) is not None:
            base = func[: -len(suffix)]
            return attr if suffix == ".modules.get" else f"{base}.{attr}"
    return None


def callee(call: Call) -> tuple[str | None, list[Node] | None]:
    """The dotted name of what ``call`` really invokes, and with which positional arguments.

    ``methodcaller('system', cmd)(os)`` invokes ``os.system(cmd)``; ``partial(f, a)(b)`` invokes
    ``f(a, b)``.
    """
    args = args_of(call)
    if isinstance(call.func, Call):
        inner = resolve(call.func.func)
        inner_args = args_of(call.func)
        if inner in _METHODCALLER and inner_args and (method := _const_str(inner_args[0])) and args:
            base = resolve(args[0])
            return (f"{base}.{method}" if base else None), inner_args[1:]
        if inner in _PARTIAL and inner_args:
            return resolve(inner_args[0]), inner_args[1:] + (args or [])
    return resolve(call.func), args


def render(node: Node, depth: int = 0) -> str:
    """One line of Python-like text for ``node``, bounded in depth and length."""
    text = _render(node, depth)
    return text if len(text) <= _RENDER_CHARS else text[: _RENDER_CHARS - 3] + "..."


def _render(node: Node, depth: int) -> str:
    if depth > _RENDER_DEPTH:
        return "..."
    if isinstance(node, Const):
        value = node.value
        if isinstance(value, memoryview):
            return f"<{len(value)} bytes>"
        if isinstance(value, str | bytes) and len(value) > 80:
            return repr(value[:77]) + "..."
        return repr(value)
    if isinstance(node, Global):
        return node.dotted
    if isinstance(node, Call):
        name, args = callee(node)
        shown_args = args if args is not None else None
        head = name or _render(node.func, depth + 1)
        if shown_args is None:
            return f"{head}(*{_render(node.args, depth + 1)})"
        return f"{head}({', '.join(_render(a, depth + 1) for a in shown_args[:6])}{', ...' if len(shown_args) > 6 else ''})"
    if isinstance(node, TupleNode):
        inner = ", ".join(_render(i, depth + 1) for i in node.items[:6])
        return f"({inner}{',' if len(node.items) == 1 else ''}{', ...' if len(node.items) > 6 else ''})"
    if isinstance(node, ListNode):
        return f"[{', '.join(_render(i, depth + 1) for i in node.items[:6])}{', ...' if len(node.items) > 6 else ''}]"
    if isinstance(node, SetNode):
        return f"{{{', '.join(_render(i, depth + 1) for i in node.items[:6])}}}"
    if isinstance(node, DictNode):
        pairs = ", ".join(f"{_render(k, depth + 1)}: {_render(v, depth + 1)}" for k, v in node.items[:6])
        return f"{{{pairs}{', ...' if len(node.items) > 6 else ''}}}"
    if isinstance(node, PersId):
        return f"persistent_load({_render(node.pid, depth + 1)})"
    if isinstance(node, Ext):
        return f"<extension {node.code}>"
    return f"<{type(node).__name__.lower()}>"


def _decoders() -> dict[str, Callable[[bytes], bytes]]:
    # Imported when a pickle actually passes bytes through a decoder: rare, and not free at start-up.
    import base64
    import binascii

    return {
        "base64.b64decode": base64.b64decode,
        "base64.standard_b64decode": base64.standard_b64decode,
        "base64.urlsafe_b64decode": base64.urlsafe_b64decode,
        "base64.b32decode": base64.b32decode,
        "base64.b16decode": base64.b16decode,
        "base64.b85decode": base64.b85decode,
        "base64.a85decode": base64.a85decode,
        "base64.decodebytes": base64.decodebytes,
        "binascii.a2b_base64": binascii.a2b_base64,
        "binascii.unhexlify": binascii.unhexlify,
        "binascii.a2b_hex": binascii.a2b_hex,
    }


def _bounded_decompress(kind: str, data: bytes, limit: int) -> bytes | None:
    import bz2
    import lzma
    import zlib

    try:
        if kind == "zlib":
            out = zlib.decompressobj().decompress(data, limit + 1)
        elif kind == "bz2":
            out = bz2.BZ2Decompressor().decompress(data, limit + 1)
        else:
            out = lzma.LZMADecompressor().decompress(data, limit + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError):
        return None
    return out if len(out) <= limit else None


def fold_bytes(node: Node, limit: int, depth: int = 0) -> bytes | None:
    """The bytes ``node`` evaluates to, when built from constants by known pure decoders."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(node, Const):
        value = node.value
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, memoryview):
            return bytes(value) if len(value) <= limit else None
        if isinstance(value, str):
            return value.encode("latin-1", "ignore") if len(value) <= limit else None
        return None
    if not isinstance(node, Call):
        return None
    func = resolve(node.func)
    args = args_of(node)
    if func is None or not args:
        return None
    try:
        if func in ("_codecs.encode", "codecs.encode"):
            text = args[0].value if isinstance(args[0], Const) else None
            encoding = _const_str(args[1]) if len(args) > 1 else "utf-8"
            if isinstance(text, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
                return text.encode(encoding)
            return None
        inner = fold_bytes(args[0], limit, depth + 1)
        if inner is None:
            return None
        decoders = _decoders() if func.startswith(("base64.", "binascii.")) else {}
        if func in decoders:
            return bytes(decoders[func](inner))
        if func == "builtins.bytes.fromhex":
            return bytes.fromhex(inner.decode("ascii"))
        if func in ("zlib.decompress",):
            return _bounded_decompress("zlib", inner, limit)
        if func in ("bz2.decompress",):
            return _bounded_decompress("bz2", inner, limit)
        if func in ("lzma.decompress",):
            return _bounded_decompress("lzma", inner, limit)
        if func in ("codecs.decode", "_codecs.decode") and len(args) > 1 and _const_str(args[1]) == "base64":
            return _decoders()["base64.b64decode"](inner)
    except (ValueError, TypeError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    return None
