"""The readers airlock knows, in the order they are tried, and the names that look like models."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Final

from airlock._formats.base import FolderCheck, Reader

__all__ = [
    "MODEL_SUFFIXES",
    "READERS",
    "ReaderEntry",
    "folder_checks",
    "looks_like_model_file",
    "readers_for",
]


class ReaderEntry:
    """One reader module, imported only when a file could be in its format.

    ``may_match`` is a cheap necessary condition on the first bytes (a magic number where the
    format has one); the reader's own ``sniff`` decides. Most scans meet one or two formats, and
    importing every reader module would cost more than scanning a multi-GB checkpoint.
    """

    __slots__ = ("_loaded", "attribute", "may_match", "module")

    def __init__(self, module: str, attribute: str, may_match: Callable[[bytes], bool]) -> None:
        self.module = module
        #: attribute of the module holding the reader instance (or a tuple of instances)
        self.attribute = attribute
        self.may_match = may_match
        self._loaded: tuple[Reader, ...] | None = None

    def load(self) -> tuple[Reader, ...]:
        if self._loaded is None:
            value = getattr(importlib.import_module(self.module), self.attribute)
            self._loaded = tuple(value) if isinstance(value, tuple) else (value,)
        return self._loaded


def _starts(*magic: bytes) -> Callable[[bytes], bool]:
    return lambda head: head.startswith(magic)


def _at(offset: int, magic: bytes) -> Callable[[bytes], bool]:
    return lambda head: head[offset : offset + len(magic)] == magic


def _any(head: bytes) -> bool:
    return True


def _hdf5(head: bytes) -> bool:
    return any(head[at : at + 8] == b"\x89HDF\r\n\x1a\n" for at in (0, 512, 1024, 2048))


def _json_after_length(head: bytes) -> bool:
    # safetensors: an 8-byte length, then a JSON object (serde_json skips whitespace before it)
    return head[8:].lstrip(b" \t\r\n")[:1] == b"{"


def _keras_zip(head: bytes) -> bool:
    # the first local header names metadata.json or config.json (KerasZipReader.sniff decides);
    # any other zip (a torch checkpoint) never imports the Keras readers
    if not head.startswith(b"PK\x03\x04") or len(head) < 30:
        return False
    length = int.from_bytes(head[26:28], "little")
    return head[30 : 30 + length] in (b"metadata.json", b"config.json")


def _json_object(head: bytes) -> bool:
    return head.lstrip()[:1] == b"{"


_F: Final = "airlock._formats."
#: the tags of the ModelProto fields (ir_version 1 ... configuration 26), any of which may lead
_ONNX_FIRST_TAGS: Final = (
    b"\x08", b"\x12", b"\x1a", b"\x22", b"\x28", b"\x32", b"\x3a", b"\x42", b"\x72", b"\xa2\x01",
    b"\xca\x01", b"\xd2\x01",
)  # fmt: skip

#: Tried in order; the first whose ``sniff`` accepts the content reads it. Specific formats come
#: before the generic pickle reader, whose protocol-0 probe is the loosest test.
READERS: Final[tuple[ReaderEntry, ...]] = (
    ReaderEntry(_F + "safetensors", "READER", _json_after_length),
    ReaderEntry(_F + "gguf", "READER", _starts(b"GGUF")),
    ReaderEntry(_F + "savedmodel", "READER", _starts(b"\x08")),  # before ONNX: both open with field 1
    # any ModelProto field may come first: protobuf parsers accept fields in any order
    ReaderEntry(_F + "onnx", "READER", _starts(*_ONNX_FIRST_TAGS)),
    ReaderEntry(_F + "keras", "ZIP_READER", _keras_zip),
    ReaderEntry(_F + "keras", "H5_READER", _hdf5),
    ReaderEntry(_F + "keras", "CONFIG_READER", _json_object),
    ReaderEntry(_F + "zip_reader", "READER", _starts(b"PK\x03\x04", b"PK\x05\x06")),
    ReaderEntry(_F + "npy", "READER", _starts(b"\x93NUMPY")),
    ReaderEntry(
        _F + "compressed",
        "COMPRESSED_READERS",
        _starts(b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d", b"\x78", b"\x04\x22\x4d\x18", b"\x28\xb5\x2f\xfd"),
    ),
    ReaderEntry(_F + "tar", "READER", _at(257, b"ustar")),
    # torch's legacy magic number pickled with protocol 2 or 3, or (4, 5) inside a FRAME
    ReaderEntry(
        _F + "pickle",
        "LEGACY_READER",
        _starts(b"\x80\x02\x8a\x0a", b"\x80\x03\x8a\x0a", b"\x80\x04\x95", b"\x80\x05\x95"),
    ),
    ReaderEntry(_F + "pickle", "READER", _any),
)


def readers_for(head: bytes) -> Iterator[Reader]:
    """The readers that may read content starting with ``head``, in order, imported on demand."""
    for entry in READERS:
        if entry.may_match(head):
            yield from entry.load()


def folder_checks() -> tuple[FolderCheck, ...]:
    """Whole-folder checks, run on every folder of a folder scan (see ``base.FolderCheck``)."""
    from airlock._formats.hf_folder import HFFolderCheck

    return (HFFolderCheck(),)


#: Suffixes of model files. Only used to decide whether a file no reader recognises is reported
#: as unsupported (an ERROR verdict) or listed as skipped; never to choose a reader.
MODEL_SUFFIXES: Final = frozenset(
    ".bin .pt .pth .pkl .pickle .ckpt .joblib .jbl .npy .npz .safetensors .gguf .ggml .onnx .ort .keras "
    ".h5 .hdf5 .pb .tflite .lite .msgpack .mar .dill .sav .tar .zip .7z .gz .bz2 .xz .lzma .zst "
    ".mlmodel .mlpackage .engine .plan .nemo .llamafile .params .weights .ptl .torchscript .data".split()
)


def looks_like_model_file(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in MODEL_SUFFIXES
