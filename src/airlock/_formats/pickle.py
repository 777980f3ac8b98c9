"""Raw pickle streams (protocols 0-5, back to back) and the PyTorch legacy format.

Sniffing is by content: a PROTO opcode, or a run of opcodes that decodes cleanly (protocol 0/1
text pickles have no header). The torch legacy format is a pickle stream whose first pickle is
torch's magic number; it holds five pickles (magic, protocol, sys info, main object, storage
keys) followed by raw storage bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from airlock._formats.base import Fact, PickleStream, ReadContext
from airlock._formats.pickle_ops import decode_op
from airlock.errors import FormatError

__all__ = ["LEGACY_MAGIC", "PickleReader", "TorchLegacyReader", "is_legacy_magic", "looks_like_pickle"]

#: ``pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)``: torch's legacy magic number.
LEGACY_MAGIC: Final = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
#: the magic number's LONG1 opcode and STOP, as every protocol from 2 on writes them
_LEGACY_MAGIC_BODY: Final = LEGACY_MAGIC[2:]
_PROBE_OPS: Final = 32


def is_legacy_magic(head: bytes) -> bool:
    """True when ``head`` starts with torch's legacy magic number pickled with protocol 2 to 5
    (``torch.save(..., pickle_protocol=N, _use_new_zipfile_serialization=False)``; protocols 4
    and 5 put it in a FRAME)."""
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    body = head[2:]
    if head[1] >= 4 and body[:1] == b"\x95":
        body = body[9:]
    return body.startswith(_LEGACY_MAGIC_BODY)


# Opcodes a protocol 0/1 pickle can start with (no PROTO header).
_TEXT_START: Final = frozenset(b"(cSVIJKLFGNX}])UTBCqpgh")


def looks_like_pickle(head: bytes) -> bool:
    """True when ``head`` starts with a PROTO opcode, or decodes as pickle opcodes up to STOP
    or for a good stretch (protocol 0/1 pickles have no magic number)."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if not head or head[0] not in _TEXT_START:
        return False
    view = memoryview(head)
    pos = 0
    ops = 0
    first = -1
    try:
        while pos < len(view) and ops < _PROBE_OPS:
            code, arg, pos = decode_op(view, pos)
            if ops == 0:
                first = code
                # GLOBAL / INST naming an importable-looking module and name: a pickle, whatever follows.
                if code in (0x63, 0x69) and isinstance(arg, tuple) and all(_dotted(a) for a in arg):
                    return True
            ops += 1
            if code == 0x2E:  # STOP
                return ops >= 2
    except FormatError:
        # Ran off the end of the head after several good opcodes: still a pickle.
        return ops >= 4 and pos >= len(view) - 512
    return ops >= _PROBE_OPS and first != -1


def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


class PickleReader:
    name = "pickle"

    def sniff(self, head: bytes, size: int) -> bool:
        return looks_like_pickle(head)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        yield PickleStream(data, 0, "pickle")


class TorchLegacyReader:
    name = "torch-legacy"

    def sniff(self, head: bytes, size: int) -> bool:
        return is_legacy_magic(head)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        yield PickleStream(data, 0, "torch legacy", max_pickles=5, trailing_ok=True)


#: The instances the registry loads (``airlock._formats.registry.READERS``).
LEGACY_READER: Final = TorchLegacyReader()
READER: Final = PickleReader()
