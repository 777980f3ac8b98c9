"""The formats airlock knows (one :class:`Format` record each, in the order their readers are
tried), the folder checks, and the names that look like models."""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import PurePosixPath

from airlock._formats.base import FolderCheck, Reader

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "FORMATS",
    "MODEL_SUFFIXES",
    "Format",
    "folder_checks",
    "format_named",
    "formats_for",
    "looks_like_model_file",
    "looks_like_tar",
    "sniff_format",
    "torch_tar_reading",
]

#: the sandbox runtimes a format's real loader runs in (``airlock run``, sandbox/_runtimes)
RUNTIME_TORCH: Final = "torch"
RUNTIME_ONNX: Final = "onnx"
RUNTIME_TEXT: Final = "text-gguf"


class Format:
    """One format airlock knows, and everything airlock does with it.

    * the **reader** (``reader_module``/``reader_attribute``, an instance, or ``(attribute, i)`` for
      the i-th of a tuple of instances), imported only when a file could be in the format:
      ``may_match`` is a cheap necessary condition on the first bytes (a magic number where the
      format has one), the reader's own ``sniff`` decides. Most scans meet one or two formats,
      and importing every reader module would cost more than scanning a multi-GB checkpoint;
    * ``whole_pickle``: the reader analyses the whole content as what ``pickle.load`` reads, so the
      scan need not read it a second time as a polyglot pickle;
    * ``planner``: ``"module:function"`` that plans the tensors ``airlock.load`` / ``convert`` take
      from a scanned file of this format (``(Mapped, Limits, allow) -> {name: TensorRef}``), or
      None when they refuse it;
    * ``unpickled_weights``: the real loader (``torch.load``, ``pickle.load``) unpickles the
      weights, so the gateway converts them to safetensors when the operator brings the code;
    * ``runtime``: the sandbox runtime whose loader reads this format in ``airlock run``, or None
      (a torch zip with TorchScript's layout is refined to ``torchscript`` by its member names);
    * ``raw_loaded``: a loader that runs code opens such bytes by their content alone, whatever
      their name — ``joblib.load`` (a compressed stream, then unpickled), ``numpy.load`` (npy with
      object arrays, npz) and ``torch.load`` (zip): raw bytes that start so (a torch storage member)
      are read as such a file too;
    * ``sequential``: the reader reads the whole content front to back (a pickle, a compressed
      stream), so the scan keeps the kernel's read-ahead for it; every other reader touches a
      directory, headers and a few members, and gets its mapping advised MADV_RANDOM.

    Every place that needs to know something about a format asks its record; nothing outside this
    module compares format names (tests/test_architecture.py).
    """

    __slots__ = (
        "_loaded",
        "may_match",
        "name",
        "planner",
        "raw_loaded",
        "reader_attribute",
        "reader_index",
        "reader_module",
        "runtime",
        "sequential",
        "unpickled_weights",
        "whole_pickle",
    )

    def __init__(
        self,
        name: str,
        reader: str,
        may_match: Callable[[bytes], bool],
        *,
        index: int | None = None,
        whole_pickle: bool = False,
        planner: str | None = None,
        unpickled_weights: bool = False,
        runtime: str | None = None,
        sequential: bool = False,
        raw_loaded: bool = False,
    ) -> None:
        self.name = name
        module, _, attribute = reader.partition(":")
        self.reader_module = module
        self.reader_attribute = attribute
        self.reader_index = index
        self.may_match = may_match
        self.whole_pickle = whole_pickle
        self.planner = planner
        self.unpickled_weights = unpickled_weights
        self.runtime = runtime
        self.sequential = sequential or whole_pickle
        self.raw_loaded = raw_loaded
        self._loaded: Reader | None = None

    def reader(self) -> Reader:
        """The reader instance (its module imported on first use)."""
        if self._loaded is None:
            value = getattr(importlib.import_module(self.reader_module), self.reader_attribute)
            self._loaded = value[self.reader_index] if self.reader_index is not None else value
        return self._loaded

    def __repr__(self) -> str:
        return f"Format({self.name!r})"


class _Starts:
    """``may_match`` for content that starts with one of ``magic`` (it says which first bytes it
    takes, for :func:`raw_loaded`'s table)."""

    __slots__ = ("magic",)

    def __init__(self, *magic: bytes) -> None:
        self.magic = magic

    def __call__(self, head: bytes) -> bool:
        return head.startswith(self.magic)


def _starts(*magic: bytes) -> Callable[[bytes], bool]:
    return _Starts(*magic)


#: torch.load of any file that is not a zip first tries ``tarfile.open(fileobj=f, mode="r:")`` and,
#: when that opens, unpickles its ``storages`` member. ``tarfile`` asks nothing of the first block
#: but ``TarInfo.frombuf``'s checks: 512 bytes, not all NUL, and a checksum field that, read as
#: ``tarfile.nti`` reads it, equals the block's unsigned or signed byte sum (the field counted as 8
#: spaces). No magic: a V7 header (no ``ustar``) opens like a ustar/GNU/pax one. Repeated here
#: without importing ``tarfile`` (it imports ``shutil``): every file and every tensor storage of a
#: checkpoint is asked. tests/scan/test_review5_tar.py compares it with ``tarfile`` itself.
_BLOCK: Final = 512
_ZEROS: Final = bytes(_BLOCK)
_SIGNED: Final = struct.Struct("148b8x356b")


def _nti(field: bytes) -> int | None:
    """``tarfile.nti``: base-256 when the first byte is 0o200 or 0o377, else the text up to the
    first NUL, ASCII, stripped, read by ``int(text or "0", 8)``; None where tarfile raises."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    cut = field.find(b"\0")
    text = field if cut < 0 else field[:cut]
    try:
        return int(text.decode("ascii").strip() or "0", 8)
    except ValueError:  # UnicodeDecodeError too
        return None


def looks_like_tar(head: bytes) -> bool:
    """``head`` (at least its first 512 bytes) is a header block ``tarfile`` accepts."""
    if len(head) < _BLOCK:
        return False
    block = head[:_BLOCK]
    stored = _nti(block[148:156])
    if stored is None or block == _ZEROS:
        return False
    unsigned = 256 + sum(block) - sum(block[148:156])
    if stored == unsigned:
        return True
    signed: int = 256 + sum(_SIGNED.unpack(block))
    return stored == signed


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

#: Tried in order; the first whose reader's ``sniff`` accepts the content reads it. Specific
#: formats come before the generic pickle reader, whose protocol-0 probe is the loosest test.
_C: Final = _F + "compressed:COMPRESSED_READERS"
_PLAN: Final = "airlock._load.sources:"
FORMATS: Final[tuple[Format, ...]] = (
    Format("safetensors", _F + "safetensors:READER", _json_after_length, planner=_PLAN + "plan_safetensors"),
    Format("gguf", _F + "gguf:READER", _starts(b"GGUF"), runtime=RUNTIME_TEXT),
    Format("tf-savedmodel", _F + "savedmodel:READER", _starts(b"\x08")),  # before ONNX: both open with field 1
    # any ModelProto field may come first: protobuf parsers accept fields in any order
    Format("onnx", _F + "onnx:READER", _starts(*_ONNX_FIRST_TAGS), runtime=RUNTIME_ONNX),
    Format("keras", _F + "keras:ZIP_READER", _keras_zip),  # a cheap first-member check: a torch zip never imports Keras
    Format("keras-h5", _F + "keras:H5_READER", _hdf5),
    Format("keras-config", _F + "keras:CONFIG_READER", _json_object),
    Format(
        "zip", _F + "zip_reader:READER", _starts(b"PK\x03\x04", b"PK\x05\x06"), planner=_PLAN + "plan_zip",
        unpickled_weights=True, runtime=RUNTIME_TORCH, raw_loaded=True,
    ),
    Format("npy", _F + "npy:READER", _starts(b"\x93NUMPY"), planner=_PLAN + "plan_npy", raw_loaded=True),
    Format("gzip", _C, _starts(b"\x1f\x8b"), index=0, sequential=True, raw_loaded=True),
    Format("bz2", _C, _starts(b"BZh"), index=1, sequential=True, raw_loaded=True),
    Format("xz", _C, _starts(b"\xfd7zXZ"), index=2, sequential=True, raw_loaded=True),
    Format("lzma", _C, _starts(b"\x5d"), index=3, sequential=True, raw_loaded=True),
    Format("zlib", _C, _starts(b"\x78"), index=4, sequential=True, raw_loaded=True),
    Format("lz4/zstd", _C, _starts(b"\x04\x22\x4d\x18", b"\x28\xb5\x2f\xfd"), index=5, raw_loaded=True),
    # joblib <= 0.9's Z-file: joblib.load still opens it by its prefix and unpickles its zlib stream
    Format("joblib-zfile", _C, _starts(b"ZF"), index=6, sequential=True, raw_loaded=True),
    # any block tarfile's first header check takes (a V7 header has no magic): torch.load tries
    # tarfile.open on every non-zip file and unpickles the tar's storages member
    Format("tar", _F + "tar:READER", looks_like_tar, raw_loaded=True),
    # torch's legacy magic number pickled with protocol 2 or 3, or (4, 5) inside a FRAME
    Format(
        "torch-legacy", _F + "pickle:LEGACY_READER",
        _starts(b"\x80\x02\x8a\x0a", b"\x80\x03\x8a\x0a", b"\x80\x04\x95", b"\x80\x05\x95"),
        whole_pickle=True, planner=_PLAN + "plan_legacy", unpickled_weights=True, runtime=RUNTIME_TORCH,
    ),
    Format(
        "pickle", _F + "pickle:READER", _any, whole_pickle=True, planner=_PLAN + "plan_pickle",
        unpickled_weights=True, runtime=RUNTIME_TORCH,
    ),
)  # fmt: skip
_BY_NAME: Final = {f.name: f for f in FORMATS}
_RAW_LOADED: Final = tuple(f for f in FORMATS if f.raw_loaded)


def formats_for(head: bytes) -> Iterator[Format]:
    """The formats whose content may start with ``head``, in order (nothing imported yet)."""
    for fmt in FORMATS:
        if fmt.may_match(head):
            yield fmt


def raw_loaded(head: bytes, size: int) -> bool:
    """Whether a format with ``raw_loaded`` (a code-running loader opens it by content alone)
    recognises content starting with ``head``; only those formats' readers are imported.

    Asked for every tensor storage of a checkpoint (hundreds): only the formats that may start
    with ``head``'s first byte are tried (:func:`_raw_loaded_from`)."""
    return any(fmt.may_match(head) and fmt.reader().sniff(head, size) for fmt in _raw_loaded_from(head[:1]))


#: first byte (b"" for empty content) -> the raw-loaded formats content starting with it may be
_RAW_BY_FIRST: dict[bytes, tuple[Format, ...]] = {}


def _raw_loaded_from(first: bytes) -> tuple[Format, ...]:
    """The raw-loaded formats whose content may start with ``first``: those with a magic that
    starts with it, and every one whose ``may_match`` says nothing about its magic (tried always)."""
    found = _RAW_BY_FIRST.get(first)
    if found is None:
        found = tuple(
            fmt
            for fmt in _RAW_LOADED
            if not isinstance(fmt.may_match, _Starts)
            or any(m[:1] == first or not m for m in fmt.may_match.magic)
        )
        _RAW_BY_FIRST[first] = found
    return found


def sniff_format(head: bytes, size: int) -> Format | None:
    """The first format whose reader recognises content starting with ``head`` (at most 4 KiB) of
    a ``size``-byte input: the one sniff the scan, the loader and the sandbox share."""
    for fmt in formats_for(head):
        if fmt.reader().sniff(head, size):
            return fmt
    return None


def torch_tar_reading(fmt: Format, head: bytes) -> Format | None:
    """The tar format when ``torch.load`` would open content that ``fmt`` claimed as a tar.

    ``torch.load`` reads a file as a zip when it starts with ``PK\\x03\\x04``, else as a tar
    whenever ``tarfile`` opens it (:func:`looks_like_tar`), whatever else it is: an npy whose
    header ends inside the first tar header, a safetensors file whose tensor bytes hold the
    tar's fields. Pickle is the only other reading with no magic of its own (the engine reads
    every polyglot pickle too); every other code-running loader's formats start with a magic
    of their own, so tar is the one second reading such content needs."""
    tar = _BY_NAME["tar"]
    if fmt is tar or head.startswith(b"PK\x03\x04") or not looks_like_tar(head):
        return None
    return tar


def format_named(name: str | None) -> Format | None:
    """The record of a format by the name a report gives it (``FileReport.format`` joins the
    formats of nested content with ``+``: the first is the file's own)."""
    if not name:
        return None
    return _BY_NAME.get(name.split("+", 1)[0])


#: The suffixes of the file names whose facts the Hugging Face folder check yields (JSON configs,
#: templates, Python code): a scan of one file with another name does not import the check.
HF_FOLDER_SUFFIXES: Final = (".json", ".jinja", ".py")


def folder_checks(names: Iterable[str] | None = None) -> tuple[FolderCheck, ...]:
    """Whole-folder checks, run on every folder of a folder scan (see ``base.FolderCheck``).

    ``names``: when only these files are scanned (one file given), only the checks that yield
    facts about files of such names; the others are not imported."""
    if names is not None and not any(name.endswith(HF_FOLDER_SUFFIXES) for name in names):
        return ()
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
