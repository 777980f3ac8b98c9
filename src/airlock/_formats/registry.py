"""The readers airlock knows, in the order they are tried, and the names that look like models."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Final

from airlock._formats.base import FolderCheck, Reader
from airlock._formats.compressed import COMPRESSED_READERS
from airlock._formats.gguf import GGUFReader
from airlock._formats.hf_folder import HFFolderCheck
from airlock._formats.keras import KerasConfigReader, KerasH5Reader, KerasZipReader
from airlock._formats.npy import NpyReader
from airlock._formats.onnx import OnnxReader
from airlock._formats.pickle import PickleReader, TorchLegacyReader
from airlock._formats.safetensors import SafetensorsReader
from airlock._formats.savedmodel import SavedModelReader
from airlock._formats.tar import TarReader
from airlock._formats.zip_reader import ZipReader

__all__ = ["FOLDER_CHECKS", "MODEL_SUFFIXES", "READERS", "looks_like_model_file"]

#: Tried in order; the first whose ``sniff`` accepts the content reads it. Specific formats come
#: before the generic pickle reader, whose protocol-0 probe is the loosest test.
READERS: Final[tuple[Reader, ...]] = (
    SafetensorsReader(),
    GGUFReader(),
    SavedModelReader(),  # before ONNX: both open with field 1 = 1, field 2
    OnnxReader(),
    KerasZipReader(),
    KerasH5Reader(),
    KerasConfigReader(),
    ZipReader(),
    NpyReader(),
    *COMPRESSED_READERS,
    TarReader(),
    TorchLegacyReader(),
    PickleReader(),
)

#: Whole-folder checks, run on every folder of a folder scan (see ``base.FolderCheck``).
FOLDER_CHECKS: Final[tuple[FolderCheck, ...]] = (HFFolderCheck(),)

#: Suffixes of model files. Only used to decide whether a file no reader recognises is reported
#: as unsupported (an ERROR verdict) or listed as skipped; never to choose a reader.
MODEL_SUFFIXES: Final = frozenset(
    ".bin .pt .pth .pkl .pickle .ckpt .joblib .jbl .npy .npz .safetensors .gguf .ggml .onnx .ort .keras "
    ".h5 .hdf5 .pb .tflite .lite .msgpack .mar .dill .sav .tar .zip .7z .gz .bz2 .xz .lzma .zst "
    ".mlmodel .mlpackage .engine .plan .nemo .llamafile .params .weights .ptl .torchscript .data".split()
)


def looks_like_model_file(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in MODEL_SUFFIXES
