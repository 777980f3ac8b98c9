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
        return
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
