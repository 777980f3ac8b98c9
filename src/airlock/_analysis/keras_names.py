"""Judging the names a Keras config makes the loader import (``CodeReference`` facts, ecosystem
``keras``, yielded by ``_formats/keras_config.py``).

Keras imports ``module`` and takes ``class_name`` from it (or a function, a type spec, a
registered name). A name in the shared catalogue or among Keras' own side-effecting functions
(:data:`KERAS_DANGEROUS`, the bypasses of the CVE-2025-1550 fix) is ``keras.unsafe-module``
(MALICIOUS); a name inside Keras' own packages, or a built-in class name of a legacy config, is
fine; anything else is ``keras.custom-object`` (SUSPICIOUS: code the loader must supply), which
``--allow`` / a policy file can turn into INFO (``_scan/engine.py::apply_allowances``).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Final

from airlock._analysis.catalogue import lookup
from airlock._formats.base import CodeReference, Issue
from airlock._formats.keras_config import KERAS_PACKAGES
from airlock.results import Severity

__all__ = ["KERAS_BUILTIN_CLASSES", "KERAS_DANGEROUS", "judge_keras_reference"]

_SHOW: Final = 120


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


#: Keras' own non-modeling functions, the names ``keras.src.saving.serialization_lib`` itself
#: refuses since 3.12 (``NON_MODELING_APIS``): before that, Keras 3.9-3.11 in safe mode handed them
#: to the layer that named them (a Lambda called ``keras.utils.save_img`` with a host path from its
#: inbound node and wrote the file). Their ``keras.src`` homes are caught by the module allowlist.
_NON_MODELING: Final = {
    **dict.fromkeys(
        ["keras.models.save_model", "keras.saving.save_model", "keras.saving.save_weights",
         "keras.preprocessing.image.save_img", "keras.utils.save_img"],
        "writes files on the host",
    ),
    **dict.fromkeys(
        ["keras.saving.load_weights", "keras.preprocessing.image.load_img", "keras.utils.load_img",
         "keras.preprocessing.image_dataset_from_directory", "keras.preprocessing.text_dataset_from_directory",
         "keras.utils.audio_dataset_from_directory", "keras.utils.image_dataset_from_directory",
         "keras.utils.text_dataset_from_directory"],
        "reads or lists host files",
    ),
    **dict.fromkeys(
        ["keras.models.model_from_json", "keras.saving.deserialize_keras_object",
         "keras.utils.deserialize_keras_object", "keras.saving.serialize_keras_object",
         "keras.utils.serialize_keras_object", "keras.saving.register_keras_serializable",
         "keras.utils.register_keras_serializable", "keras.backend.clear_session", "keras.utils.clear_session"],
        "changes the loader's state or deserializes again",
    ),
}  # fmt: skip

#: Keras functions with side effects that a config can reach from inside the allowed packages
#: (the bypasses of the CVE-2025-1550 fix). A prefix covers everything reached through it.
KERAS_DANGEROUS: Final[dict[str, str]] = {
    "keras.utils.get_file": "downloads a file to any path",
    "keras.src.utils.file_utils": "file system and network access",
    "keras.config.enable_unsafe_deserialization": "turns safe mode off",
    "keras.src.saving.serialization_lib.enable_unsafe_deserialization": "turns safe mode off",
    "keras.src.backend.common.global_state": "changes loader state",
    "keras.saving.load_model": "nested model load",
    "keras.models.load_model": "nested model load",
    "keras.src.saving": "nested model load and loader state",
    "keras.src.legacy.saving": "nested model load",
    "keras.src.utils.python_utils": "unmarshals Python bytecode",
    "keras.utils.io_utils": "file access",
    "keras.src.utils.io_utils": "file access",
    "tf_keras.src.utils.data_utils.get_file": "downloads a file to any path",
    "tf_keras.utils.get_file": "downloads a file to any path",
    **_NON_MODELING,
}

#: Class names legacy configs (no ``module`` key) use for Keras' own objects. An unknown name
#: there is a custom object: code the loader must have registered.
KERAS_BUILTIN_CLASSES: Final = frozenset(
    """Sequential Functional Model InputLayer Input Dense EinsumDense Activation Dropout Flatten
    Reshape Permute RepeatVector Masking Embedding Identity Lambda Add Subtract Multiply Average
    Maximum Minimum Concatenate Dot Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose
    Conv3DTranspose Convolution1D Convolution2D Convolution3D SeparableConv1D SeparableConv2D
    DepthwiseConv1D DepthwiseConv2D MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D
    AveragePooling2D AveragePooling3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
    GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D MaxPool1D MaxPool2D
    MaxPool3D AvgPool1D AvgPool2D AvgPool3D GlobalMaxPool1D GlobalMaxPool2D GlobalAvgPool1D
    GlobalAvgPool2D ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D
    UpSampling1D UpSampling2D UpSampling3D BatchNormalization LayerNormalization
    GroupNormalization UnitNormalization SpectralNormalization RMSNormalization Normalization
    SimpleRNN SimpleRNNCell LSTM LSTMCell GRU GRUCell RNN StackedRNNCells Bidirectional
    TimeDistributed ConvLSTM1D ConvLSTM2D ConvLSTM3D MultiHeadAttention Attention
    AdditiveAttention GroupQueryAttention ReLU LeakyReLU PReLU ELU Softmax ThresholdedReLU
    GaussianNoise GaussianDropout AlphaDropout SpatialDropout1D SpatialDropout2D SpatialDropout3D
    ActivityRegularization InputSpec Rescaling Resizing CenterCrop RandomCrop RandomFlip RandomRotation
    RandomZoom RandomTranslation RandomContrast RandomBrightness StringLookup IntegerLookup
    CategoryEncoding Hashing Discretization TextVectorization
    GlorotUniform GlorotNormal HeUniform HeNormal LecunUniform LecunNormal Zeros Ones Constant
    RandomUniform RandomNormal TruncatedNormal VarianceScaling Orthogonal Identity
    L1 L2 L1L2 OrthogonalRegularizer MaxNorm MinMaxNorm NonNeg UnitNorm
    SGD Adam AdamW Adamax Adagrad Adadelta RMSprop Nadam Ftrl Lion LossScaleOptimizer
    MeanSquaredError MeanAbsoluteError MeanAbsolutePercentageError MeanSquaredLogarithmicError
    BinaryCrossentropy CategoricalCrossentropy SparseCategoricalCrossentropy Hinge SquaredHinge
    CategoricalHinge KLDivergence Poisson CosineSimilarity Huber LogCosh BinaryFocalCrossentropy
    Accuracy BinaryAccuracy CategoricalAccuracy SparseCategoricalAccuracy TopKCategoricalAccuracy
    SparseTopKCategoricalAccuracy AUC Precision Recall Mean Sum MeanMetricWrapper
    ExponentialDecay PiecewiseConstantDecay PolynomialDecay InverseTimeDecay CosineDecay
    CosineDecayRestarts""".split()
) | frozenset(
    # tf_keras registers its own optimizers under the default package ("Custom>Adam") and writes
    # that name into every compiled model's training_config; its loader resolves them from its
    # registry (tf_keras/src/optimizers, @register_keras_serializable())
    f"Custom>{name}"
    for name in "Adadelta Adafactor Adagrad Adam AdamW Adamax Ftrl Lion Nadam RMSprop SGD".split()
)


#: Where Keras' modeling functions live (activations, losses, metrics, ops, initializers ...): a
#: ``function`` a config names inside Keras' packages must come from one of these (after
#: ``keras.``/``keras.src.``, ``tf_keras.``/``tf_keras.src.``, ``keras_hub.src.`` ...). Any other
#: Keras function (file utilities, saving, configuration, dataset readers) is not a model's
#: building block: ``keras.custom-object``, as Keras >= 3.12 refuses such names itself.
KERAS_FUNCTION_MODULES: Final = frozenset(
    """activations losses metrics ops initializers regularizers constraints random layers
    optimizers quantizers dtype_policies""".split()
)
#: keras_hub/keras_nlp/keras_cv modules of modeling helpers (``gelu_approximate`` ...)
_HUB_FUNCTION_MODULES: Final = frozenset({"layers", "models", "losses", "metrics", "utils.keras_utils"})


def _modeling_function(module: str) -> bool:
    """True when ``module`` is one of Keras' modeling namespaces (:data:`KERAS_FUNCTION_MODULES`)."""
    package, _, rest = module.partition(".")
    if package in ("keras", "tf_keras"):
        rest = rest.removeprefix("src.")
        return any(rest == m or rest.startswith(f"{m}.") for m in KERAS_FUNCTION_MODULES)
    if not rest.startswith("src."):
        return False
    rest = rest.removeprefix("src.")
    return any(rest == m or rest.startswith(f"{m}.") for m in _HUB_FUNCTION_MODULES)


def _dangerous(dotted: str) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        reason = KERAS_DANGEROUS.get(".".join(parts[:end]))
        if reason is not None:
            return reason
    found = lookup(dotted)
    return found[1] if found else None


def judge_keras_reference(ref: CodeReference) -> Iterator[Issue]:
    """The findings for one name a Keras config makes the loader import."""
    if ref.kind == "registered name":
        yield from _check_registered(ref.name, ref.where)
    else:
        yield from _check_name(ref.module, ref.name, ref.where, ref.kind)


def _package(module: str) -> str:
    return module.split(".", 1)[0]


def _check_name(module: str | None, name: str, where: str, kind: str) -> Iterator[Issue]:
    if not name:
        yield Issue(
            "keras.custom-object",
            Severity.SUSPICIOUS,
            f"{kind} at {where} has no usable name (expected a Keras class or function name)",
        )
        return
    if not module:
        if kind == "class" and name in KERAS_BUILTIN_CLASSES:
            return
        dotted = name
    elif module == "builtins":
        # Keras looks the name up among its own activations etc., then falls back to importing
        # Python's builtins module: a Python builtin's name reaches the real builtin.
        if not hasattr(builtins, name):
            return
        dotted = f"builtins.{name}"
    else:
        dotted = f"{module}.{name}"
    reason = _dangerous(dotted)
    if reason is not None:
        yield Issue(
            "keras.unsafe-module",
            Severity.MALICIOUS,
            f"{kind} at {where} names {_show(dotted)!r} ({reason}); Keras imports it while loading, even in "
            f"safe mode before 3.9 (CVE-2025-1550) (expected Keras' own layers and functions)",
            callable=_show(dotted),
        )
    elif module and _package(module) in KERAS_PACKAGES and not name.startswith("_"):
        if kind != "function" or _modeling_function(module):
            return
        yield Issue(
            "keras.custom-object",
            Severity.SUSPICIOUS,
            f"{kind} at {where} names {_show(dotted)!r}, a Keras function outside its modeling modules "
            f"(activations, losses, metrics, ops, layers ...): not a model's building block "
            f"(Keras >= 3.12 refuses it)",
            callable=_show(dotted),
        )
    else:
        yield Issue(
            "keras.custom-object",
            Severity.SUSPICIOUS,
            f"{kind} at {where} names {_show(dotted)!r}, outside Keras' own packages "
            f"({', '.join(sorted(KERAS_PACKAGES))}): custom code the loader must supply",
            callable=_show(dotted),
        )


def _check_registered(registered: str, where: str) -> Iterator[Issue]:
    package, _, name = registered.partition(">")
    dotted = f"{package}.{name}" if name else registered
    reason = _dangerous(dotted)
    if reason is not None:
        yield Issue(
            "keras.unsafe-module",
            Severity.MALICIOUS,
            f"registered name {_show(registered)!r} at {where} names {_show(dotted)!r} ({reason}) "
            f"(expected Keras' own objects)",
            callable=_show(dotted),
        )
    elif name and package.split(".", 1)[0] not in KERAS_PACKAGES:
        yield Issue(
            "keras.custom-object",
            Severity.SUSPICIOUS,
            f"registered name {_show(registered)!r} at {where} is a custom object from package "
            f"{_show(package)!r}: code the loader must have registered (expected Keras' own objects)",
            callable=_show(dotted),
        )
