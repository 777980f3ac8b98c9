"""Strict JSON, the one parser for every JSON document airlock reads from untrusted hands.

Strict means: UTF-8 (no lone surrogates, even escaped), no duplicate keys (two parsers would disagree on which value wins), no
NaN/Infinity, no integer ``-0`` (Python reads 0, serde_json the float -0.0, so a Rust loader that
wants an unsigned integer refuses what Python accepts), and deep nesting reported rather than crashing. Every failure is a
:class:`~airlock.errors.FormatError` naming the document; callers at a wire boundary (the
sandbox channel, the gateway) re-raise it as their own error type.
"""

from __future__ import annotations

import json
import re

from airlock.errors import FormatError

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (annotations only): every safetensors
#: header and config is read through here
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["parse_json_strict"]


_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


class _Rejected(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Rejected(f"duplicate JSON key {_show(key)} (parsers disagree on which value wins)")
        out[key] = value
    return out


def _integer(text: str) -> int:
    if text == "-0":
        raise _Rejected("integer -0 (Python reads 0, serde_json the float -0.0)")
    return int(text)


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"JSON constant {name} is not allowed")


def _show(name: str, limit: int = 80) -> str:
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 3] + "...'"


#: one decoder for every document (json.loads with hooks builds a new one per call); it keeps no
#: state between documents
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_int=_integer
)


def parse_json_strict(raw: bytes | bytearray | memoryview | str, what: str, offset: int = 0) -> Any:
    """Parse ``raw`` strictly; raise :class:`FormatError` naming ``what`` on any failure."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(
                f"{what} is not valid UTF-8 at byte {exc.start}", offset=offset + exc.start
            ) from exc
    try:
        value = _DECODER.decode(text)
    except _Rejected as exc:
        raise FormatError(f"{what} has {exc}", offset=offset) from exc
    except json.JSONDecodeError as exc:
        raise FormatError(f"{what} is not valid JSON: {exc.msg} at char {exc.pos}", offset=offset) from exc
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{what} is not valid JSON: {type(exc).__name__}: {exc}", offset=offset) from exc
    if _SURROGATE_ESCAPE.search(text) is None:
        return value
    try:
        # json accepts "\ud800" escapes; strict parsers (serde) and UTF-8 output do not.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError) as exc:
        raise FormatError(f"{what} holds an invalid unicode escape (lone surrogate)", offset=offset) from exc
    return value
