"""Every bound the readers and the pickle machine enforce, in one validated, frozen place.

A limit that is hit is an error verdict (``limit.exceeded``), never a silent truncation.
"""

from __future__ import annotations

from airlock._record import record, record_fields
from airlock._record import replace as _replace
from airlock.errors import UsageError

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["DEFAULT_LIMITS", "Limits"]

_KIB: Final = 1024
_MIB: Final = 1024 * _KIB
_GIB: Final = 1024 * _MIB
_INF: Final = float("inf")


@record
class Limits:
    """Bounds on work and memory for one scan. All fields must be positive.

    A frozen record (``airlock._record``: a dataclass to ``dataclasses``, without importing it at
    start-up); :meth:`replace` changes limits by name."""

    #: opcodes the pickle machine decodes in one pickle stream (padding attacks use millions)
    max_pickle_opcodes: int = 20_000_000
    #: entries in one pickle's memo
    max_memo_entries: int = 5_000_000
    #: items on the pickle stack and metastack together
    max_stack_items: int = 5_000_000
    #: pickles read back to back from one stream
    max_pickles_per_stream: int = 64
    #: depth of pickles hidden inside pickles (pickle.loads of a constant, base64 or not)
    max_nested_pickle_depth: int = 8
    #: depth of containers inside containers (zip in tar in zip ...)
    max_archive_depth: int = 5
    #: members in one archive
    max_archive_members: int = 200_000
    #: bytes one compressed member, stream or file may expand to in memory
    max_decompressed_bytes: int = 1 * _GIB
    #: total bytes all decompressed members of one top-level file may expand to
    max_total_decompressed_bytes: int = 4 * _GIB
    #: ratio of expanded to compressed size above which a member is treated as a bomb ...
    max_compression_ratio: int = 1000
    #: ... once it expands past this many bytes (small, very compressible members such as arrays of
    #: zeros are ordinary; bombs are large)
    compression_ratio_floor: int = 64 * _MIB
    #: seconds of analysis for one top-level file before it is abandoned with an error verdict
    max_seconds_per_file: float = 120.0
    #: findings kept per file (more are counted, not listed)
    max_findings_per_file: int = 500
    #: header bytes a format may declare (safetensors JSON, npy dict, ...)
    max_header_bytes: int = 100 * _MIB
    #: bytes of one Jinja template (chat templates are tens of kB); parsed, never rendered
    max_template_bytes: int = 1 * _MIB
    #: arrays nested inside arrays in GGUF metadata
    max_gguf_array_depth: int = 8
    #: files visited when scanning a folder
    max_files: int = 1_000_000
    #: nesting of protobuf messages (ONNX graphs in attributes, TensorFlow functions); protobuf's own default
    max_protobuf_depth: int = 100

    def __post_init__(self) -> None:
        for name in record_fields(self):
            value = getattr(self, name)
            # not NaN (every comparison with it is False: the limit would never fire) nor infinity
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < _INF:
                raise UsageError(f"limit {name} must be a positive finite number, got {value!r}")

    def replace(self, **changes: int | float) -> Limits:
        """A copy with some limits changed; unknown names are a :class:`UsageError`."""
        known = set(record_fields(self))
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(f"unknown limit(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return _replace(self, **changes)


DEFAULT_LIMITS: Final = Limits()
