"""Frozen record classes for the modules every scan imports, without :mod:`dataclasses`.

``dataclasses`` imports :mod:`inspect` (and with it ``ast``, ``dis``, ``tokenize``: ~10 ms) and
compiles every generated method with ``exec`` when a class is defined (~1 ms a class). On the
path of ``airlock scan model.pt`` that was a third of the start-up (docs/scan.md, Performance).
:func:`record` gives a class the same behaviour from its annotations with plain functions:
``__init__`` taking the fields positionally or by name, defaults, ``__post_init__``, frozen
attributes, ``__eq__``/``__hash__`` over the fields, ``__repr__``, ``__match_args__``;
:func:`replace` is ``dataclasses.replace``. Type checkers see dataclasses (PEP 681), and so does
the ``dataclasses`` module: ``__dataclass_fields__`` is built on first use (by ``make_dataclass``,
so ``dataclasses.replace``/``fields``/``asdict``/``is_dataclass`` keep working for code that
treated these classes as dataclasses; only that code pays for importing ``dataclasses``).

Fields are the class's own annotations in order (with ``from __future__ import annotations``
they are strings; ``ClassVar[...]`` ones are not fields). A default is the class attribute of the
same name. Only immutable defaults are meant (there is no ``default_factory``).
"""

from __future__ import annotations

# the C descriptor collections.namedtuple gives each field (a property where there is none)
from collections import _tuplegetter  # type: ignore[attr-defined]

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (see ``airlock/__init__.py``): this module
#: is on every scan's start-up path, and ``typing`` is a tenth of it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, TypeVar, dataclass_transform

    _T = TypeVar("_T")
else:

    def dataclass_transform(**_kwargs: object) -> object:
        return lambda function: function


__all__ = ["FrozenInstanceError", "NamedTuple", "record", "record_fields", "replace"]
_FIELDS = "__record_fields__"
_DEFAULTS = "__record_defaults__"
_DATACLASS_FIELDS = "__dataclass_fields__"


class FrozenInstanceError(AttributeError):
    """Assigning to or deleting a field of a frozen record (as ``dataclasses.FrozenInstanceError``)."""


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _annotations(cls: type) -> dict[str, Any]:
    # not inspect.get_annotations: importing inspect is what this module avoids
    annotations: dict[str, Any] = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    return annotations


def _bind(
    name: str,
    fields: tuple[str, ...],
    defaults: dict[str, object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
) -> list[object]:
    """The field values of a call ``name(*args, **kwargs)``: positional first, then keywords, then
    defaults (the slow path of records and named tuples: a call with every field positional skips it)."""
    count = len(fields)
    if len(args) > count:
        raise TypeError(f"{name}() takes {count} arguments, got {len(args)}")
    values = list(args)
    for field in fields[len(args) :]:
        if field in kwargs:
            values.append(kwargs.pop(field))
        elif field in defaults:
            values.append(defaults[field])
        else:
            raise TypeError(f"{name}() missing argument {field!r}")
    if kwargs:
        raise TypeError(f"{name}() got unexpected or repeated arguments {sorted(kwargs)}")
    return values


class _DataclassFields:
    """``__dataclass_fields__``, made when first asked for: the fields of a frozen dataclass twin
    with the same names, annotations and defaults, cached on the class."""

    def __get__(self, obj: object, owner: type) -> dict[str, Any]:
        import dataclasses
        from typing import Any

        names: tuple[str, ...] = getattr(owner, _FIELDS)
        defaults: dict[str, object] = getattr(owner, _DEFAULTS)
        annotations = _annotations(owner)
        specs = [
            (
                n,
                annotations.get(n, Any),
                dataclasses.field(default=defaults[n]) if n in defaults else dataclasses.field(),
            )
            for n in names
        ]
        twin = dataclasses.make_dataclass(owner.__name__, specs, frozen=True)
        fields: dict[str, Any] = getattr(twin, _DATACLASS_FIELDS)
        type.__setattr__(owner, _DATACLASS_FIELDS, fields)
        return fields


@dataclass_transform(frozen_default=True)
def record(cls: type[_T]) -> type[_T]:
    """Make ``cls`` a frozen record of its annotated fields (see the module docstring)."""
    annotations = _annotations(cls)
    names = tuple(
        n for n, kind in annotations.items() if not str(kind).startswith(("ClassVar", "typing.ClassVar"))
    )
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    count = len(names)
    post_init: Callable[[Any], None] | None = getattr(cls, "__post_init__", None)
    setter = object.__setattr__

    # Fields go straight into the instance dictionary, in one call (a checkpoint's zip listing
    # makes a 13-field record per member: one setattr per field was a tenth of its scan) —
    # unless the class keeps no instance dictionary, or a field name is a descriptor of the
    # class (a property would not see the dictionary): then one object.__setattr__ per field.
    direct = cls.__dictoffset__ != 0 and not any(
        hasattr(type(_class_attribute(cls, name)), "__set__") for name in names
    )

    def __init__(self: Any, *args: object, **kwargs: object) -> None:
        values: tuple[object, ...] | list[object] = args
        if len(args) != count or kwargs:
            values = _bind(cls.__name__, names, defaults, args, kwargs)
        if direct:
            self.__dict__.update(zip(names, values, strict=True))
        else:
            for name, value in zip(names, values, strict=True):
                setter(self, name, value)
        if post_init is not None:
            post_init(self)

    def values(self: object) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in names])

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return values(self) == values(other)

    def __hash__(self: object) -> int:
        return hash(values(self))

    def __repr__(self: object) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{cls.__qualname__}({shown})"

    for method in (__init__, __eq__, __hash__, __repr__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
    attributes: dict[str, object] = {
        "__init__": __init__,
        "__eq__": __eq__,
        "__hash__": __hash__,
        "__repr__": __repr__,
        "__setattr__": _frozen_setattr,
        "__delattr__": _frozen_delattr,
        "__match_args__": names,
        _FIELDS: names,
        _DEFAULTS: defaults,
        _DATACLASS_FIELDS: _DataclassFields(),
    }
    for attribute, value in attributes.items():
        setattr(cls, attribute, value)
    return cls


def _class_attribute(cls: type, name: str) -> object:
    """What ``cls`` or a base class defines under ``name`` (None), without running descriptors."""
    return next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), None)


def record_fields(obj: object) -> tuple[str, ...]:
    """The field names of a record class or instance, in order."""
    names: tuple[str, ...] = getattr(obj, _FIELDS)
    return names


def replace(obj: _T, **changes: object) -> _T:
    """A copy of the record ``obj`` with some fields changed (``__post_init__`` runs again)."""
    names = record_fields(obj)
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {sorted(unknown)}")
    return type(obj)(**{name: changes.get(name, getattr(obj, name)) for name in names})


# --- NamedTuple ------------------------------------------------------------------------------
# ``typing.NamedTuple`` builds each class with ``collections.namedtuple``, which compiles a
# ``__new__`` for it with ``eval`` (~0.1 ms a class, and ``typing`` itself must be imported): with
# the fifteen fact and task classes of a scan that was a tenth of ``airlock scan``'s start-up.
# Modules on the scan path import this one at run time and ``typing.NamedTuple`` for type checkers:
#
#     TYPE_CHECKING = False
#     if TYPE_CHECKING:
#         from typing import NamedTuple
#     else:
#         from airlock._record import NamedTuple
#
# The classes are the same kind of object: tuple subclasses with ``_fields``, ``_field_defaults``,
# ``_make``, ``_replace``, ``_asdict``, ``__match_args__``, read-only field properties, the same
# ``repr``, equality, hashing and pickling (tests/unit/test_record.py compares them with
# ``typing.NamedTuple`` twins). Only the ``TypeError`` texts for wrong arguments differ in words.


def _tuple_class(name: str, namespace: dict[str, Any]) -> type:
    annotations: dict[str, object] = namespace.get("__annotations__", {})
    fields = tuple(annotations)
    for field in fields:
        if field.startswith("_"):
            raise ValueError(f"{name}: field names cannot start with an underscore: {field!r}")
    defaults = {f: namespace[f] for f in fields if f in namespace}
    for index, field in enumerate(fields):
        if field not in defaults and any(f in defaults for f in fields[:index]):
            raise TypeError(f"{name}: non-default field {field!r} follows a default field")
    count = len(fields)
    tuple_new = tuple.__new__

    def __new__(cls: type, *args: object, **kwargs: object) -> Any:
        if not kwargs and len(args) == count:
            return tuple_new(cls, args)
        return tuple_new(cls, _bind(name, fields, defaults, args, kwargs))

    def _make(cls: type, iterable: Iterable[object]) -> Any:
        values = tuple(iterable)
        if len(values) != count:
            raise TypeError(f"expected {count} arguments, got {len(values)}")
        return tuple_new(cls, values)

    def _replace(self: tuple[object, ...], **changes: object) -> Any:
        values = [changes.pop(f, v) for f, v in zip(fields, self, strict=True)]
        if changes:
            raise ValueError(f"got unexpected field names: {list(changes)!r}")
        return tuple_new(type(self), values)

    def _asdict(self: tuple[object, ...]) -> dict[str, object]:
        return dict(zip(fields, self, strict=True))

    def __repr__(self: tuple[object, ...]) -> str:
        shown = ", ".join(f"{f}={v!r}" for f, v in zip(fields, self, strict=True))
        return f"{type(self).__name__}({shown})"

    def __getnewargs__(self: tuple[object, ...]) -> tuple[object, ...]:
        return tuple(self)

    body = {k: v for k, v in namespace.items() if k not in defaults}
    body.update(
        __slots__=(),
        _fields=fields,
        _field_defaults=defaults,
        __match_args__=fields,
        __new__=__new__,
        _make=classmethod(_make),
        _replace=_replace,
        _asdict=_asdict,
        __getnewargs__=__getnewargs__,
    )
    body.setdefault("__repr__", __repr__)
    for index, field in enumerate(fields):
        body[field] = _tuplegetter(index, f"Alias for field number {index}")
    for method in (__new__, _make, _replace, _asdict, __repr__, __getnewargs__):
        method.__qualname__ = f"{namespace.get('__qualname__', name)}.{method.__name__}"
    return type(name, (tuple,), body)


class _NamedTupleMeta(type):
    def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
        if bases != (_NamedTupleBase,):
            raise TypeError("a NamedTuple class derives from NamedTuple only")
        return _tuple_class(name, namespace)


#: what ``class X(NamedTuple)`` derives from (made without running the metaclass, as typing does)
_NamedTupleBase = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})


def NamedTuple(name: str, fields: Iterable[tuple[str, object]] = ()) -> type:
    """``class X(NamedTuple): ...`` (or ``NamedTuple("X", [("a", int)])``), as ``typing.NamedTuple``."""
    return _tuple_class(name, {"__annotations__": dict(fields), "__module__": _caller_module()})


def _mro_entries(bases: tuple[object, ...]) -> tuple[type, ...]:
    return (_NamedTupleBase,)


NamedTuple.__mro_entries__ = _mro_entries  # type: ignore[attr-defined]


def _caller_module() -> str:
    import sys

    return str(sys._getframe(2).f_globals.get("__name__", "__main__"))
