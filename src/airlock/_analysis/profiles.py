"""Allowlist profiles: exact ``module.qualname`` names that ordinary model files import, each with
the reason it is safe for the unpickler to import and call.

What "safe" means here: called the way the unpickler calls it (constructor through ``__new__`` +
``__setstate__``, or a rebuild function with the pickled arguments), it builds data and runs no
code chosen by the file. Anything the file passes to these callables that is itself a global is
checked on its own, so ``functools.partial(os.system)`` is caught at ``os.system``.
"""

from __future__ import annotations

from airlock._analysis import profile_data

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, NamedTuple
else:
    from airlock._record import NamedTuple

__all__ = ["PROFILES", "Entry"]


class Entry(NamedTuple):
    name: str
    reason: str


def _entries(names: tuple[str, ...] | list[str], reason: str) -> tuple[Entry, ...]:
    return tuple(Entry(name, reason) for name in names)


_TENSOR: Final = "torch tensor rebuild function: builds a tensor view over a storage"
_STORAGE: Final = "torch storage type named in persistent ids; carries no code"
_DTYPE: Final = "torch dtype / layout / memory-format constant"

_TORCH: Final = (
    _entries(
        [
            "torch._utils._rebuild_tensor",
            "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_tensor_v3",
            "torch._utils._rebuild_parameter",
            "torch._utils._rebuild_parameter_with_state",
            "torch._utils._rebuild_qtensor",
            "torch._utils._rebuild_sparse_tensor",
            "torch._utils._rebuild_nested_tensor",
            "torch._utils._rebuild_meta_tensor_no_storage",
            "torch._utils._rebuild_wrapper_subclass",
            "torch._utils._rebuild_device_tensor_from_numpy",
            "torch._utils._rebuild_device_tensor_from_cpu_tensor",
            "torch._tensor._rebuild_from_type",
            "torch._tensor._rebuild_from_type_v2",
        ],
        _TENSOR,
    )
    + _entries(
        [
            "torch.nn.parameter.Parameter",
            "torch.nn.parameter.Buffer",
            "torch.nn.parameter.UninitializedParameter",
            "torch.nn.parameter.UninitializedBuffer",
            "torch.Tensor",
            "torch._tensor.Tensor",
        ],
        "tensor and parameter classes, constructed by the rebuild functions",
    )
    + _entries(
        [
            f"torch.{name}"
            for name in (
                "TypedStorage UntypedStorage ByteStorage DoubleStorage FloatStorage HalfStorage LongStorage "
                "IntStorage ShortStorage CharStorage BoolStorage BFloat16Storage ComplexDoubleStorage "
                "ComplexFloatStorage QUInt8Storage QInt8Storage QInt32Storage QUInt4x2Storage QUInt2x4Storage"
            ).split()
        ]
        + ["torch.storage.TypedStorage", "torch.storage.UntypedStorage", "torch.storage._LegacyStorage"],
        _STORAGE,
    )
    + _entries(
        [
            f"torch.{name}"
            for name in (
                "uint8 int8 int16 short int32 int int64 long float16 half float32 float float64 double "
                "complex32 chalf complex64 cfloat complex128 cdouble bool qint8 quint8 qint32 bfloat16 "
                "quint4x2 quint2x4 bits1x8 bits2x4 bits4x2 bits8 bits16 float8_e5m2 float8_e4m3fn "
                "float8_e5m2fnuz float8_e4m3fnuz uint16 uint32 uint64 uint1 bit uint2 uint3 uint4 uint5 "
                "uint6 uint7 int1 int2 int3 int4 int5 int6 int7 float8_e8m0fnu float4_e2m1fn_x2 "
                "strided sparse_coo sparse_csr sparse_csc sparse_bsr sparse_bsc _mkldnn jagged "
                "preserve_format contiguous_format channels_last channels_last_3d legacy_contiguous_format "
                "per_tensor_affine per_channel_affine per_tensor_symmetric per_channel_symmetric "
                "per_channel_affine_float_qparams"
            ).split()
        ],
        _DTYPE,
    )
    + _entries(["torch.Size", "torch.device", "torch.dtype", "torch.layout", "torch.memory_format"], _DTYPE)
    + _entries(["torch.serialization._get_layout"], "maps a layout name to a torch.layout constant")
    + _entries(
        [
            f"torch.{name}"
            for name in (
                "FloatTensor DoubleTensor HalfTensor BFloat16Tensor ByteTensor CharTensor ShortTensor "
                "IntTensor LongTensor BoolTensor"
            ).split()
        ],
        "legacy tensor type named by torch's legacy tar format",
    )
    + _entries(
        [
            f"torch.jit._pickle.{name}"
            for name in (
                "build_intlist build_tensorlist build_doublelist build_boollist "
                "build_tensor_from_id restore_type_tag"
            ).split()
        ],
        "TorchScript list/tensor rebuild helper used by constants.pkl and .debug_pkl",
    )
    + _entries(
        profile_data.TORCH_NN_MODULE_CLASSES,
        "torch.nn layer class: unpickled by __new__ + __setstate__, runs no file-chosen code",
    )
    + _entries(
        profile_data.TORCH_FUNCTIONAL,
        "torch.nn.functional math function, referenced (e.g. as an activation), not called at load",
    )
    + _entries(
        ["torch.nn.modules.module._IncompatibleKeys", "torch.nn.utils.parametrize.ParametrizationList"],
        "torch.nn helper container",
    )
    + _entries(
        [
            "torch.optim.adam.Adam",
            "torch.optim.adamw.AdamW",
            "torch.optim.sgd.SGD",
            "torch.optim.lr_scheduler.StepLR",
            "torch.optim.lr_scheduler.LambdaLR",
            "torch.optim.lr_scheduler.CosineAnnealingLR",
            "torch.optim.lr_scheduler.OneCycleLR",
            "torch.amp.grad_scaler.GradScaler",
            "torch.cuda.amp.grad_scaler.GradScaler",
        ],
        "optimizer / scheduler / scaler class pickled with its state",
    )
)

_NUMPY: Final = _entries(
    [
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
    ],
    "numpy array / scalar reconstruction from pickled bytes",
) + _entries(
    [
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.ma.core.MaskedArray",
        "numpy.ma.core._mareconstruct",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        "numpy.random._generator.__pyx_unpickle_Generator",
        "numpy.random.mtrand.__pyx_unpickle_RandomState",
    ]
    + [
        f"numpy.{name}"
        for name in (
            "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 longdouble "
            "complex64 complex128 clongdouble str_ bytes_ void object_ datetime64 timedelta64 intc uintc "
            "int_ uint longlong ulonglong single double half csingle cdouble"
        ).split()
    ]
    + [
        f"numpy.dtypes.{name}"
        for name in ("Float64DType Float32DType Int64DType Int32DType BoolDType").split()
    ],
    "numpy type, dtype or random-state class: pure data",
)

_PYTHON: Final = _entries(
    [
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.Counter",
        "collections.deque",
        "builtins.set",
        "builtins.frozenset",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.str",
        "builtins.int",
        "builtins.float",
        "builtins.complex",
        "builtins.bool",
        "builtins.slice",
        "builtins.range",
        "builtins.object",
        "builtins.NoneType",
        "builtins.Ellipsis",
        "builtins.NotImplemented",
        "datetime.datetime",
        "datetime.date",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
    ],
    "Python built-in or standard-library data type",
) + _entries(
    ["copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__", "_codecs.encode"],
    "pickle protocol helper: object.__new__ of a class checked on its own, or str -> bytes",
)

_ARGPARSE: Final = _entries(["argparse.Namespace"], "plain attribute bag holding training arguments")

_SKLEARN: Final = (
    _entries(
        profile_data.SKLEARN_CLASSES,
        "scikit-learn estimator or helper class: unpickled by __new__ + __setstate__",
    )
    + _entries(
        [
            "sklearn.neighbors._kd_tree.newObj",
            "sklearn.neighbors._ball_tree.newObj",
            "sklearn.metrics._dist_metrics.newObj",
        ],
        "scikit-learn Cython helper: cls.__new__(cls) for a class checked on its own",
    )
    + _entries(
        ["joblib.numpy_pickle.NumpyArrayWrapper"],
        "joblib placeholder for an array stored raw after it (the array bytes are checked, not run)",
    )
)

_TRANSFORMERS: Final = _entries(
    [
        "transformers.training_args.TrainingArguments",
        "transformers.training_args.OptimizerNames",
        "transformers.training_args_seq2seq.Seq2SeqTrainingArguments",
        "transformers.trainer_utils.IntervalStrategy",
        "transformers.trainer_utils.SaveStrategy",
        "transformers.trainer_utils.HubStrategy",
        "transformers.trainer_utils.SchedulerType",
        "transformers.trainer_utils.EvaluationStrategy",
        "transformers.trainer_utils.FSDPOption",
        "transformers.trainer_pt_utils.AcceleratorConfig",
        "transformers.debug_utils.DebugOption",
        "transformers.utils.generic.ExplicitEnum",
        "transformers.utils.generic.PaddingStrategy",
        "transformers.trainer_callback.TrainerState",
        "accelerate.state.PartialState",
        "accelerate.utils.dataclasses.DistributedType",
    ],
    "transformers Trainer argument dataclass or enum (training_args.bin)",
)

#: Profile name -> entries. All are on by default; ``--profile`` narrows the set.
PROFILES: Final[dict[str, tuple[Entry, ...]]] = {
    "python": _PYTHON,
    "torch": _TORCH,
    "numpy": _NUMPY,
    "argparse": _ARGPARSE,
    "sklearn": _SKLEARN,
    "transformers": _TRANSFORMERS,
}
