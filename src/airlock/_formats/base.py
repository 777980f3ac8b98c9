"""The reader interface every format implements.

A reader gets the bytes of one file or archive member (a read-only ``memoryview``, usually over an
``mmap`` so untouched regions are never read) and yields *facts*:

* :class:`PickleStream` — bytes that some loader unpickles; the engine hands them to the pickle
  machine and the policy.
* :class:`Nested` — an embedded file (archive member, decompressed stream); the engine sniffs it by
  content and scans it with whatever reader fits, up to ``Limits.max_archive_depth``.
* :class:`Template` — a Jinja template found in model metadata, analysed without rendering.
* :class:`GraphOp` — an operation a TensorFlow or ONNX graph runs ("node N is a ReadFile op",
  "node N runs operator D::O"), or an ONNX operator the model defines itself.
* :class:`PythonSource` — a Python file the loader imports, for the analysis to parse.
* :class:`CodeReference` — a name the loader will import or look up ("this Keras config names
  class X of module M"); the analysis decides whether it is allowed, unknown or dangerous.
* :class:`Issue` — a structural fact the reader itself establishes (a zip-parser differential, a
  header that lies about sizes, executable code in the archive).

Readers never judge names against allowlists or the catalogue: that is the analysis layer's work
(``_analysis``, ``airlock.policy``), which this package never imports (tests/test_architecture.py).

Facts are immutable named tuples (cheap to define: the scanner's start-up time matters).
Readers raise :class:`~airlock.errors.FormatError` (or ``LimitError``) when the bytes do not parse;
facts yielded before the error are kept, so a payload followed by a broken tail is still reported.
Every size and offset read from the input is checked against ``len(data)`` before it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from airlock.limits import Limits
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple, Protocol
else:
    from airlock._record import NamedTuple

    Protocol = object  # an interface for type checkers; a plain base class at run time

__all__ = [
    "CodeReference",
    "Fact",
    "FolderCheck",
    "FolderFact",
    "GraphOp",
    "Issue",
    "Nested",
    "PickleStream",
    "PythonSource",
    "ReadContext",
    "Reader",
    "Template",
]


class PickleStream(NamedTuple):
    """Bytes a loader unpickles, starting at ``offset`` of the reader's data.

    Every pickle that follows back to back is analysed too (a loader may call ``load`` again),
    up to ``max_pickles`` when the format says how many there are (torch legacy: five, then raw
    storage bytes, which ``trailing_ok`` accepts). Other bytes after the last pickle are a
    finding. ``lenient``: the bytes may legitimately not be a pickle at all (a torch storage
    member that merely starts like one), so a parse failure is not an error — but anything
    dangerous decoded before the failure is still reported.
    """

    data: memoryview
    offset: int
    role: str
    #: the archive member these bytes are, when they are one (shown in the finding's location)
    member: str | None = None
    max_pickles: int | None = None
    trailing_ok: bool = False
    lenient: bool = False


class Nested(NamedTuple):
    """An embedded file to sniff and scan. ``name`` becomes one step of the finding's location.

    ``raw``: bytes that may legitimately be no file at all (a torch storage) but start like a
    format another loader opens by its magic (joblib's compressors, ``numpy.load``'s npy/zip,
    ``torch.load``'s zip): scanned as that file, every finding reported except that its bytes do
    not parse as the format (``format.*``: raw tensor bytes)."""

    name: str
    data: memoryview | bytes
    offset: int = 0
    raw: bool = False


class Template(NamedTuple):
    """A Jinja template from model metadata (GGUF ``tokenizer.chat_template``, a Hugging Face
    ``chat_template``, a ``.jinja`` file), judged by the template analysis, never rendered.
    ``offset``: where the template starts in the reader's data, None when it has no one place
    (a value inside parsed JSON)."""

    name: str
    text: str
    offset: int | None = 0


class PythonSource(NamedTuple):
    """A Python file a loader imports and runs (``trust_remote_code`` modeling code), as bytes;
    the analysis parses it with ``ast`` (never compiles or runs it) for what it calls when imported."""

    name: str
    source: bytes


class CodeReference(NamedTuple):
    """A name a loader imports or looks up while loading, as the artifact spells it.

    ``ecosystem`` says whose loader (``keras``, ``hf``); ``kind`` what is named and how the
    loader gets it (Keras: ``class``, ``function``, ``type spec``, ``registered name``; Hugging
    Face: ``remote code``, imported from the repository by ``trust_remote_code``, or the loader
    that imports the module by name unless the folder ships its file, see
    ``_formats/hf_code_refs.py``); ``module`` the module named with it (None when the loader
    resolves ``name`` by itself); ``where`` the place in the artifact, for the message.
    ``shipped``: the file in the folder the loader would run for this name, when it is there;
    ``repo``: another repository the loader would fetch the module from."""

    ecosystem: str
    kind: str
    module: str | None
    name: str
    where: str
    shipped: str | None = None
    repo: str | None = None


class GraphOp(NamedTuple):
    """An operation a graph runs: node ``node`` in ``where`` is an ``op`` op.
    ``calls_function``: the op is named after a function of the model's own library (a call of
    it); ``output_stream``: TensorFlow ``PrintV2``'s output stream attribute, when the op has one.
    ``ecosystem``: ``"tf"`` or ``"onnx"``; an ONNX op also has its operator ``domain``, and
    ``defines`` is set (to its number of nodes) when the fact is the model *defining* operator
    ``domain::op`` itself (a model-local ``FunctionProto``) rather than a node running it."""

    op: str
    node: str
    where: str
    offset: int
    calls_function: bool = False
    output_stream: str | None = None
    ecosystem: str = "tf"
    domain: str = ""
    defines: int | None = None


class Issue(NamedTuple):
    """A structural finding established by the reader."""

    rule: str
    severity: Severity
    message: str
    offset: int | None = None
    callable: str | None = None
    evidence: str | None = None


Fact = PickleStream | Nested | Template | CodeReference | GraphOp | Issue
#: what a folder check finds in one file of the folder
FolderFact = Issue | Template | PythonSource | CodeReference


def _no_time_limit() -> None:
    return None


class ReadContext(NamedTuple):
    """What a reader may know about where its bytes come from."""

    limits: Limits
    #: the file on disk being scanned (for nested members: the outermost file)
    file_path: Path
    #: the directory the scan started from (a folder scan) or the file's parent
    root: Path
    #: archive members and embedded streams between the file and these bytes, outermost first
    members: tuple[str, ...] = ()
    #: True when the bytes are the whole file on disk (not an archive member)
    on_disk: bool = True
    #: raises LimitError when the per-file time budget is spent; readers call it in long loops
    check_time: Callable[[], None] = _no_time_limit
    #: in a verified scan (folder checks only): ``read_verified(name, limit)`` gives the verified
    #: bytes of the file named ``name`` (at most ``limit``; FormatError when it is larger), None
    #: when verification accepted that name unchecked (``--unsafe-ignore``/``--unsafe-allow-extra``:
    #: read it from disk), and raises IntegrityError when the name is not the verified file
    read_verified: Callable[[Path, int], bytes | None] | None = None


def read_folder_file(name: Path, ctx: ReadContext, target: Path | None = None) -> bytes:
    """The bytes of the file a folder check meets as ``name`` (at most ``max_header_bytes``).

    Every content read of a folder check goes through here. In a verified scan they are the
    verified bytes (``ctx.read_verified``: a sealed copy hashed again, never the disk's bytes of
    the moment); otherwise ``target`` (what a link ``name`` resolves to; ``name`` itself when
    None) is opened without following links and must be a regular file. FormatError when it is
    not a regular file or too large; IntegrityError when it is not the verified file."""
    limit = ctx.limits.max_header_bytes
    if ctx.read_verified is not None:
        verified = ctx.read_verified(name, limit)
        if verified is not None:
            return verified
    import os
    import stat

    from airlock.errors import FormatError

    # O_NONBLOCK: a file swapped for a FIFO since the folder was listed must not block the open
    fd = os.open(target or name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError("not a regular file")
        if st.st_size > limit:
            raise FormatError(f"{st.st_size} bytes exceeds limit max_header_bytes {limit}")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(limit + 1)
    finally:
        os.close(fd)


class Reader(Protocol):
    """One format. Registered in :data:`airlock._formats.registry.READERS`, tried in order."""

    @property
    def name(self) -> str:
        """Short, stable format name shown in reports (``pickle``, ``torch-zip``, ``npy`` ...)."""
        ...

    def sniff(self, head: bytes, size: int) -> bool:
        """True when ``head`` (the first bytes, at most 4 KiB) of a ``size``-byte input is this format."""
        ...

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        """Yield facts about ``data``; raise FormatError when it does not parse."""
        ...


class FolderCheck(Protocol):
    """A check on a whole directory (Hugging Face layout, TensorFlow SavedModel ...).

    Yields ``(relative path, fact)`` pairs, the facts being an :class:`Issue`, a
    :class:`Template`, a :class:`PythonSource` or a :class:`CodeReference` found in that file; the scan judges them and attaches the findings to that
    file's report (or to the folder itself when the path is ``.``).

    A check reads a file's content only with :func:`read_folder_file` (so that a verified scan
    judges the verified bytes, not what lies on disk when the check runs).
    """

    @property
    def name(self) -> str: ...

    def check(self, folder: Path, ctx: ReadContext) -> Iterator[tuple[str, FolderFact]]: ...
