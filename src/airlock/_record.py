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

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

__all__ = ["FrozenInstanceError", "record", "record_fields", "replace"]

_T = TypeVar("_T")
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


class _DataclassFields:
    """``__dataclass_fields__``, made when first asked for: the fields of a frozen dataclass twin
    with the same names, annotations and defaults, cached on the class."""

    def __get__(self, obj: object, owner: type) -> dict[str, Any]:
        import dataclasses

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

    def __init__(self: Any, *args: object, **kwargs: object) -> None:
        if len(args) > count:
            raise TypeError(f"{cls.__name__}() takes {count} arguments, got {len(args)}")
        # The fields are plain instance attributes (no slots, no descriptors): filling the
        # instance dict in one call is what object.__setattr__ on each would do, at a fraction of
        # the cost (records are made per zip member, finding and file: scans make thousands).
        values = dict(zip(names, args, strict=False))
        for name in names[len(args) :]:
            if name in kwargs:
                values[name] = kwargs.pop(name)
            elif name in defaults:
                values[name] = defaults[name]
            else:
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unexpected or repeated arguments {sorted(kwargs)}")
        self.__dict__.update(values)
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
