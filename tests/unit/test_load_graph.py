"""Realising the symbolic pickle graph (``airlock._load.graph``), one rule per case, exact messages.

Pickles are assembled here opcode by opcode (writing bytes, never unpickling them), run through
airlock's own symbolic machine, then realised with a storage resolver that hands out in-memory
storages. Every constructor the realiser knows is exercised with its accepted shapes and each
way it refuses one; every other callable or global is a PolicyError naming it.
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import sys
from typing import Any

import pytest

from airlock._analysis.pickle_graph import PickleResult
from airlock._analysis.pickle_vm import Machine
from airlock._load import graph
from airlock._load.dtypes import DTYPES, QUANTIZED_STORAGES, STORAGE_TYPES
from airlock._load.graph import MAX_DEPTH, Quantized, StorageType, TypedStorage, realise
from airlock._load.model import Storage, TensorRef
from airlock.errors import FormatError, LimitError, PolicyError
from airlock.limits import Limits

# -- a tiny pickle assembler ----------------------------------------------------------------------------


def c(value: object) -> bytes:
    """A constant, as protocol-3 opcodes without memo."""
    out = io.BytesIO()
    p = pickle.Pickler(out, protocol=3)
    p.fast = True
    p.dump(value)
    return out.getvalue()[2:-1]


def g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b"t"


def lst(*parts: bytes) -> bytes:
    return b"](" + b"".join(parts) + b"e"


def dct(*pairs: tuple[bytes, bytes]) -> bytes:
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def call(dotted: str, *args: bytes) -> bytes:
    module, _, name = dotted.rpartition(".")
    return g(module, name) + tup(*args) + b"R"


def newobj(dotted: str, *args: bytes) -> bytes:
    module, _, name = dotted.rpartition(".")
    return g(module, name) + tup(*args) + b"\x81"


def build(obj: bytes, state: bytes) -> bytes:
    return obj + state + b"b"


def pid(kind: str, key: str, numel: int) -> bytes:
    return tup(c("storage"), g("torch", kind), c(key), c("cpu"), c(numel)) + b"Q"


def run(body: bytes) -> PickleResult:
    return Machine(memoryview(b"\x80\x03" + body + b"."), Limits()).run(0)


#: every storage's bytes: 0, 1, 2, ... (enough for any view below)
DATA = bytes(range(256)) * 4


class Resolver:
    def __init__(self) -> None:
        self.seen: list[tuple[object, ...]] = []

    def __call__(self, p: tuple[object, ...], offset: int) -> TypedStorage:
        self.seen.append(p)
        _, kind, key, _loc, numel = p
        assert isinstance(kind, StorageType) and isinstance(key, str) and isinstance(numel, int)
        q = QUANTIZED_STORAGES.get(kind.name)
        if q is not None:
            assert q[1] is not None
            dtype, quantized = DTYPES[q[1]], q[0]
        else:
            dtype, quantized = DTYPES[STORAGE_TYPES[kind.name]], None
        n = numel * dtype.itemsize
        return TypedStorage(Storage(key, n, 0, (0, n), 1, DATA[:n]), dtype, quantized)


def load(body: bytes, allow: frozenset[str] = frozenset()) -> Any:
    return realise(run(body), Resolver(), allow)


def refused(body: bytes, error: type[Exception], pattern: str, allow: frozenset[str] = frozenset()) -> str:
    with pytest.raises(error) as info:
        load(body, allow)
    assert type(info.value) is error
    assert re.fullmatch(pattern, str(info.value)), str(info.value)
    return str(info.value)


def offset_of(body: bytes, opcode: bytes, nth: int = 0) -> int:
    """Where the nth ``opcode`` byte sits in the whole pickle (after the 2-byte PROTO)."""
    pos = -1
    for _ in range(nth + 1):
        pos = body.index(opcode, pos + 1)
    return pos + 2


F = pid("FloatStorage", "0", 16)
HOOKS = dct()


def v2(storage: bytes = F, offset: int = 0, size: tuple[int, ...] = (2, 3), stride: tuple[int, ...] = (3, 1),
       *extra: bytes) -> bytes:  # fmt: skip
    return call(
        "torch._utils._rebuild_tensor_v2", storage, c(offset), c(size), c(stride), c(False), HOOKS, *extra
    )


def view(ref: object) -> tuple[object, ...]:
    assert isinstance(ref, TensorRef)
    return (
        ref.storage.key,
        ref.dtype.name,
        ref.offset,
        ref.shape,
        ref.stride,
        ref.neg,
        ref.conj,
        ref.quantized,
    )


# -- plain data ----------------------------------------------------------------------------------------


def test_plain_containers() -> None:
    body = dct(
        (c("t"), tup(c(1), c(2.5), c(None), c(True))),
        (c("l"), lst(c("x"), c(b"y"))),
        (c(1), c(2)),
        (c(1.0), c(3)),  # the same key as 1, as in Python: the last value wins
        (c("s"), b"\x8f(" + c(4) + b"\x90"),  # EMPTY_SET, MARK, ADDITEMS: realised as a list
        (c(b"k"), b"(" + c(5) + b"\x91"),  # FROZENSET
    )
    assert load(body) == {"t": (1, 2.5, None, True), "l": ["x", b"y"], 1: 3, "s": [4], b"k": [5]}


def test_large_bytes_are_bytes() -> None:
    out = load(c(b"\x01" * 300_000))
    assert type(out) is bytes and out == b"\x01" * 300_000


def test_tuple_keys_and_nested_tuple_keys() -> None:
    body = dct((tup(c(1), tup(c("a"), c(None))), c("v")), (c(None), c(1)), (c(False), c(2)))
    assert load(body) == {(1, ("a", None)): "v", None: 1, False: 2}


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (lst(c(1)), "list"),
        (dct(), "dict"),
        (tup(c(1), lst()), "tuple"),
        (g("torch", "FloatStorage"), "StorageType"),
    ],
)
def test_unhashable_or_odd_keys_are_refused(key: bytes, kind: str) -> None:
    body = dct((key, c(1)))
    refused(body, FormatError, rf"dict at offset 2: key .* is a {kind}; airlock\.load names tensors by "
            r"None/bool/number/string/bytes keys and tuples of them")  # fmt: skip


def test_shared_objects_stay_shared() -> None:
    body = lst(c(1)) + b"q\x00" + tup(b"h\x00", b"h\x00")  # BINPUT 0, then BINGET 0 twice
    first, second = load(body)
    assert first is second and first == [1]


def test_an_object_containing_itself_is_refused() -> None:
    body = b"]q\x00" + b"h\x00" + b"a"  # EMPTY_LIST, BINPUT, BINGET, APPEND: l.append(l)
    refused(body, FormatError, r"the pickle's object graph refers to itself at offset 2")


@pytest.mark.parametrize(("levels", "ok"), [(MAX_DEPTH - 1, True), (MAX_DEPTH, True), (MAX_DEPTH + 1, False)])
def test_nesting_limit(levels: int, ok: bool) -> None:
    # the walk recurses a few frames per level: room for mutation tools' wrappers around each call
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        _nesting(levels, ok)
    finally:
        sys.setrecursionlimit(limit)


def _nesting(levels: int, ok: bool) -> None:
    # `levels` lists inside each other around an int: the int is at depth `levels`
    body = b"".join(b"(" for _ in range(levels)) + c(7) + b"l" * levels
    if ok:
        value = load(body)
        for _ in range(levels):
            value = value[0]
        assert value == 7
    else:
        refused(
            body, LimitError, rf"objects nested deeper than 200 levels in the pickle \(offset {2 + levels}\)"
        )


def test_max_depth() -> None:
    assert MAX_DEPTH == 200


def test_broken_pickle_is_its_error() -> None:
    with pytest.raises(FormatError, match=r"^MARK expected but not found$"):
        realise(run(b"t"), Resolver(), frozenset())  # TUPLE without a MARK


def test_a_pickle_that_builds_nothing() -> None:
    with pytest.raises(FormatError, match=r"^the pickle builds no object$"):
        realise(PickleResult(0, 0, 2, None), Resolver(), frozenset())


def test_extension_codes_and_other_nodes_are_refused() -> None:
    refused(b"\x82\x05", PolicyError, r"Ext at pickle offset 2 is not something airlock\.load realises")


# -- globals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name", "value"),
    [
        ("torch", "FloatStorage", StorageType("FloatStorage")),
        ("torch", "AnythingStorage", StorageType("AnythingStorage")),
        ("torch", "UntypedStorage", StorageType("UntypedStorage")),
        ("torch.storage", "UntypedStorage", StorageType("UntypedStorage")),
        ("torch", "Tensor", "torch.Tensor"),
        ("torch._tensor", "Tensor", "torch._tensor.Tensor"),
        ("torch.nn.parameter", "Parameter", "torch.nn.parameter.Parameter"),
    ],
)
def test_globals_realised_as_values(module: str, name: str, value: object) -> None:
    assert load(g(module, name)) == value


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"), ("torch.storage", "FloatStorage"), ("torchx", "FloatStorage"), ("torch", "Storagex"),
        ("torch", "no_such_dtype"), ("torch.nn", "Parameter"), ("numpy", "ndarrays"), ("numpy.core", "ndarray"),
        ("torch.storage", "TypedStorage"),
    ],
)  # fmt: skip
def test_other_globals_are_refused(module: str, name: str) -> None:
    refused(g(module, name), PolicyError,
            rf"{re.escape(module)}\.{name} \(imported at pickle offset 2\) is not a value airlock\.load realises")  # fmt: skip


def test_dtype_and_qscheme_globals() -> None:
    assert load(g("torch", "float16")) == graph._DTypeValue(DTYPES["float16"])
    assert load(g("torch", "half")) == graph._DTypeValue(DTYPES["float16"])
    assert load(g("torch", "per_channel_affine")) == graph._QScheme("per_channel_affine")
    assert load(g("numpy", "ndarray")) == graph._NP_NDARRAY_MARK


# -- tensors ----------------------------------------------------------------------------------------------


def test_tensor_v2() -> None:
    assert view(load(v2())) == ("0", "float32", 0, (2, 3), (3, 1), False, False, None)
    assert view(load(v2(F, 4, (3,), (2,)))) == ("0", "float32", 4, (3,), (2,), False, False, None)


def test_tensor_v1_and_v3() -> None:
    v1 = call("torch._utils._rebuild_tensor", F, c(1), c((2,)), c((1,)))
    assert view(load(v1)) == ("0", "float32", 1, (2,), (1,), False, False, None)
    v3 = call(
        "torch._utils._rebuild_tensor_v3", F, c(0), c((4,)), c((1,)), c(False), HOOKS, g("torch", "int16")
    )
    assert view(load(v3)) == ("0", "int16", 0, (4,), (1,), False, False, None)
    meta = dct((c("neg"), c(True)))
    v3m = call(
        "torch._utils._rebuild_tensor_v3",
        F,
        c(0),
        c((4,)),
        c((1,)),
        c(False),
        HOOKS,
        g("torch", "int16"),
        meta,
    )
    assert view(load(v3m)) == ("0", "int16", 0, (4,), (1,), True, False, None)


@pytest.mark.parametrize(
    ("meta", "neg", "conj"),
    [(dct(), False, False), (c(None), False, False), (dct((c("neg"), c(True))), True, False),
     (dct((c("neg"), c(False)), (c("conj"), c(False))), False, False)],
)  # fmt: skip
def test_tensor_metadata(meta: bytes, neg: bool, conj: bool) -> None:
    ref = load(v2(F, 0, (2,), (1,), meta))
    assert (ref.neg, ref.conj) == (neg, conj)


def test_conjugated_complex_tensor() -> None:
    cf = pid("ComplexFloatStorage", "c", 4)
    ref = load(v2(cf, 0, (2,), (1,), dct((c("conj"), c(True)))))
    assert (ref.dtype.name, ref.neg, ref.conj) == ("complex64", False, True)


@pytest.mark.parametrize(
    ("body", "error", "pattern"),
    [
        (call("torch._utils._rebuild_tensor", F, c(0), c((2,))), FormatError, r".*: expected 4 arguments, got 3"),
        (call("torch._utils._rebuild_tensor", F, c(0), c((2,)), c((1,)), c(1)), FormatError, r".*: expected 4 arguments, got 5"),
        (call("torch._utils._rebuild_tensor_v2", F, c(0), c((2,)), c((1,)), c(False)), FormatError, r".*: expected 6 or 7 arguments, got 5"),
        (call("torch._utils._rebuild_tensor_v2", F, c(0), c((2,)), c((1,)), c(False), HOOKS, c(None), c(1)), FormatError, r".*: expected 6 or 7 arguments, got 8"),
        (call("torch._utils._rebuild_tensor_v3", F, c(0), c((2,)), c((1,)), c(False), HOOKS), FormatError, r".*: expected 7 or 8 arguments, got 6"),
        (call("torch._utils._rebuild_tensor_v3", F, c(0), c((2,)), c((1,)), c(False), HOOKS, g("torch", "int8"), c(None), c(1)), FormatError, r".*: expected 7 or 8 arguments, got 9"),
        (call("torch._utils._rebuild_tensor_v3", F, c(0), c((2,)), c((1,)), c(False), HOOKS, c("int8")), FormatError, r".*: dtype argument is not a torch dtype"),
        (call("torch._utils._rebuild_tensor_v2", F, c(0), c((2,)), c((1,)), c(False), dct((c(1), c(2)))), PolicyError, r".*: backward hooks are refused"),
        (call("torch._utils._rebuild_tensor_v2", F, c(0), c((2,)), c((1,)), c(False), c(0)), PolicyError, r".*: backward hooks are refused"),
        (call("torch._utils._rebuild_tensor_v2", c("s"), c(0), c((2,)), c((1,)), c(False), HOOKS), FormatError, r".*: first argument is not a storage from a persistent id"),
        (call("torch._utils._rebuild_tensor_v2", pid("QInt8Storage", "q", 4), c(0), c((2,)), c((1,)), c(False), HOOKS), FormatError, r".*: a plain tensor over a qint8 storage \(torch refuses it\)"),
        (v2(F, 0, (2,), (1,), dct((c("other"), c(True)))), FormatError, r".*: tensor metadata \{'other': True\} is not understood"),
        (v2(F, 0, (2,), (1,), c([1])), FormatError, r".*: tensor metadata \[1\] is not understood"),
        (v2(F, 0, (2,), (1,), dct((c("neg"), c(1)))), FormatError, r".*: tensor metadata \{'neg': 1\} is not booleans"),
        (v2(F, 0, (2,), (1,), dct((c("conj"), c(True)))), FormatError, r".*: a lazy conjugation on a float32 tensor, which is not complex"),
        (v2(F, 0, (9,), (2,)), FormatError, r".*: view \(offset 0, size \(9,\), stride \(2,\), float32\) reaches byte 68 of a storage of 64 bytes"),
    ],
)  # fmt: skip
def test_tensor_refusals(body: bytes, error: type[Exception], pattern: str) -> None:
    message = refused(body, error, pattern)
    assert re.match(
        r"torch\._utils\._rebuild_tensor(_v2|_v3)? at pickle offset \d+", message
    ) or message.startswith("tensor torch._utils")


def test_tensor_refusal_names_the_call_and_its_offset() -> None:
    body = call("torch._utils._rebuild_tensor_v2", F, c(0), c((2,)), c((1,)), c(False))
    refused(body, FormatError,
            rf"torch\._utils\._rebuild_tensor_v2 at pickle offset {offset_of(body, b'R')}: expected 6 or 7 arguments, got 5")  # fmt: skip


def test_build_state_on_a_tensor_is_refused() -> None:
    refused(
        build(v2(), dct((c("a"), c(1)))),
        PolicyError,
        r".*: BUILD or container opcodes applied to a tensor are refused",
    )
    refused(
        v2() + c(1) + b"a", PolicyError, r".*: BUILD or container opcodes applied to a tensor are refused"
    )


@pytest.mark.parametrize("kind", ["newobj", "obj"])
def test_tensor_made_by_other_call_opcodes(kind: str) -> None:
    args = (F, c(0), c((2,)), c((1,)), c(False), HOOKS)
    if kind == "newobj":
        body = newobj("torch._utils._rebuild_tensor_v2", *args)
    else:
        body = b"(" + g("torch._utils", "_rebuild_tensor_v2") + b"".join(args) + b"o"
    assert view(load(body))[:5] == ("0", "float32", 0, (2,), (1,))


def test_storages_are_resolved_in_stream_order_even_unused() -> None:
    body = (
        pid("FloatStorage", "a", 1)
        + b"0"
        + pid("IntStorage", "b", 1)
        + b"0"
        + v2(pid("DoubleStorage", "c", 8), 0, (1,), (1,))
    )
    resolver = Resolver()
    ref = realise(run(body), resolver, frozenset())
    assert [p[2] for p in resolver.seen] == ["a", "b", "c"]
    assert isinstance(ref, TensorRef) and ref.dtype.name == "float64"


def test_persistent_id_must_be_a_tuple() -> None:
    body = c("storage") + b"Q"
    refused(body, FormatError, rf"persistent id at offset {offset_of(body, b'Q')} is a str, not a tuple")


# -- parameters, wrapped tensors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        None,
        c(None),
        dct(),
        tup(c(None), c(None)),
        tup(dct(), c(None)),
        tup(c(None), dct()),
        tup(dct(), dct()),
    ],
)
def test_parameter(state: bytes | None) -> None:
    extra = () if state is None else (state,)
    ref = load(call("torch._utils._rebuild_parameter", v2(), c(True), HOOKS, *extra))
    assert view(ref)[:5] == ("0", "float32", 0, (2, 3), (3, 1))
    ref = load(call("torch._utils._rebuild_parameter_with_state", v2(), c(False), HOOKS, *extra))
    assert isinstance(ref, TensorRef)


@pytest.mark.parametrize(
    ("body", "error", "pattern"),
    [
        (call("torch._utils._rebuild_parameter", v2(), c(True)), FormatError, r".*: expected \(tensor, requires_grad, hooks\[, state\]\), got 2 arguments"),
        (call("torch._utils._rebuild_parameter", v2(), c(True), HOOKS, c(None), c(None)), FormatError, r".*: expected \(tensor, requires_grad, hooks\[, state\]\), got 5 arguments"),
        (call("torch._utils._rebuild_parameter", c(1), c(True), HOOKS), FormatError, r".*: expected \(tensor, requires_grad, hooks\[, state\]\), got 3 arguments"),
        (call("torch._utils._rebuild_parameter", v2(), c(True), HOOKS, dct((c("a"), c(1)))), PolicyError, r".*: a parameter with extra Python state is refused"),
        (call("torch._utils._rebuild_parameter", v2(), c(True), HOOKS, tup(c(None), c(None), c(None))), PolicyError, r".*: a parameter with extra Python state is refused"),
        (build(call("torch._utils._rebuild_parameter", v2(), c(True), HOOKS), dct()), PolicyError, r".*: BUILD or container opcodes applied to a tensor are refused"),
    ],
)  # fmt: skip
def test_parameter_refusals(body: bytes, error: type[Exception], pattern: str) -> None:
    assert refused(body, error, pattern).startswith("torch._utils._rebuild_parameter at pickle offset ")


def _from_type(func: str = "torch._utils._rebuild_tensor_v2", cls: bytes | None = None, state: bytes | None = None,
               inner: bytes | None = None, count: int = 4) -> bytes:  # fmt: skip
    module, _, name = func.rpartition(".")
    parts = [g(module, name), cls if cls is not None else g("torch", "Tensor"),
             inner if inner is not None else tup(F, c(0), c((2,)), c((1,)), c(False), HOOKS),
             state if state is not None else dct()][:count]  # fmt: skip
    return call("torch._tensor._rebuild_from_type_v2", *parts)


@pytest.mark.parametrize("cls", ["torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter"])
def test_rebuild_from_type(cls: str) -> None:
    """Regression: the wrapped rebuild function used to be realised as a value first, so every
    ``_rebuild_from_type_v2`` was refused, though torch (weights_only) loads it and the docs list it."""
    module, _, name = cls.rpartition(".")
    assert view(load(_from_type(cls=g(module, name))))[:4] == ("0", "float32", 0, (2,))
    assert view(load(_from_type(cls=g(module, name), state=c(None))))[:4] == ("0", "float32", 0, (2,))
    v1 = _from_type("torch._utils._rebuild_tensor", inner=tup(F, c(1), c((2,)), c((1,))))
    assert view(load(v1))[:4] == ("0", "float32", 1, (2,))


@pytest.mark.parametrize(
    ("body", "error", "pattern"),
    [
        (_from_type(count=3), FormatError, r".*: expected \(func, type, args, state\), got 3 arguments"),
        (call("torch._tensor._rebuild_from_type_v2", g("torch._utils", "_rebuild_tensor_v2"), g("torch", "Tensor"), tup(), dct(), c(1)), FormatError, r".*: expected \(func, type, args, state\), got 5 arguments"),
        (_from_type("torch._utils._rebuild_parameter"), PolicyError, r".*: only tensor rebuild functions may be wrapped"),
        (call("torch._tensor._rebuild_from_type_v2", c("torch._utils._rebuild_tensor_v2"), g("torch", "Tensor"), tup(), dct()), PolicyError, r".*: only tensor rebuild functions may be wrapped"),
        (_from_type(cls=c("torch.Tensorx")), PolicyError, r".*: tensor type 'torch\.Tensorx' is not a plain tensor or parameter"),
        (_from_type(cls=lst()), PolicyError, r".*: tensor type \[\] is not a plain tensor or parameter"),
        (_from_type(cls=g("torch", "float32")), PolicyError, r".*: tensor type .* is not a plain tensor or parameter"),
        (_from_type(cls=g("torch", "Tensor"), inner=c(1)), FormatError, r".*: arguments are not a tuple"),
        (g("torch._tensor", "_rebuild_from_type_v2") + c(1) + b"R", FormatError, r".*: arguments are not a tuple"),
        (call("torch._tensor._rebuild_from_type_v2", g("os", "system"), g("torch", "Tensor"), tup(), dct()), PolicyError, r".*: only tensor rebuild functions may be wrapped"),
        (_from_type(state=dct((c("x"), c(1)))), PolicyError, r".*: a tensor with extra Python state is refused"),
        (_from_type(inner=lst(F)), FormatError, r".*: arguments are not a tuple"),
        (build(_from_type(), dct()), PolicyError, r".*: BUILD or container opcodes applied to a tensor are refused"),
    ],
)  # fmt: skip
def test_rebuild_from_type_refusals(body: bytes, error: type[Exception], pattern: str) -> None:
    assert refused(body, error, pattern).startswith("torch._tensor._rebuild_from_type_v2 at pickle offset ")


# -- calls that are refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "what"),
    [
        ("torch._utils._rebuild_nested_tensor", "a nested tensor"),
        ("torch._utils._rebuild_meta_tensor_no_storage", "a meta tensor \\(no data\\)"),
        ("torch._utils._rebuild_wrapper_subclass", "a tensor subclass"),
        ("torch._utils._rebuild_device_tensor_from_numpy", "a device tensor"),
        ("torch._utils._rebuild_device_tensor_from_cpu_tensor", "a device tensor"),
    ],
)
def test_unsupported_tensor_kinds(dotted: str, what: str) -> None:
    body = call(dotted, c(1))
    refused(body, FormatError,
            rf"{re.escape(dotted)} at pickle offset {offset_of(body, b'R')} rebuilds {what}; airlock\.load realises "
            r"dense tensors only \(convert it to a dense tensor before saving\)")  # fmt: skip


def test_unknown_callable_is_refused_with_a_hint() -> None:
    body = call("os.system", c("echo"))
    refused(body, PolicyError,
            rf"os\.system \(called at pickle offset {offset_of(body, b'R')}\) is not a constructor airlock\.load "
            r"realises; pass allow=\['os\.system'\] to read an inert class's attributes as a plain dict")  # fmt: skip


def test_computed_callee_is_refused() -> None:
    body = c(1) + tup() + b"R"
    refused(
        body,
        PolicyError,
        rf"call at pickle offset {offset_of(body, b'R')} has a computed callee; airlock\.load refuses it",
    )
    dyn = (
        c("torch") + call("builtins.str", c("x")) + b"\x93" + tup() + b"R"
    )  # STACK_GLOBAL on a computed name
    refused(dyn, PolicyError, r"call at pickle offset \d+ has a computed callee; airlock\.load refuses it")


def test_keyword_arguments_are_refused() -> None:
    body = g("collections", "OrderedDict") + tup() + dct((c("a"), c(1))) + b"\x92"  # NEWOBJ_EX
    refused(body, PolicyError, r"collections\.OrderedDict called with keyword arguments at pickle offset \d+")
    empty = g("collections", "OrderedDict") + tup() + dct() + b"\x92"
    assert load(empty) == {}


def test_arguments_must_be_a_tuple() -> None:
    body = g("collections", "OrderedDict") + c(5) + b"R"
    refused(
        body,
        FormatError,
        rf"arguments of collections\.OrderedDict at offset {offset_of(body, b'R')} are not a tuple",
    )
    as_list = g("collections", "OrderedDict") + lst() + b"R"
    assert load(as_list) == {}


# -- OrderedDict, torch.Size, _codecs.encode ---------------------------------------------------------------


def test_ordered_dict_forms() -> None:
    assert load(call("collections.OrderedDict")) == {}
    pairs = lst(tup(c("a"), c(1)), lst(c("b"), c(2)))
    assert load(call("collections.OrderedDict", pairs)) == {"a": 1, "b": 2}
    assert load(call("collections.OrderedDict", tup(tup(c("a"), c(1))))) == {"a": 1}
    setitems = call("collections.OrderedDict") + b"(" + c("x") + c(1) + c("y") + v2() + b"u"
    out = load(setitems)
    assert list(out) == ["x", "y"] and out["x"] == 1 and isinstance(out["y"], TensorRef)
    one = call("collections.OrderedDict") + c("k") + c(2) + b"s"  # SETITEM
    assert load(one) == {"k": 2}
    built = build(call("collections.OrderedDict", lst(tup(c("a"), c(1)))), dct((c("_metadata"), dct())))
    assert load(built) == {"a": 1}


@pytest.mark.parametrize(
    ("body", "error", "pattern"),
    [
        (call("collections.OrderedDict", lst(), lst()), FormatError, r".*: expected no arguments or one list of pairs"),
        (call("collections.OrderedDict", c(5)), FormatError, r".*: expected no arguments or one list of pairs"),
        (call("collections.OrderedDict", lst(tup(c("a"), c(1), c(2)))), FormatError, r".*: item \('a', 1, 2\) is not a \(key, value\) pair"),
        (call("collections.OrderedDict", lst(c("ab"))), FormatError, r".*: item 'ab' is not a \(key, value\) pair"),
        (call("collections.OrderedDict", lst(tup(lst(), c(1)))), FormatError, r".*: key \[\] is a list; .*"),
        (call("collections.OrderedDict") + c(1) + b"a", PolicyError, r".*: append applied to an OrderedDict is refused"),
        (call("collections.OrderedDict") + b"(" + lst() + c(1) + b"u", FormatError, r".*: key \[\] is a list; .*"),
    ],
)  # fmt: skip
def test_ordered_dict_refusals(body: bytes, error: type[Exception], pattern: str) -> None:
    assert refused(body, error, pattern).startswith("collections.OrderedDict at pickle offset ")


def test_torch_size() -> None:
    assert load(call("torch.Size", c((2, 3)))) == (2, 3)
    for bad in (call("torch.Size", c([2, 3])), call("torch.Size"), call("torch.Size", c((1,)), c((2,)))):
        refused(bad, FormatError, r"torch\.Size at pickle offset \d+: expected one tuple of sizes")


def test_codecs_encode() -> None:
    assert load(call("_codecs.encode", c("a\xffb"), c("latin1"))) == b"a\xffb"
    assert load(call("_codecs.encode", c("xy"), c("latin-1"))) == b"xy"
    for bad in (
        call("_codecs.encode", c("xy"), c("utf-8")),
        call("_codecs.encode", c("xy")),
        call("_codecs.encode", c(b"xy"), c("latin1")),
        call("_codecs.encode", c("xy"), c("latin1"), c("strict")),
    ):
        refused(
            bad,
            PolicyError,
            r"_codecs\.encode at pickle offset \d+: only encode\(text, 'latin1'\) is realised",
        )
    refused(
        call("_codecs.encode", c("\u0100"), c("latin1")),
        FormatError,
        r"_codecs\.encode at pickle offset \d+: text is not latin-1",
    )


# -- numpy arrays ----------------------------------------------------------------------------------------


def np_dtype(code: str, state: bytes | None = None) -> bytes:
    obj = call("numpy.dtype", c(code), c(False), c(True))
    return build(obj, state) if state is not None else obj


def np_state(order: str = "<", *rest: object) -> bytes:
    tail = rest if rest else (None, None, None, -1, -1, 0)
    return tup(c(3), c(order), *(c(x) for x in tail))


def ndarray(
    shape: tuple[int, ...], dtype: bytes, data: bytes, fortran: bool = False, cls: bytes | None = None
) -> bytes:
    obj = call("numpy.core.multiarray._reconstruct", cls or g("numpy", "ndarray"), c((0,)), c(b"b"))
    return build(obj, tup(c(1), c(shape), dtype, c(fortran), c(data)))


def test_ndarray() -> None:
    ref = load(ndarray((2, 3), np_dtype("f4", np_state()), bytes(24)))
    assert (ref.dtype.name, ref.shape, ref.stride, ref.offset, ref.storage.swap) == (
        "float32",
        (2, 3),
        (3, 1),
        0,
        1,
    )
    assert ref.storage.data == bytes(24) and ref.storage.key.startswith("inline@")
    fortran = load(ndarray((2, 3), np_dtype("i2", np_state(">")), bytes(12), fortran=True))
    assert (fortran.dtype.name, fortran.stride, fortran.storage.swap) == ("int16", (1, 2), 2)
    plain = load(ndarray((4,), np_dtype("u1"), bytes(4)))
    assert (plain.dtype.name, plain.storage.swap) == ("uint8", 1)
    big_c = load(ndarray((2,), np_dtype("c8", np_state(">")), bytes(16)))
    assert big_c.storage.swap == 4
    new_path = build(call("numpy._core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")),
                     tup(c(1), c((2,)), np_dtype("f8"), c(False), c(bytes(16))))  # fmt: skip
    assert load(new_path).dtype.name == "float64"


@pytest.mark.parametrize(
    ("body", "error", "pattern"),
    [
        (ndarray((2,), np_dtype("f4"), bytes(4)), FormatError, r".*: view \(offset 0, size \(2,\), stride \(1,\), float32\) reaches byte 8 of a storage of 4 bytes"),
        (ndarray((1,), np_dtype("f4"), bytes(8)), FormatError, r".*: shape \(1,\) x 4 bytes needs 4 bytes, data has 8"),
        (ndarray((2,), np_dtype("O"), bytes(16)), FormatError, r".*: numpy dtype 'O' is not supported by airlock\.load \(object arrays are refused\)"),
        (ndarray((2,), np_dtype("f4"), b"", cls=g("numpy", "matrix")), PolicyError, r"numpy\.matrix \(imported at pickle offset \d+\) is not a value airlock\.load realises"),
        (ndarray((2,), np_dtype("f4"), b"", cls=c("numpy.ndarray")), PolicyError, r".*: only numpy\.ndarray is reconstructed"),
        (ndarray((2,), c("f4"), bytes(8)), FormatError, r".*: array dtype is not a numpy\.dtype"),
        (build(call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")), tup(c(1), c((2,)), np_dtype("f4"), c(False), lst())), PolicyError, r".*: array data is not raw bytes \(object arrays are refused\)"),
        (build(call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")), tup(c(1), c([2]), np_dtype("f4"), c(False), c(bytes(8)))), FormatError, r".*: bad array shape or order"),
        (build(call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")), tup(c(1), c((2,)), np_dtype("f4"), c(0), c(bytes(8)))), FormatError, r".*: bad array shape or order"),
        (build(call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")), tup(c(1), c((2,)), np_dtype("f4"), c(False))), FormatError, r".*: array state is not \(version, shape, dtype, fortran, data\)"),
        (build(call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")), lst()), FormatError, r".*: array state is not \(version, shape, dtype, fortran, data\)"),
        (call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")), FormatError, r".*: expected exactly one array state"),
        (build(build(call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")), tup()), tup()), FormatError, r".*: expected exactly one array state"),
        (call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,))), PolicyError, r".*: only numpy\.ndarray is reconstructed"),
        (call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b"), c(1)), PolicyError, r".*: only numpy\.ndarray is reconstructed"),
        (ndarray((2,), np_dtype("f4", np_state("<", None, None, None, -1, -1, 0)) , bytes(8)) + c(1) + b"a", FormatError, r".*"),
        (ndarray((2,), call("numpy.dtype"), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: expected a type string"),
        (ndarray((2,), call("numpy.dtype", c(4)), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: expected a type string"),
        (ndarray((2,), build(build(call("numpy.dtype", c("f4")), np_state()), np_state()), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: more than one dtype state"),
        (ndarray((2,), np_dtype("f4", tup(c(3))), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: dtype state is not \(version, byteorder, \.\.\.\)"),
        (ndarray((2,), np_dtype("f4", tup(c(3), c(1))), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: dtype state is not \(version, byteorder, \.\.\.\)"),
        (ndarray((2,), np_dtype("f4", lst(c(3), c("<"))), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: dtype state is not \(version, byteorder, \.\.\.\)"),
        (ndarray((2,), np_dtype("f4", np_state("<", None, tup(c("a")), None)), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: structured or sub-array numpy dtypes are not supported by airlock\.load"),
        (ndarray((2,), np_dtype("f4", np_state("<", tup(c(1)), None, None)), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: structured or sub-array numpy dtypes are not supported by airlock\.load"),
        (ndarray((2,), np_dtype("f4", np_state("<", None, None, dct())), bytes(8)), FormatError, r"numpy\.dtype at pickle offset \d+: structured or sub-array numpy dtypes are not supported by airlock\.load"),
    ],
)  # fmt: skip
def test_ndarray_refusals(body: bytes, error: type[Exception], pattern: str) -> None:
    refused(body, error, pattern)


def test_ndarray_dtype_state_beyond_the_structure_fields_is_ignored() -> None:
    # numpy's state is (version, order, subarray, names, fields, elsize, alignment, flags): only
    # subarray/names/fields (indices 2..4) make a structured dtype
    ref = load(ndarray((2,), np_dtype("f4", np_state("<", None, None, None, 4, 4, 8)), bytes(8)))
    assert ref.dtype.name == "float32"
    little = load(ndarray((2,), np_dtype("f4", np_state("|")), bytes(8)))
    assert little.storage.swap == 1


# -- allowed plain classes --------------------------------------------------------------------------------

NS = frozenset({"argparse.Namespace"})


def test_allowed_class_is_its_state_dict() -> None:
    body = build(newobj("argparse.Namespace"), dct((c("lr"), c(0.1)), (c("w"), v2())))
    out = load(body, NS)
    assert list(out) == ["lr", "w"] and out["lr"] == 0.1 and isinstance(out["w"], TensorRef)
    two = build(build(call("argparse.Namespace"), dct((c("a"), c(1)))), tup(c(None), dct((c("b"), c(2)))))
    assert load(two, NS) == {"a": 1, "b": 2}
    assert load(build(call("argparse.Namespace"), c(None)), NS) == {}
    assert load(call("argparse.Namespace"), NS) == {}


@pytest.mark.parametrize(
    ("body", "error", "pattern"),
    [
        (call("argparse.Namespace", c(1)), PolicyError, r".*: an allowed class is realised only when created without arguments"),
        (newobj("argparse.Namespace", c(1)), PolicyError, r".*: an allowed class is realised only when created without arguments"),
        (call("argparse.Namespace") + c(1) + b"a", PolicyError, r".*: container opcodes applied to an allowed class are refused"),
        (build(call("argparse.Namespace"), c(5)), PolicyError, r".*: state is a int, not an attribute dict"),
        (build(call("argparse.Namespace"), tup(c(None), lst())), PolicyError, r".*: state is a list, not an attribute dict"),
        (build(call("argparse.Namespace"), tup(dct(), dct(), dct())), PolicyError, r".*: state is a tuple, not an attribute dict"),
    ],
)  # fmt: skip
def test_allowed_class_refusals(body: bytes, error: type[Exception], pattern: str) -> None:
    assert refused(body, error, pattern, NS).startswith("argparse.Namespace at pickle offset ")


def test_allowance_is_exact() -> None:
    refused(
        call("argparse.Namespace"),
        PolicyError,
        r"argparse\.Namespace \(called at .*",
        frozenset({"argparse"}),
    )
    refused(
        call("argparse.Namespace"),
        PolicyError,
        r"argparse\.Namespace \(called at .*",
        frozenset({"argparse.Namespac"}),
    )


# -- quantized and sparse tensors -----------------------------------------------------------------------

Q = pid("QInt8Storage", "q", 8)


def qtensor(qparams: bytes, storage: bytes = Q, hooks: bytes = HOOKS, n: int = 7) -> bytes:
    args = [storage, c(0), c((2, 4)), c((4, 1)), qparams, c(False), hooks][:n]
    return call("torch._utils._rebuild_qtensor", *args)


def test_per_tensor_quantized() -> None:
    out = load(qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3))))
    assert isinstance(out, Quantized)
    assert view(out.ref) == ("q", "int8", 0, (2, 4), (4, 1), False, False, "qint8 (per_tensor_affine)")
    assert set(out.extras) == {"scale", "zero_point"}
    scale, zero = out.extras["scale"], out.extras["zero_point"]
    assert (scale.dtype.name, scale.shape, scale.storage.data) == ("float64", (), struct.pack("<d", 0.5))
    assert (zero.dtype.name, zero.shape, zero.storage.data) == ("int64", (), struct.pack("<q", 3))
    body = qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3)))
    assert zero.storage.key == scale.storage.key == f"inline@{body.rindex(b'R') + 2}"
    integer_scale = load(qtensor(tup(g("torch", "per_tensor_affine"), c(2), c(-1))))
    assert integer_scale.extras["scale"].storage.data == struct.pack("<d", 2.0)


def test_per_channel_quantized() -> None:
    scales = v2(pid("DoubleStorage", "s", 2), 0, (2,), (1,))
    zeros = v2(pid("LongStorage", "z", 2), 0, (2,), (1,))
    out = load(qtensor(tup(g("torch", "per_channel_affine"), scales, zeros, c(1))))
    assert out.ref.quantized == "qint8 (per_channel_affine)"
    assert out.extras["scales"].storage.key == "s" and out.extras["zero_points"].storage.key == "z"
    axis = out.extras["axis"]
    assert (axis.dtype.name, axis.shape, axis.stride, axis.storage.data) == (
        "int64",
        (),
        (),
        struct.pack("<q", 1),
    )


@pytest.mark.parametrize(
    ("body", "error", "pattern"),
    [
        (qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3)), n=6), FormatError, r".*: expected 7 arguments, got 6"),
        (call("torch._utils._rebuild_qtensor", Q, c(0), c((2, 4)), c((4, 1)), tup(), c(False), HOOKS, c(1)), FormatError, r".*: expected 7 arguments, got 8"),
        (qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3)), hooks=dct((c(1), c(1)))), PolicyError, r".*: backward hooks are refused"),
        (qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3)), hooks=c(None)), None, ""),
        (qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3)), storage=F), FormatError, r".*: a quantized tensor needs a quantized storage \(QInt8Storage \.\.\.\)"),
        (qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3)), storage=c(1)), FormatError, r".*: a quantized tensor needs a quantized storage \(QInt8Storage \.\.\.\)"),
        (qtensor(tup()), FormatError, r".*: quantizer parameters \(\) are not \(scheme, \.\.\.\)"),
        (qtensor(lst(g("torch", "per_tensor_affine"))), FormatError, r".*: quantizer parameters .* are not \(scheme, \.\.\.\)"),
        (qtensor(tup(c("per_tensor_affine"), c(0.5), c(3))), FormatError, r".*: quantizer parameters .* are not \(scheme, \.\.\.\)"),
        (qtensor(tup(g("torch", "per_tensor_affine"), c(0.5))), FormatError, r".*: per-tensor parameters are not \(scheme, scale, zero_point\)"),
        (qtensor(tup(g("torch", "per_tensor_affine"), c("0.5"), c(3))), FormatError, r".*: per-tensor parameters are not \(scheme, scale, zero_point\)"),
        (qtensor(tup(g("torch", "per_tensor_affine"), c(True), c(3))), FormatError, r".*: per-tensor parameters are not \(scheme, scale, zero_point\)"),
        (qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3.0))), FormatError, r".*: per-tensor parameters are not \(scheme, scale, zero_point\)"),
        (qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3), c(0))), FormatError, r".*: per-tensor parameters are not \(scheme, scale, zero_point\)"),
        (qtensor(tup(g("torch", "per_channel_affine"), v2(), v2(), c(0), c(0))), FormatError, r".*: per-channel parameters are not \(scheme, scales, zero_points, axis\)"),
        (qtensor(tup(g("torch", "per_channel_affine"), v2(), c(1), c(0))), FormatError, r".*: per-channel parameters are not \(scheme, scales, zero_points, axis\)"),
        (qtensor(tup(g("torch", "per_channel_affine"), c(1), v2(), c(0))), FormatError, r".*: per-channel parameters are not \(scheme, scales, zero_points, axis\)"),
        (qtensor(tup(g("torch", "per_channel_affine"), v2(), v2(), c(0.0))), FormatError, r".*: per-channel parameters are not \(scheme, scales, zero_points, axis\)"),
        (build(qtensor(tup(g("torch", "per_tensor_affine"), c(0.5), c(3))), dct()), PolicyError, r".*: BUILD or container opcodes applied to a tensor are refused"),
    ],
)  # fmt: skip
def test_quantized_refusals(body: bytes, error: type[Exception] | None, pattern: str) -> None:
    if error is None:
        assert isinstance(load(body), Quantized)
    else:
        assert refused(body, error, pattern).startswith("torch._utils._rebuild_qtensor at pickle offset ")


def layout(name: str) -> bytes:
    return call("torch.serialization._get_layout", c(name))


def idx(key: str, n: int = 4) -> bytes:
    return v2(pid("LongStorage", key, n), 0, (n,), (1,))


def sparse(name: str, *parts: bytes) -> bytes:
    return call("torch._utils._rebuild_sparse_tensor", layout(name), tup(*parts))


def test_sparse_coo_and_compressed() -> None:
    out = load(sparse("torch.sparse_coo", idx("i"), idx("v"), c((3, 5))))
    assert set(out) == {"indices", "values", "size"}
    assert out["indices"].storage.key == "i" and out["values"].storage.key == "v"
    size = out["size"]
    assert (size.dtype.name, size.shape, size.storage.data) == ("int64", (2,), struct.pack("<2q", 3, 5))
    for flag in (c(True), c(False), c(None)):
        assert set(load(sparse("torch.sparse_coo", idx("i"), idx("v"), c((3,)), flag))) == {
            "indices",
            "values",
            "size",
        }
    for name, names in graph._LAYOUTS.items():
        if name == "torch.sparse_coo":
            continue
        got = load(sparse(name, idx("a"), idx("b"), idx("c"), c((2, 2))))
        assert list(got) == [*names, "size"]
        assert [got[n].storage.key for n in names] == ["a", "b", "c"]


def test_sparse_layouts() -> None:
    assert set(graph._LAYOUTS) == {
        "torch.sparse_coo",
        "torch.sparse_csr",
        "torch.sparse_csc",
        "torch.sparse_bsr",
        "torch.sparse_bsc",
    }
    assert graph._LAYOUTS["torch.sparse_csc"] == ("ccol_indices", "row_indices", "values")
    assert graph._LAYOUTS["torch.sparse_bsc"] == ("ccol_indices", "row_indices", "values")
    assert graph._LAYOUTS["torch.sparse_csr"] == ("crow_indices", "col_indices", "values")
    assert graph._LAYOUTS["torch.sparse_bsr"] == ("crow_indices", "col_indices", "values")
    assert load(layout("torch.sparse_csr")) == graph._Layout("torch.sparse_csr")


@pytest.mark.parametrize(
    ("body", "error", "pattern"),
    [
        (call("torch.serialization._get_layout", lst()), FormatError, r".*: layout \(\[\],\) is not a sparse layout airlock\.load reads"),
        (layout("torch.strided"), FormatError, r"torch\.serialization\._get_layout at pickle offset \d+: layout \('torch\.strided',\) is not a sparse layout airlock\.load reads"),
        (call("torch.serialization._get_layout", c("torch.sparse_coo"), c(1)), FormatError, r".*: layout \('torch\.sparse_coo',\) is not a sparse layout airlock\.load reads"),
        (call("torch.serialization._get_layout"), FormatError, r".*: layout \(\) is not a sparse layout airlock\.load reads"),
        (call("torch._utils._rebuild_sparse_tensor", layout("torch.sparse_coo")), FormatError, r".*: expected \(layout, data\)"),
        (call("torch._utils._rebuild_sparse_tensor", c("torch.sparse_coo"), tup()), FormatError, r".*: expected \(layout, data\)"),
        (call("torch._utils._rebuild_sparse_tensor", layout("torch.sparse_coo"), lst()), FormatError, r".*: expected \(layout, data\)"),
        (call("torch._utils._rebuild_sparse_tensor", layout("torch.sparse_coo"), tup(), c(1)), FormatError, r".*: expected \(layout, data\)"),
        (sparse("torch.sparse_coo", idx("i"), idx("v"), c((3,)), c(1)), FormatError, r".*: sparse COO data is not \(indices, values, size\[, is_coalesced\]\)"),
        (sparse("torch.sparse_coo", idx("i"), idx("v"), c((3,)), c(True), c(True)), FormatError, r".*: sparse COO data is not \(indices, values, size\[, is_coalesced\]\)"),
        (sparse("torch.sparse_csr", idx("a"), idx("b"), idx("c"), c((2,)), c(True)), FormatError, r".*: sparse data has 5 parts, expected 4"),
        (sparse("torch.sparse_coo", idx("i"), idx("v")), FormatError, r".*: sparse components are not tensors"),
        (sparse("torch.sparse_coo", idx("i"), c(1), c((3,))), FormatError, r".*: sparse components are not tensors"),
        (sparse("torch.sparse_coo", c(1), idx("v"), c((3,))), FormatError, r".*: sparse components are not tensors"),
        (sparse("torch.sparse_csr", idx("a"), idx("b"), c(1), c((2,))), FormatError, r".*: sparse components are not tensors"),
        (sparse("torch.sparse_coo", idx("i"), idx("v"), c([3])), FormatError, r".*: sparse size \[3\] is not a tuple of sizes"),
        (sparse("torch.sparse_coo", idx("i"), idx("v"), c((3, -1))), FormatError, r".*: sparse size \(3, -1\) is not a tuple of sizes"),
        (sparse("torch.sparse_coo", idx("i"), idx("v"), c((3, True))), FormatError, r".*: sparse size \(3, True\) is not a tuple of sizes"),
        (build(sparse("torch.sparse_coo", idx("i"), idx("v"), c((3,))), dct()), PolicyError, r".*: BUILD or container opcodes applied to a tensor are refused"),
    ],
)  # fmt: skip
def test_sparse_refusals(body: bytes, error: type[Exception], pattern: str) -> None:
    refused(body, error, pattern)


def test_sparse_size_of_zero_is_a_size() -> None:
    out = load(sparse("torch.sparse_coo", idx("i"), idx("v"), c((0, 0))))
    assert out["size"].storage.data == bytes(16)


# -- the realised small tensors hold the right bytes ----------------------------------------------------


def _values(ref: TensorRef) -> list[object]:
    np = pytest.importorskip("numpy")
    from airlock._load.arrays import to_numpy

    out = to_numpy(ref, memoryview(b""))
    assert isinstance(out, np.ndarray)
    return list(out.ravel().tolist())


def test_inline_tensors_read_back() -> None:
    body = qtensor(tup(g("torch", "per_tensor_affine"), c(0.25), c(-3)))
    out = load(body)
    assert _values(out.extras["scale"]) == [0.25] and _values(out.extras["zero_point"]) == [-3]
    scales = v2(pid("DoubleStorage", "s", 2), 0, (2,), (1,))
    zeros = v2(pid("LongStorage", "z", 2), 0, (2,), (1,))
    per_channel = qtensor(tup(g("torch", "per_channel_affine"), scales, zeros, c(1)))
    axis = load(per_channel).extras["axis"]
    assert _values(axis) == [1] and axis.storage.key == f"inline@{per_channel.rindex(b'R') + 2}"
    sp = sparse("torch.sparse_coo", idx("i"), idx("v"), c((3, 5)))
    size = load(sp)["size"]
    assert _values(size) == [3, 5] and size.storage.key == f"inline@{sp.rindex(b'R') + 2}"
    arr = load(ndarray((3,), np_dtype("i2"), struct.pack("<3h", 5, -6, 7)))
    assert _values(arr) == [5, -6, 7]
    big_endian = load(ndarray((2,), np_dtype("i2", np_state(">")), struct.pack(">2h", 300, -2)))
    assert _values(big_endian) == [300, -2]


def test_dtype_state_of_two_fields_is_enough() -> None:
    ref = load(ndarray((2,), np_dtype("f4", tup(c(3), c("<"))), bytes(8)))
    assert ref.dtype.name == "float32"


def test_array_shape_with_a_non_integer_is_refused_cleanly() -> None:
    body = build(call("numpy.core.multiarray._reconstruct", g("numpy", "ndarray"), c((0,)), c(b"b")),
                 tup(c(1), c(("x",)), np_dtype("f4"), c(False), c(bytes(4))))  # fmt: skip
    refused(
        body,
        FormatError,
        r"tensor numpy\.core\.multiarray\._reconstruct at pickle offset \d+: size \('x',\) is not a tuple of non-negative integers",
    )


def test_view_errors_name_the_call() -> None:
    body = ndarray((3,), np_dtype("f4"), bytes(8))
    refused(
        body,
        FormatError,
        r"tensor numpy\.core\.multiarray\._reconstruct at pickle offset \d+: view .* reaches byte 12 of a storage of 8 bytes",
    )
    q = call(
        "torch._utils._rebuild_qtensor",
        Q,
        c(0),
        c((3, 4)),
        c((4, 1)),
        tup(g("torch", "per_tensor_affine"), c(0.5), c(3)),
        c(False),
        HOOKS,
    )
    refused(
        q,
        FormatError,
        r"tensor torch\._utils\._rebuild_qtensor at pickle offset \d+: view .* reaches byte 12 of a storage of 8 bytes",
    )
    wrapped = _from_type(inner=tup(F, c(0), c((2,)), c((1,)), c(False)))
    refused(
        wrapped,
        FormatError,
        r"torch\._tensor\._rebuild_from_type_v2 at pickle offset \d+: expected 6 or 7 arguments, got 5",
    )
