"""``airlock._record``: the frozen records behind results, limits and the policy behave as the
frozen dataclasses they replaced, for airlock and for code that uses ``dataclasses`` on them."""

from __future__ import annotations

import dataclasses
import pickle
import typing
from typing import ClassVar

import pytest

from airlock._record import FrozenInstanceError, record, record_fields, replace
from airlock._record import NamedTuple as LightNamedTuple
from airlock.errors import UsageError
from airlock.limits import DEFAULT_LIMITS, Limits
from airlock.policy import Policy
from airlock.results import Finding, Location, Report, Severity


@record
class Point:
    x: int
    y: int = 0
    label: str | None = None
    shared: ClassVar[int] = 7


def test_fields_defaults_and_arguments() -> None:
    assert record_fields(Point) == ("x", "y", "label")  # a ClassVar is no field
    assert Point(1) == Point(x=1, y=0, label=None) == Point(1, 0)
    assert Point(1, 2, "a").label == "a"
    assert repr(Point(1, label="a")) == "Point(x=1, y=0, label='a')"
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 3 arguments"):
        Point(1, 2, "a", 4)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="repeated"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected"):
        Point(1, z=2)  # type: ignore[call-arg]


def test_frozen_equality_and_hash() -> None:
    point = Point(1, 2)
    with pytest.raises(FrozenInstanceError):
        point.x = 3  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del point.y
    assert isinstance(FrozenInstanceError("x"), AttributeError)
    not_a_record: object = (1, 2, None)
    assert point != Point(1, 3) and point != not_a_record
    assert {Point(1, 2), Point(1, 2), Point(2, 1)} == {Point(1, 2), Point(2, 1)}
    assert pickle.loads(pickle.dumps(point)) == point
    match point:
        case Point(1, y):
            assert y == 2
        case _:
            pytest.fail("positional match")


def test_replace_reruns_post_init() -> None:
    assert replace(Point(1, 2), y=5) == Point(1, 5)
    with pytest.raises(TypeError, match="no field"):
        replace(Point(1), z=1)
    assert DEFAULT_LIMITS.replace(max_files=3).max_files == 3
    for bad in (0, -1, True, "3"):
        with pytest.raises(UsageError, match="max_files"):
            DEFAULT_LIMITS.replace(max_files=bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown limit"):
        DEFAULT_LIMITS.replace(max_filez=3)


def test_dataclasses_still_see_dataclasses() -> None:
    """Code that used ``dataclasses`` on airlock's results and limits keeps working."""
    assert dataclasses.is_dataclass(DEFAULT_LIMITS) and dataclasses.is_dataclass(Limits)
    assert [f.name for f in dataclasses.fields(Limits)] == list(record_fields(Limits))
    changed = dataclasses.replace(DEFAULT_LIMITS, max_files=9)
    assert type(changed) is Limits and changed.max_files == 9 and changed != DEFAULT_LIMITS
    with pytest.raises(UsageError):
        dataclasses.replace(DEFAULT_LIMITS, max_files=0)
    finding = Finding("r", Severity.INFO, "m", Location("p", ("a",), 3))
    assert dataclasses.asdict(finding)["location"] == {"path": "p", "members": ("a",), "offset": 3}
    assert dataclasses.replace(Report("r", ()), root="s") == Report("s", ())
    assert [f.name for f in dataclasses.fields(Policy)] == ["profiles", "allow", "sources"]


def test_policy_equality_ignores_its_table() -> None:
    assert Policy() == Policy() and hash(Policy()) == hash(Policy())
    assert Policy(allow=frozenset({"a.b"})) != Policy()
    with pytest.raises(UsageError, match="unknown profile"):
        Policy(profiles=("nope",))


# --- NamedTuple: typing.NamedTuple's classes without compiling code per class ------------------


class HeavyIssue(typing.NamedTuple):
    rule: str
    severity: int
    offset: int | None = None
    evidence: str | None = None

    def shown(self) -> str:
        return f"{self.rule}@{self.offset}"


class LightIssue(LightNamedTuple):  # type: ignore[valid-type,misc]
    rule: str
    severity: int
    offset: int | None = None
    evidence: str | None = None

    def shown(self) -> str:
        return f"{self.rule}@{self.offset}"


def _twins() -> tuple[typing.Any, typing.Any]:
    return HeavyIssue, LightIssue


def test_named_tuple_behaves_as_typing_s() -> None:
    heavy, cheap = _twins()
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = [
        (("r", 1), {}),
        (("r", 1, 5), {}),
        (("r",), {"severity": 2}),
        (("r", 1), {"evidence": "e"}),
        ((), {"rule": "r", "severity": 1, "offset": 3, "evidence": "e"}),
        (("r", 1, 5, "e"), {}),
    ]
    for args, kwargs in calls:
        a, b = heavy(*args, **kwargs), cheap(*args, **kwargs)
        assert tuple(a) == tuple(b) and a == b and hash(a) == hash(b)
        assert repr(a).replace("Heavy", "Light") == repr(b)
        assert a._asdict() == b._asdict()
        assert a._replace(offset=9) == b._replace(offset=9)
        assert type(b._replace(offset=9)) is cheap
        assert b.shown() == a.shown() and b.rule == a.rule and b[1] == a[1]
        assert isinstance(b, tuple) and type(pickle.loads(pickle.dumps(b))) is cheap
        assert pickle.loads(pickle.dumps(b)) == b
    assert cheap._fields == heavy._fields == cheap.__match_args__
    assert cheap._field_defaults == heavy._field_defaults
    assert cheap._make(["r", 1, None, None]) == heavy._make(["r", 1, None, None])
    b = cheap("r", 1)
    with pytest.raises(AttributeError):
        b.rule = "x"  # read-only, like typing's
    with pytest.raises(AttributeError):
        b.extra = 1  # no __dict__: __slots__ = ()
    match b:
        case cheap(rule, severity):
            assert (rule, severity) == ("r", 1)


def test_named_tuple_refuses_what_typing_refuses() -> None:
    heavy, cheap = _twins()
    bad: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((), {}),  # missing required
        (("r",), {}),
        (("r", 1, 2, "e", "x"), {}),  # too many
        (("r", 1), {"nope": 1}),  # unknown
        (("r", 1), {"rule": "again"}),  # given twice
    ]
    for args, kwargs in bad:
        for cls in (heavy, cheap):
            with pytest.raises(TypeError):
                cls(*args, **kwargs)
    with pytest.raises(ValueError, match="unexpected field"):
        cheap("r", 1)._replace(nope=1)
    with pytest.raises(TypeError):
        cheap._make(["r"])
    with pytest.raises(TypeError, match="non-default"):

        class Wrong(LightNamedTuple):  # type: ignore[valid-type,misc]
            a: int = 1
            b: int

    with pytest.raises(ValueError, match="underscore"):

        class Hidden(LightNamedTuple):  # type: ignore[valid-type,misc]
            _a: int


def test_scan_facts_are_the_light_named_tuples() -> None:
    """The classes on the scan path use airlock's NamedTuple at run time (no ``typing``)."""
    from airlock._formats.base import Issue, Nested, PickleStream, ReadContext
    from airlock._scan.pool import Task
    from airlock._scan.walk import Entry

    for cls in (Issue, Nested, PickleStream, ReadContext, Task, Entry):
        assert issubclass(cls, tuple) and cls.__new__.__module__ == "airlock._record", cls


@record
class Slotted:
    __slots__ = ("x", "y")
    x: int
    y: int


def test_fields_land_where_the_class_keeps_them() -> None:
    """Fields go to the instance dict in one call, or through the class's slots when it has them."""
    slotted = Slotted(1, y=2)
    assert (slotted.x, slotted.y) == (1, 2) and not hasattr(slotted, "__dict__")
    assert Slotted(1, 2) == slotted
    point = Point(3, label="p")
    assert vars(point) == {"x": 3, "y": 0, "label": "p"}
    with pytest.raises(FrozenInstanceError):
        point.x = 4  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected"):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 3"):
        Point(1, 2, "a", 4)  # type: ignore[call-arg]


class _Base:
    @property
    def x(self) -> int:
        return 41

    @x.setter
    def x(self, value: int) -> None:
        object.__setattr__(self, "_x_seen", value)


@record
class OverBase(_Base):
    x: int


def test_a_field_named_like_a_base_class_property_goes_through_it() -> None:
    """The one-update path would hide the value behind the base class's property."""
    item = OverBase(5)
    assert item._x_seen == 5  # type: ignore[attr-defined]
