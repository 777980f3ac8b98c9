"""Realise the symbolic pickle graph: tensors, plain containers and a few constants, nothing else.

The walk never calls what a node names. Each allowlisted constructor has its own small realiser
here that rebuilds the *data* the real callable would return (a tensor view, a dict, a tuple);
every other callable or global is a :class:`~airlock.errors.PolicyError` naming it. Classes the
caller allows explicitly (``allow=("argparse.Namespace",)``) are realised as the plain dict of
the state BUILD would give them, never by calling the class.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from airlock._analysis.pickle_vm import (
    Call,
    Const,
    DictNode,
    Global,
    ListNode,
    Node,
    PersId,
    PickleResult,
    SetNode,
    TupleNode,
)
from airlock._formats.pickle_ops import HugeInt
from airlock._load.arrays import check_lazy_bits
from airlock._load.dtypes import DType, dtype_from_numpy, torch_dtype
from airlock._load.model import Storage, TensorRef, check_view, contiguous_strides
from airlock.errors import FormatError, LimitError, PolicyError

__all__ = ["Quantized", "StorageType", "TypedStorage", "realise"]

#: containers deeper than this are refused (real checkpoints nest a handful of levels)
MAX_DEPTH: Final = 200

_TENSOR_V2: Final = "torch._utils._rebuild_tensor_v2"
_TENSOR_V3: Final = "torch._utils._rebuild_tensor_v3"
_TENSOR_V1: Final = "torch._utils._rebuild_tensor"
_PARAMETER: Final = frozenset(
    {"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"}
)
_FROM_TYPE: Final = frozenset({"torch._tensor._rebuild_from_type_v2"})
_TENSOR_TYPES: Final = frozenset({"torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter"})
_ORDERED_DICT: Final = frozenset({"collections.OrderedDict"})
_RECONSTRUCT: Final = frozenset({"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"})
_NP_DTYPE: Final = "numpy.dtype"
_NP_NDARRAY: Final = "numpy.ndarray"
#: tensor kinds torch can pickle that airlock.load refuses, and why
_QTENSOR: Final = "torch._utils._rebuild_qtensor"
_SPARSE: Final = "torch._utils._rebuild_sparse_tensor"
_GET_LAYOUT: Final = "torch.serialization._get_layout"
_QSCHEMES: Final = frozenset({"per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams"})
#: sparse layouts torch saves, and the names of their components (after the indices: values)
_LAYOUTS: Final = {
    "torch.sparse_coo": ("indices", "values"),
    "torch.sparse_csr": ("crow_indices", "col_indices", "values"),
    "torch.sparse_csc": ("ccol_indices", "row_indices", "values"),
    "torch.sparse_bsr": ("crow_indices", "col_indices", "values"),
    "torch.sparse_bsc": ("ccol_indices", "row_indices", "values"),
}
_UNSUPPORTED: Final = {
    "torch._utils._rebuild_nested_tensor": "a nested tensor",
    "torch._utils._rebuild_meta_tensor_no_storage": "a meta tensor (no data)",
    "torch._utils._rebuild_wrapper_subclass": "a tensor subclass",
    "torch._utils._rebuild_device_tensor_from_numpy": "a device tensor",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "a device tensor",
}
_SUPPORTED_HINT: Final = "airlock.load realises dense tensors only"


@dataclass(frozen=True)
class StorageType:
    """A storage class named in a persistent id (``torch.FloatStorage``), kept by its name."""

    name: str


@dataclass(frozen=True)
class _DTypeValue:
    dtype: DType


@dataclass(frozen=True)
class _QScheme:
    name: str


@dataclass(frozen=True)
class _Layout:
    name: str


@dataclass(frozen=True, eq=False)
class Quantized:
    """A quantized tensor: its integer representation (``ref``, marked ``quantized``) and its
    quantization parameters as small tensors (``scale``/``zero_point``, or per channel
    ``scales``/``zero_points``/``axis``), flattened to ``name`` and ``name.<parameter>``."""

    ref: TensorRef
    extras: dict[str, TensorRef]


#: resolves a realised persistent id (a tuple) to a storage
PidResolver = Callable[[tuple[object, ...], int], "TypedStorage"]


def realise(result: PickleResult, resolve_pid: PidResolver, allow: frozenset[str]) -> object:
    """The data the pickle's root would be, with tensors as :class:`TensorRef` leaves."""
    if result.error is not None:
        raise result.error
    if result.root is None:
        raise FormatError("the pickle builds no object")
    walker = _Walker(result, resolve_pid, allow)
    # torch calls persistent_load once per persistent id, in stream order, whether or not the
    # object it makes is ever used; the first reference to a storage key fixes its type. Resolve
    # them all in that order first, so the walk below only looks them up.
    for node in result.persids:
        walker.value(node, 0)
    return walker.value(result.root, 0)


class _Walker:
    def __init__(self, result: PickleResult, resolve_pid: PidResolver, allow: frozenset[str]) -> None:
        self._resolve_pid = resolve_pid
        self._allow = allow
        self._done: dict[int, object] = {}
        self._active: set[int] = set()
        # SETITEMS / APPENDS applied to a constructed object (an OrderedDict) are separate calls.
        self._items: dict[int, list[Call]] = {}
        for call in result.calls:
            if call.kind in ("setitem", "append", "extend", "add"):
                self._items.setdefault(id(call.func), []).append(call)

    def value(self, node: Node, depth: int) -> object:
        if depth > MAX_DEPTH:
            raise LimitError(
                f"objects nested deeper than {MAX_DEPTH} levels in the pickle (offset {node.offset})"
            )
        key = id(node)
        if key in self._done:
            return self._done[key]
        if key in self._active:
            raise FormatError(f"the pickle's object graph refers to itself at offset {node.offset}")
        self._active.add(key)
        try:
            out = self._value(node, depth + 1)
        finally:
            self._active.discard(key)
        self._done[key] = out
        return out

    def _value(self, node: Node, depth: int) -> object:
        if isinstance(node, Const):
            if isinstance(node.value, HugeInt):  # never a tensor's size or offset: refused as before
                raise FormatError(
                    f"LONG4 at offset {node.offset}: {node.value!r} is larger than any model file needs"
                )
            return bytes(node.value) if isinstance(node.value, memoryview) else node.value
        if isinstance(node, TupleNode):
            return tuple(self.value(item, depth) for item in node.items)
        if isinstance(node, ListNode):
            return [self.value(item, depth) for item in node.items]
        if isinstance(node, DictNode):
            return self._dict(node.items, depth, node.offset)
        if isinstance(node, SetNode):
            return [self.value(item, depth) for item in node.items]
        if isinstance(node, Global):
            return self._global(node)
        if isinstance(node, PersId):
            pid = self.value(node.pid, depth)
            if not isinstance(pid, tuple):
                raise FormatError(
                    f"persistent id at offset {node.offset} is a {type(pid).__name__}, not a tuple"
                )
            return self._resolve_pid(pid, node.offset)
        if isinstance(node, Call):
            return self._call(node, depth)
        raise PolicyError(
            f"{type(node).__name__} at pickle offset {node.offset} is not something airlock.load realises"
        )

    def _dict(self, items: list[tuple[Node, Node]], depth: int, offset: int) -> dict[object, object]:
        out: dict[object, object] = {}
        for k, v in items:
            # Python dict semantics, as the unpickler's: 1, 1.0 and True are one key, the last wins.
            out[_key(self.value(k, depth), f"dict at offset {offset}")] = self.value(v, depth)
        return out

    def _global(self, node: Global) -> object:
        module, name = node.module, node.name
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module in ("torch.storage", "torch") and name == "UntypedStorage":
            return StorageType("UntypedStorage")
        if module == "torch" and name in _QSCHEMES and not node.dynamic:
            return _QScheme(name)
        if module == "torch" and not node.dynamic:
            try:
                return _DTypeValue(torch_dtype(name))
            except FormatError:
                pass
        if node.dotted in _TENSOR_TYPES:
            return node.dotted
        if node.dotted == _NP_NDARRAY:
            return _NP_NDARRAY_MARK
        raise PolicyError(
            f"{node.dotted} (imported at pickle offset {node.offset}) is not a value airlock.load realises"
        )

    def _call(self, call: Call, depth: int) -> object:
        func = call.func
        if not isinstance(func, Global) or func.dynamic:
            raise PolicyError(
                f"call at pickle offset {call.offset} has a computed callee; airlock.load refuses it"
            )
        dotted = func.dotted
        if call.kind not in ("reduce", "newobj", "obj", "inst", "newobj_ex"):
            raise PolicyError(f"{call.kind} call on {dotted} at pickle offset {call.offset} is refused")
        if call.kwargs is not None and not (isinstance(call.kwargs, DictNode) and not call.kwargs.items):
            raise PolicyError(f"{dotted} called with keyword arguments at pickle offset {call.offset}")
        if dotted in _UNSUPPORTED:
            raise FormatError(
                f"{dotted} at pickle offset {call.offset} rebuilds {_UNSUPPORTED[dotted]}; {_SUPPORTED_HINT} "
                "(convert it to a dense tensor before saving)"
            )
        where = f"{dotted} at pickle offset {call.offset}"
        if dotted in _FROM_TYPE:
            # its first argument is the wrapped rebuild function: a global checked by name, never
            # realised as a value (which every other global that is not data would be refused as)
            return self._from_type(call, where, depth)
        args_value = self.value(call.args, depth)
        if not isinstance(args_value, tuple | list):
            raise FormatError(f"arguments of {dotted} at offset {call.offset} are not a tuple")
        args = tuple(args_value)
        if dotted in (_TENSOR_V2, _TENSOR_V3, _TENSOR_V1):
            self._no_state(call, where)
            return _tensor(dotted, args, where)
        if dotted == _QTENSOR:
            self._no_state(call, where)
            return _qtensor(args, where, call.offset)
        if dotted == _SPARSE:
            self._no_state(call, where)
            return _sparse(args, where, call.offset)
        if dotted == _GET_LAYOUT:
            if len(args) != 1 or not isinstance(args[0], str) or args[0] not in _LAYOUTS:
                raise FormatError(
                    f"{where}: layout {args[:1]!r:.60} is not a sparse layout airlock.load reads"
                )
            return _Layout(args[0])
        if dotted in _PARAMETER:
            self._no_state(call, where)
            if len(args) not in (3, 4) or not isinstance(args[0], TensorRef | Quantized):
                raise FormatError(
                    f"{where}: expected (tensor, requires_grad, hooks[, state]), got {len(args)} arguments"
                )
            if len(args) == 4 and args[3] not in (None, {}, (None, None), ({}, None), (None, {}), ({}, {})):
                raise PolicyError(f"{where}: a parameter with extra Python state is refused")
            return args[0]
        if dotted in _ORDERED_DICT:
            return self._ordered_dict(call, args, where, depth)
        if dotted == "torch.Size":
            if len(args) != 1 or not isinstance(args[0], tuple):
                raise FormatError(f"{where}: expected one tuple of sizes")
            return args[0]
        if dotted == "_codecs.encode":
            return _codecs_encode(args, where)
        if dotted in _RECONSTRUCT:
            return self._ndarray(call, args, where, depth)
        if dotted == _NP_DTYPE:
            return _numpy_dtype(call, args, where, self, depth)
        if dotted in self._allow:
            return self._plain_object(call, args, where, depth)
        raise PolicyError(
            f"{dotted} (called at pickle offset {call.offset}) is not a constructor airlock.load realises; "
            f"pass allow=['{dotted}'] to read an inert class's attributes as a plain dict"
        )

    def _no_state(self, call: Call, where: str) -> None:
        if call.states or self._items.get(id(call)):
            raise PolicyError(f"{where}: BUILD or container opcodes applied to a tensor are refused")

    def _from_type(self, call: Call, where: str, depth: int) -> object:
        """``_rebuild_from_type_v2(func, type, args, state)``: a plain tensor or parameter, no state."""
        self._no_state(call, where)
        if not isinstance(call.args, TupleNode | ListNode):
            raise FormatError(f"{where}: arguments are not a tuple")
        items = call.args.items
        if len(items) != 4:
            raise FormatError(f"{where}: expected (func, type, args, state), got {len(items)} arguments")
        func_node = items[0]
        if not isinstance(func_node, Global) or func_node.dotted not in (_TENSOR_V2, _TENSOR_V3, _TENSOR_V1):
            raise PolicyError(f"{where}: only tensor rebuild functions may be wrapped")
        kind, inner, state = (self.value(item, depth) for item in items[1:])
        if not isinstance(kind, str) or kind not in _TENSOR_TYPES:
            raise PolicyError(f"{where}: tensor type {kind!r:.60} is not a plain tensor or parameter")
        if state not in (None, {}):
            raise PolicyError(f"{where}: a tensor with extra Python state is refused")
        if not isinstance(inner, tuple):
            raise FormatError(f"{where}: arguments are not a tuple")
        return _tensor(func_node.dotted, inner, where)

    def _ordered_dict(
        self, call: Call, args: tuple[object, ...], where: str, depth: int
    ) -> dict[object, object]:
        out: dict[object, object] = {}
        if args:
            if len(args) != 1 or not isinstance(args[0], list | tuple):
                raise FormatError(f"{where}: expected no arguments or one list of pairs")
            for pair in args[0]:
                if not isinstance(pair, tuple | list) or len(pair) != 2:
                    raise FormatError(f"{where}: item {pair!r:.40} is not a (key, value) pair")
                out[_key(pair[0], where)] = pair[1]
        for item_call in self._items.get(id(call), []):
            if item_call.kind != "setitem" or not isinstance(item_call.args, TupleNode):
                raise PolicyError(f"{where}: {item_call.kind} applied to an OrderedDict is refused")
            flat = item_call.args.items
            for k, v in zip(flat[0::2], flat[1::2], strict=True):
                out[_key(self.value(k, depth), where)] = self.value(v, depth)
        # BUILD state of an OrderedDict is its instance __dict__ (torch: the _metadata attribute);
        # it holds no tensors and is dropped.
        return out

    def _plain_object(
        self, call: Call, args: tuple[object, ...], where: str, depth: int
    ) -> dict[object, object]:
        if args and not (call.kind == "newobj" and args == ()):
            raise PolicyError(f"{where}: an allowed class is realised only when created without arguments")
        if self._items.get(id(call)):
            raise PolicyError(f"{where}: container opcodes applied to an allowed class are refused")
        out: dict[object, object] = {}
        for state_node in call.states:
            state = self.value(state_node, depth)
            parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
            for part in parts:
                if part is None:
                    continue
                if not isinstance(part, dict):
                    raise PolicyError(f"{where}: state is a {type(part).__name__}, not an attribute dict")
                out.update(part)
        return out

    def _ndarray(self, call: Call, args: tuple[object, ...], where: str, depth: int) -> TensorRef:
        if len(args) != 3 or args[0] != _NP_NDARRAY_MARK:
            raise PolicyError(f"{where}: only numpy.ndarray is reconstructed")
        if len(call.states) != 1 or self._items.get(id(call)):
            raise FormatError(f"{where}: expected exactly one array state")
        state = self.value(call.states[0], depth)
        if not isinstance(state, tuple) or len(state) != 5:
            raise FormatError(f"{where}: array state is not (version, shape, dtype, fortran, data)")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _NumpyDType):
            raise FormatError(f"{where}: array dtype is not a numpy.dtype")
        if not isinstance(raw, bytes):
            raise PolicyError(f"{where}: array data is not raw bytes (object arrays are refused)")
        if not isinstance(shape, tuple) or not isinstance(fortran, bool):
            raise FormatError(f"{where}: bad array shape or order")
        storage = Storage(f"inline@{call.offset}", len(raw), 0, (0, 0), dtype.swap, raw)
        ref = check_view(where, storage, dtype.dtype, 0, shape, _strides(shape, fortran))
        if ref.nbytes != len(raw):
            raise FormatError(
                f"{where}: shape {shape} x {dtype.dtype.itemsize} bytes needs {ref.nbytes} bytes, data has {len(raw)}"
            )
        return ref


_NP_NDARRAY_MARK: Final = "numpy.ndarray-type"


@dataclass(frozen=True)
class _NumpyDType:
    dtype: DType
    #: byte-swap unit of a big-endian array (1: native)
    swap: int


def _strides(shape: tuple[object, ...], fortran: bool) -> tuple[int, ...]:
    dims = tuple(n if type(n) is int else 0 for n in shape)
    if not fortran:
        return contiguous_strides(dims)
    return tuple(reversed(contiguous_strides(tuple(reversed(dims)))))


#: numpy byte-order characters a pickled dtype's state may hold
_NP_ORDERS: Final = ("<", ">", "=", "|")


def _numpy_dtype(
    call: Call, args: tuple[object, ...], where: str, walker: _Walker, depth: int
) -> _NumpyDType:
    if not args or not isinstance(args[0], str):
        raise FormatError(f"{where}: expected a type string")
    if len(call.states) > 1:
        raise FormatError(f"{where}: more than one dtype state")
    # numpy's byte order: the type string's prefix (``numpy.dtype(">f8")`` is big-endian), which
    # a BUILD state's byte-order field then replaces ('=' and '|' are native: little here)
    order = args[0][:1] if args[0][:1] in _NP_ORDERS else "="
    if call.states:
        state = walker.value(call.states[0], depth)
        if not isinstance(state, tuple) or len(state) < 2 or not isinstance(state[1], str):
            raise FormatError(f"{where}: dtype state is not (version, byteorder, ...)")
        if any(part is not None for part in state[2:5]):
            raise FormatError(
                f"{where}: structured or sub-array numpy dtypes are not supported by airlock.load"
            )
        order = state[1]
    if order not in _NP_ORDERS:
        raise FormatError(f"{where}: numpy byte order {order!r:.10} is not one of '<', '>', '=', '|'")
    found = dtype_from_numpy(args[0])
    if found is None:
        raise FormatError(
            f"{where}: numpy dtype {args[0]!r:.20} is not supported by airlock.load (object arrays are refused)"
        )
    return _NumpyDType(found, found.swap_unit if order == ">" else 1)


def _codecs_encode(args: tuple[object, ...], where: str) -> bytes:
    if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        raise PolicyError(f"{where}: only encode(text, 'latin1') is realised")
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError as exc:
        raise FormatError(f"{where}: text is not latin-1") from exc


def _plain_key(value: object) -> bool:
    if value is None or isinstance(value, str | int | float | bytes):
        return True
    return isinstance(value, tuple) and all(_plain_key(item) for item in value)


def _key(value: object, where: str) -> object:
    """A dict key torch's unpickler would accept and a dotted name can spell: None, bool, int,
    float, str, bytes and tuples of them (named by ``str(key)``)."""
    if _plain_key(value):
        return value
    raise FormatError(
        f"{where}: key {value!r:.60} is a {type(value).__name__}; airlock.load names tensors by "
        "None/bool/number/string/bytes keys and tuples of them"
    )


def _tensor(dotted: str, args: tuple[object, ...], where: str) -> TensorRef:
    if dotted == _TENSOR_V1:
        if len(args) != 4:
            raise FormatError(f"{where}: expected 4 arguments, got {len(args)}")
        storage, offset, shape, stride = args
        dtype_arg: object = None
        metadata: object = None
    elif dotted == _TENSOR_V2:
        if len(args) not in (6, 7):
            raise FormatError(f"{where}: expected 6 or 7 arguments, got {len(args)}")
        storage, offset, shape, stride = args[:4]
        dtype_arg = None
        metadata = args[6] if len(args) == 7 else None
    else:
        if len(args) not in (7, 8):
            raise FormatError(f"{where}: expected 7 or 8 arguments, got {len(args)}")
        storage, offset, shape, stride = args[:4]
        dtype_arg = args[6]
        metadata = args[7] if len(args) == 8 else None
    if len(args) >= 6 and args[5] not in ({}, None):
        raise PolicyError(f"{where}: backward hooks are refused")
    if not isinstance(storage, TypedStorage):
        raise FormatError(f"{where}: first argument is not a storage from a persistent id")
    if storage.quantized is not None:
        raise FormatError(f"{where}: a plain tensor over a {storage.quantized} storage (torch refuses it)")
    # v1/v2: the dtype of the storage object (the first reference to its key decides, as in
    # torch); v3: the explicit dtype over the storage's bytes.
    dtype = storage.dtype
    if dtype_arg is not None:
        if not isinstance(dtype_arg, _DTypeValue):
            raise FormatError(f"{where}: dtype argument is not a torch dtype")
        dtype = dtype_arg.dtype
    ref = check_view(where, storage.storage, dtype, offset, shape, stride)
    if metadata:
        if not isinstance(metadata, dict) or not set(metadata) <= {"conj", "neg"}:
            raise FormatError(f"{where}: tensor metadata {metadata!r:.60} is not understood")
        if not all(type(v) is bool for v in metadata.values()):
            raise FormatError(f"{where}: tensor metadata {metadata!r:.60} is not booleans")
        ref = TensorRef(ref.storage, ref.dtype, ref.offset, ref.shape, ref.stride,
                        neg=bool(metadata.get("neg")), conj=bool(metadata.get("conj")))  # fmt: skip
        check_lazy_bits(ref, where)
    return ref


@dataclass(frozen=True, eq=False)
class TypedStorage:
    """What a storage persistent id resolves to: the bytes, and the dtype of the storage object
    (``torch.UntypedStorage``: uint8, as torch's loader makes it; a quantized storage: the integer
    type of its representation, and ``quantized`` names torch's dtype)."""

    storage: Storage
    dtype: DType
    quantized: str | None = None


def _inline(values: list[int], dtype: str, shape: tuple[int, ...], offset: int, where: str) -> TensorRef:
    """A small tensor made of parameters the pickle holds (a scale, a zero point, a size).

    Every value must fit ``dtype`` (torch refuses the file too: it unpacks them as C ``int64_t``
    / ``double``); the pickle's integers are unbounded, so this is checked, never left to
    ``struct``/``float`` to raise."""
    try:
        if dtype == "float64":
            data = struct.pack(f"<{len(values)}d", *(float(v) for v in values))
        else:
            if not all(-(2**63) <= v < 2**63 for v in values):
                raise OverflowError
            data = struct.pack(f"<{len(values)}q", *values)
    except OverflowError:
        raise FormatError(f"{where}: value {max(values, key=abs)!r:.40} does not fit {dtype}") from None
    storage = Storage(f"inline@{offset}", len(data), 0, (0, 0), 1, data)
    return TensorRef(storage, torch_dtype(dtype), 0, shape, contiguous_strides(shape))


def _hooks_ok(value: object, where: str) -> None:
    if value not in ({}, None):
        raise PolicyError(f"{where}: backward hooks are refused")


def _qtensor(args: tuple[object, ...], where: str, offset: int) -> Quantized:
    """``_rebuild_qtensor(storage, offset, size, stride, qparams, requires_grad, hooks)``."""
    if len(args) != 7:
        raise FormatError(f"{where}: expected 7 arguments, got {len(args)}")
    storage, start, shape, stride, qparams, _grad, hooks = args
    _hooks_ok(hooks, where)
    if not isinstance(storage, TypedStorage) or storage.quantized is None:
        raise FormatError(f"{where}: a quantized tensor needs a quantized storage (QInt8Storage ...)")
    ref = check_view(where, storage.storage, storage.dtype, start, shape, stride)
    if not isinstance(qparams, tuple) or not qparams or not isinstance(qparams[0], _QScheme):
        raise FormatError(f"{where}: quantizer parameters {qparams!r:.60} are not (scheme, ...)")
    scheme = qparams[0].name
    extras: dict[str, TensorRef]
    if scheme == "per_tensor_affine":
        if len(qparams) != 3 or type(qparams[1]) not in (float, int) or type(qparams[2]) is not int:
            raise FormatError(f"{where}: per-tensor parameters are not (scheme, scale, zero_point)")
        extras = {
            "scale": _inline([qparams[1]], "float64", (), offset, where),
            "zero_point": _inline([qparams[2]], "int64", (), offset, where),
        }
    else:
        if (
            len(qparams) != 4
            or not all(isinstance(p, TensorRef) for p in qparams[1:3])
            or type(qparams[3]) is not int
        ):
            raise FormatError(f"{where}: per-channel parameters are not (scheme, scales, zero_points, axis)")
        assert isinstance(qparams[1], TensorRef) and isinstance(qparams[2], TensorRef)
        extras = {
            "scales": qparams[1],
            "zero_points": qparams[2],
            "axis": _inline([qparams[3]], "int64", (), offset, where),
        }
    marked = dataclasses.replace(ref, quantized=f"{storage.quantized} ({scheme})")
    return Quantized(marked, extras)


def _sparse(args: tuple[object, ...], where: str, offset: int) -> dict[str, TensorRef]:
    """``_rebuild_sparse_tensor(layout, data)``: the components, as dense tensors, and the size."""
    if len(args) != 2 or not isinstance(args[0], _Layout) or not isinstance(args[1], tuple):
        raise FormatError(f"{where}: expected (layout, data)")
    names = _LAYOUTS[args[0].name]
    data = args[1]
    extra = data[len(names) + 1 :]
    if (
        args[0].name == "torch.sparse_coo"
        and extra
        and not (len(extra) == 1 and type(extra[0]) in (bool, type(None)))
    ):
        raise FormatError(f"{where}: sparse COO data is not (indices, values, size[, is_coalesced])")
    if args[0].name != "torch.sparse_coo" and extra:
        raise FormatError(f"{where}: sparse data has {len(data)} parts, expected {len(names) + 1}")
    if len(data) < len(names) + 1 or not all(isinstance(part, TensorRef) for part in data[: len(names)]):
        raise FormatError(f"{where}: sparse components are not tensors")
    size = data[len(names)]
    if not isinstance(size, tuple) or not all(type(n) is int and n >= 0 for n in size):
        raise FormatError(f"{where}: sparse size {size!r:.60} is not a tuple of sizes")
    out: dict[str, TensorRef] = {name: part for name, part in zip(names, data, strict=False)}
    out["size"] = _inline(list(size), "int64", (len(size),), offset, where)
    return out
