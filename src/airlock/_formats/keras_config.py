"""Keras config analysis: every object a Keras config names, and what its strings carry.

Keras rebuilds a model from a JSON config in which every object is a dict naming what to import
(``module``, ``class_name``, ``registered_name``). This module walks a parsed config (from a
``.keras`` archive, a bare config JSON or a legacy HDF5 attribute, read by ``keras.py``) and yields
findings: Lambda bytecode and marshalled code (MALICIOUS), names outside Keras' packages
(``keras.custom-object``, SUSPICIOUS), catalogued or side-effecting names (``keras.unsafe-module``,
MALICIOUS), host paths and URLs (``keras.path``), and files embedded as base64/hex, which are
yielded as :class:`~airlock._formats.base.Nested` so the engine scans them. Nothing is imported,
unmarshalled, decoded into objects or called.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterator
from typing import Any, Final

from airlock._formats.base import CodeReference, Issue, Nested, PickleStream, ReadContext
from airlock.errors import FormatError
from airlock.results import Severity

__all__ = ["KERAS_PACKAGES", "analyse_config"]

#: Top-level packages whose objects Keras itself ships (the packages Keras >= 3.9 imports in
#: safe mode, plus tf_keras, the Keras 2 line): which ``Lambda`` is Keras' own. Names inside them
#: are judged by the analysis (``_analysis/keras_names.py``) like every other name.
KERAS_PACKAGES: Final = frozenset({"keras", "keras_hub", "keras_nlp", "keras_cv", "tf_keras"})

#: Keras' own data markers (tensors, arrays, bytes, slices): values, not code.
_DATA_CLASSES: Final = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)
#: tf_keras' JSON markers (``saving/legacy/saved_model/json_utils.py::_decode_helper``): values its
#: decoder builds without importing anything (a registered TypeSpec is looked up, never imported),
#: data when they name no ``module`` (with one, Keras 3 would import it: judged as a class)
_TF_KERAS_DATA: Final = frozenset({"TensorShape", "TypeSpec", "CompositeTensor", "__tuple__"})
_SHOW: Final = 120
_B64_PROBE: Final = 24
#: bytes of one base64 bytecode string decoded to list the names in it
_MAX_EVIDENCE_DECODE: Final = 64 * 1024
_PRINTABLE: Final = re.compile(rb"[\x20-\x7e]+")
#: marshal string type codes: one-byte length (short ASCII, interned or not), four-byte length
_SHORT_STRINGS: Final = frozenset(b"zZ")
_LONG_STRINGS: Final = frozenset(b"aAut")


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


def _marshal_code(text: str) -> bool:
    """True when ``text`` is base64 of a marshalled code object (what ``func_dump`` writes):
    type byte ``c`` (with or without the ref flag) and small argument counts after it."""
    if len(text) < _B64_PROBE:
        return False
    try:
        raw = base64.b64decode(text[:_B64_PROBE], validate=True)
    except (binascii.Error, ValueError):
        return False
    if raw[0] not in (0x63, 0xE3):
        return False
    counts = [int.from_bytes(raw[i : i + 4], "little") for i in (1, 5, 9)]
    return all(c < 256 for c in counts)


def _bytecode_names(text: str) -> str:
    """The printable strings inside marshalled bytecode (names, constants): what it would do."""
    try:
        raw = base64.b64decode(text[: _MAX_EVIDENCE_DECODE * 4 // 3], validate=False)
    except (binascii.Error, ValueError):
        return ""
    words: list[str] = []
    i = 0
    while i < len(raw) - 1:
        kind = raw[i] & 0x7F  # without marshal's ref flag
        if kind in _SHORT_STRINGS:
            n, start = raw[i + 1], i + 2
        elif kind in _LONG_STRINGS and i + 5 <= len(raw):
            n, start = int.from_bytes(raw[i + 1 : i + 5], "little"), i + 5
        else:
            i += 1
            continue
        word = raw[start : start + n]
        if n >= 2 and len(word) == n and _PRINTABLE.fullmatch(word):
            words.append(word.decode("ascii"))
            i = start + n
        else:
            i += 1
    return _show(", ".join(dict.fromkeys(words)))


def _bytecode(where: str, text: str, rule: str, what: str) -> Issue:
    names = _bytecode_names(text)
    return Issue(
        rule,
        Severity.MALICIOUS,
        f"{what} at {where} carries marshalled Python bytecode ({len(text)} base64 characters"
        f"{'; names in it: ' + names if names else ''}) that runs when the model loads "
        f"(expected no serialized Python code)",
        evidence=names or _show(text),
    )


#: Keras' own classes whose ``from_config`` decodes a config string and hands the bytes to a
#: loader: class name -> (config key, loader). The bytes are analysed as that loader reads them,
#: whatever they start with (a magic-number guess would miss a pickle that ``torch.load`` still
#: runs: ``torch.load`` on bytes that are not a zip unpickles them from the first byte).
_DECODE_SITES: Final[dict[str, tuple[str, str]]] = {
    # keras/src/utils/torch_utils.py: torch.load(BytesIO(base64.b64decode(module)), weights_only=False)
    "TorchModuleWrapper": ("module", "torch.load"),
}


def _decode_site(
    value: dict[str, Any], class_name: str, where: str
) -> Iterator[Issue | Nested | PickleStream | CodeReference]:
    """What the loader of a :data:`_DECODE_SITES` class reads from its config."""
    key, loader = _DECODE_SITES[class_name]
    inner = value.get("config")
    text = inner.get(key) if isinstance(inner, dict) else None
    if not isinstance(text, str):
        return
    raw = b""
    # base64.b64decode(text.encode("ascii")): non-strict, characters outside the alphabet dropped;
    # where it fails, Keras' own decoding fails the same way and torch.load never sees the bytes
    with contextlib.suppress(UnicodeEncodeError, binascii.Error, ValueError):
        raw = binascii.a2b_base64(text.encode("ascii"), strict_mode=False)
    label = f"{where}.{key} (base64)"
    if raw.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        yield Nested(label, raw)  # torch.save's zip: the torch reader
    elif raw:
        # torch's legacy format: pickle.load from byte 0, up to five pickles, then raw storages
        yield PickleStream(memoryview(raw), 0, f"{loader} of a config string", member=label,
                           max_pickles=5, trailing_ok=True)  # fmt: skip
    other = _embedded(text)  # another reading (hex) that other code could decode
    if other is not None and other[1] != raw:
        yield Nested(f"{where}.{key} ({other[0]})", other[1])


def analyse_config(
    root: Any, ctx: ReadContext, label: str
) -> Iterator[Issue | Nested | PickleStream | CodeReference]:
    """Findings for a parsed Keras config (any JSON value), walked iteratively.

    Besides the objects it names: bytes embedded as base64 or hex that decode to a pickle, a zip,
    marshal data or another known container are yielded as :class:`Nested` files (Keras 3's
    ``TorchModuleWrapper`` keeps a whole ``torch.save`` archive in its config and ``torch.load``s
    it with ``weights_only=False``); strings that are host paths or URLs are ``keras.path``."""
    stack: list[tuple[Any, str]] = [(root, label)]
    visited = 0
    while stack:
        value, where = stack.pop()
        visited += 1
        if visited % 4096 == 0:
            ctx.check_time()
        if isinstance(value, str):
            if _marshal_code(value):
                yield _bytecode(where, value, "keras.serialized-function", "a string")
                continue
            embedded = _embedded(value)
            if embedded is not None:
                kind, raw = embedded
                yield Nested(f"{where} ({kind})", raw)
            elif len(value) <= _MAX_PATH and _PATH.search(value):
                yield _path_issue(where, value)
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            class_name = value.get("class_name")
            children = value
            if isinstance(class_name, str):
                inner = value.get("config")
                name = inner.get("name") if isinstance(inner, dict) else None
                where = f"{where} ({_show(class_name)}" + (
                    f" {_show(name)!r})" if isinstance(name, str) else ")"
                )
                found = list(_check_object(value, class_name, where))
                yield from found
                if class_name in _DECODE_SITES and isinstance(inner, dict):
                    yield from _decode_site(value, class_name, where)
                    site_key = _DECODE_SITES[class_name][0]
                    children = {**value, "config": {k: v for k, v in inner.items() if k != site_key}}
                if isinstance(inner, dict) and any(
                    isinstance(i, Issue) and i.rule == "keras.lambda" and i.severity is Severity.MALICIOUS
                    for i in found
                ):
                    # the Lambda's bytecode is reported once, as the Lambda
                    children = {**value, "config": {k: v for k, v in inner.items() if k != "function"}}
            for key, item in reversed(list(children.items())):
                if key != "class_name":
                    stack.append((item, f"{where}.{_show(str(key))}"))


#: the start of decoded bytes that some loader reads as a file: zip (torch.save, .keras, npz),
#: gzip (deflate), bzip2, xz, NumPy, HDF5, GGUF
_MAGICS: Final = (
    b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08", b"\xfd7zXZ\x00", b"\x93NUMPY", b"\x89HDF\r\n", b"GGUF",
    *(b"BZh" + bytes([c]) for c in b"123456789"),
)  # fmt: skip
#: opcodes a pickle's first object starts with (after PROTO, or a container opcode): with them a
#: random decoding of an ordinary string is very unlikely to look like a pickle
_PICKLE_SECOND: Final = frozenset(b"\x95c\x93\x8c()]}NKJM\x8aXUTCBG\x88\x89Vq\x94ldtILSFpgio")
#: protocol 0/1 pickles: a GLOBAL line (``cos\nsystem\n``), or a container opcode ending in STOP
_PICKLE_GLOBAL: Final = re.compile(rb"^c[\w.]{1,200}\n[\w.]{1,200}\n")
_PICKLE_START: Final = frozenset(b"(]})")
_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")
_HEX_TEXT: Final = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_MIN_EMBEDDED: Final = 16
#: strings that name a file or a location outside the model: absolute paths, home, traversal, URLs
_PATH: Final = re.compile(r"^(?:/|~|[A-Za-z]:[\\/]|\\\\|\.\.[\\/]|[A-Za-z][\w+.-]*://)|[\\/]\.\.(?:[\\/]|$)")
_MAX_PATH: Final = 4096
#: config keys whose string value Keras or TensorFlow opens as a file (vocabularies, downloads)
_FILE_KEYS: Final = frozenset(
    "vocabulary vocabulary_file vocab_file idf_weights filepath file_path path fname origin cache_dir "
    "cache_subdir log_dir table_file merges".split()
)


def _embedded(text: str) -> tuple[str, bytes] | None:
    """``(kind, bytes)`` when ``text`` is base64 or hex of a file some loader reads."""
    if len(text) < _MIN_EMBEDDED:
        return None
    if _HEX_TEXT.match(text):
        readings = [("hex", bytes.fromhex(text))]
    else:
        try:
            data = text.encode("ascii")  # what Keras does first; non-ASCII never decodes
        except UnicodeEncodeError:
            return None
        readings = []
        # binascii's non-strict decoding is base64.b64decode's (Keras' TorchModuleWrapper):
        # characters outside the alphabet are dropped, so they cannot hide a payload; a string
        # with '-'/'_' is also read as URL-safe base64 (every reading is checked)
        variants = [data, data.translate(_URLSAFE)] if (b"-" in data or b"_" in data) else [data]
        for variant in variants:
            try:
                readings.append(("base64", binascii.a2b_base64(variant, strict_mode=False)))
            except (binascii.Error, ValueError):
                continue
    for kind, raw in readings:
        if len(raw) < 8:
            continue
        if raw.startswith(_MAGICS) or (raw[:1] in (b"\xe3", b"\x63") and _marshal_raw(raw)):
            return kind, raw
        if raw[0] == 0x80 and 2 <= raw[1] <= 5 and raw[2] in _PICKLE_SECOND:  # PROTO 2-5
            return kind, raw
        if _PICKLE_GLOBAL.match(raw) or (
            raw[0] in _PICKLE_START and raw[1] in _PICKLE_SECOND and raw.endswith(b".")
        ):
            return kind, raw
    return None


def _marshal_raw(raw: bytes) -> bool:
    counts = [int.from_bytes(raw[i : i + 4], "little") for i in (1, 5, 9)]
    return len(raw) >= 13 and all(c < 256 for c in counts)


def _path_issue(where: str, value: str) -> Issue:
    key = where.rsplit(".", 1)[-1].split(" ", 1)[0]
    opened = key in _FILE_KEYS
    return Issue(
        "keras.path",
        Severity.MALICIOUS if opened else Severity.SUSPICIOUS,
        f"config value at {where} names {_show(value)!r}, a location outside the model"
        + (
            f"; Keras opens '{key}' values as files while loading (reads or downloads host data)"
            if opened
            else " (expected no host paths or URLs in a model config)"
        ),
        callable=_show(value),
        evidence=_show(value),
    )


def _check_object(obj: dict[str, Any], class_name: str, where: str) -> Iterator[Issue | CodeReference]:
    inner = obj.get("config")
    module = obj.get("module")
    registered = obj.get("registered_name")
    if class_name == "__lambda__":
        code = inner.get("code", "") if isinstance(inner, dict) else ""
        yield _bytecode(
            where, code if isinstance(code, str) else "", "keras.serialized-function", "a __lambda__ object"
        )
        return
    if class_name in _DATA_CLASSES or (class_name in _TF_KERAS_DATA and "module" not in obj):
        return
    if class_name == "Lambda" and (module is None or _package(module) in KERAS_PACKAGES):
        yield from _lambda(inner, where)
    if module is not None and not isinstance(module, str):
        raise FormatError(f"'module' at {where} is {type(module).__name__} (expected a string or null)")
    if class_name == "__typespec__":
        spec = obj.get("spec_name")
        yield CodeReference("keras", "type spec", module, spec if isinstance(spec, str) else "", where)
    elif class_name == "function":
        yield CodeReference("keras", "function", module, inner if isinstance(inner, str) else "", where)
    else:
        yield CodeReference("keras", "class", module, class_name, where)
    if isinstance(registered, str) and registered not in (class_name, inner):
        package, _, registered_class = registered.partition(">")
        same = (
            isinstance(module, str)
            and registered_class == class_name
            and (module == package or module.startswith(f"{package}."))
        )
        if not same:  # "pkg>Cls" for module "pkg.x", class "Cls": the class check covers it
            yield CodeReference("keras", "registered name", None, registered, where)


def _lambda(inner: object, where: str) -> Iterator[Issue]:
    function = inner.get("function") if isinstance(inner, dict) else None
    legacy = inner.get("function_type") if isinstance(inner, dict) else None
    code: str | None = None
    if isinstance(function, dict) and function.get("class_name") == "__lambda__":
        raw = function.get("config", {}).get("code") if isinstance(function.get("config"), dict) else None
        code = raw if isinstance(raw, str) else ""
    elif legacy == "lambda" or (isinstance(function, list) and function and isinstance(function[0], str)):
        first = function[0] if isinstance(function, list) and function else function
        code = first if isinstance(first, str) else ""
    elif isinstance(function, str) and _marshal_code(function):
        code = function
    if code is not None:
        yield _bytecode(where, code, "keras.lambda", "Lambda layer (CVE-2024-3660)")
        return
    target = function.get("config") if isinstance(function, dict) else function
    yield Issue(
        "keras.lambda",
        Severity.SUSPICIOUS,
        f"Lambda layer at {where} calls {_show(str(target))!r}: arbitrary Python runs in the model "
        f"(expected built-in layers only)",
        callable=_show(str(target)),
    )


def _package(module: object) -> str:
    return module.split(".", 1)[0] if isinstance(module, str) else ""
