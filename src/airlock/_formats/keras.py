"""Keras models: v3 ``.keras`` archives, bare Keras config JSON, and legacy HDF5 (``.h5``).

Keras rebuilds a model from a JSON config in which every object is a dict naming what to import:
``{"module": ..., "class_name": ..., "config": ..., "registered_name": ...}``. The loader imports
``module`` and takes ``class_name`` from it (``class_name == "function"`` names a function, with
its name in ``config``). That is how the published attacks work:

* CVE-2024-3660 — a ``Lambda`` layer carries marshalled Python bytecode that runs on load;
* CVE-2025-1550 — the config names any module and function (``os.system``), and Keras imports
  and calls it, even with ``safe_mode=True``; after the fix limited modules to Keras' own
  packages, Keras functions with side effects were used instead (``keras.utils.get_file``
  downloads to any path; ``keras.config.enable_unsafe_deserialization`` turns safe mode off).

So every object in the config is checked, wherever it sits (layers, activations, initializers,
losses, optimizers ...): marshalled bytecode anywhere and ``Lambda`` layers carrying it are
MALICIOUS; a name outside Keras' own packages is SUSPICIOUS (custom code the caller must
register), MALICIOUS when it is a known-dangerous callable (the shared catalogue plus the Keras
functions above). Nothing is imported, unmarshalled or called. The readers are here; the walk
of a parsed config (the names it makes Keras import, embedded files, paths) is
``keras_config.py``, and the judgement of those names is ``_analysis/keras_names.py``.

Legacy HDF5 files keep the same JSON in the ``model_config`` attribute. Reading HDF5 needs
``h5py`` (the ``model-airlock[keras-h5]`` extra) inside the sandbox (libhdf5 never parses untrusted
bytes in the scanning process); without h5py or the sandbox such files are an ERROR, never clean.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from typing import Any, Final

from airlock._formats.base import Fact, Issue, Nested, ReadContext
from airlock._formats.keras_config import analyse_config
from airlock._formats.zip import LOCAL_SIG, ZipListing, member_bytes, parse_zip
from airlock.errors import FormatError, LimitError, SandboxError
from airlock.limits import Limits
from airlock.results import Severity

__all__ = [
    "KerasConfigReader",
    "KerasH5Reader",
    "KerasZipReader",
    "analyse_config",
]  # the config walk: keras_config.py

_HDF5_MAGIC: Final = b"\x89HDF\r\n\x1a\n"
_KERAS_MEMBERS: Final = frozenset({"config.json", "metadata.json", "model.weights.h5"})
_CONFIG_HEAD: Final = re.compile(rb'^\s*\{.{0,2048}?"class_name"\s*:', re.S)


def _parse(raw: bytes | memoryview, limits: Limits, what: str) -> Any:
    if len(raw) > limits.max_header_bytes:
        raise LimitError(
            f"{what} is {len(raw)} bytes, more than {limits.max_header_bytes} (limit max_header_bytes)"
        )
    try:
        # bytes, as Keras passes them: json detects UTF-8/16/32 the same way for both of us
        return json.loads(bytes(raw))
    except RecursionError as exc:
        raise LimitError(f"{what} nests deeper than the JSON parser allows") from exc
    except ValueError as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from exc


def _config_root(config: Any, what: str) -> None:
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise FormatError(f"{what} is not a Keras object (expected a JSON object with a 'class_name' string)")


class KerasConfigReader:
    """A bare Keras config (``model.to_json()``, an unpacked ``config.json``)."""

    name = "keras-config"

    def sniff(self, head: bytes, size: int) -> bool:
        return _CONFIG_HEAD.match(head) is not None and b'"config"' in head

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        config = _parse(data, ctx.limits, "Keras config")
        _config_root(config, "Keras config")
        yield from analyse_config(config, ctx, "config")


class KerasZipReader:
    """Keras v3 ``.keras``: a zip whose first member is ``metadata.json`` or ``config.json``
    (the order Keras writes). A reordered archive is read by the generic zip reader, whose
    ``config.json`` member the :class:`KerasConfigReader` then analyses."""

    name = "keras"

    def sniff(self, head: bytes, size: int) -> bool:
        if not head.startswith(LOCAL_SIG) or len(head) < 30:
            return False
        length = int.from_bytes(head[26:28], "little")
        return head[30 : 30 + length] in (b"metadata.json", b"config.json")

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        listing = parse_zip(data, ctx.limits, ctx.check_time)
        if _foreign_config(listing, ctx.limits):
            # config.json first, valid JSON but no Keras object (a zipped Hugging Face folder):
            # not for Keras, so an ordinary zip
            from airlock._formats.zip_reader import ZipReader  # imports this module

            yield from ZipReader().read(data, ctx)
            return
        yield from listing.issues
        yield from read_keras_listing(listing, ctx)


def _foreign_config(listing: ZipListing, limits: Limits) -> bool:
    """config.json is there and parses, but is not a Keras object (a missing or broken one stays
    a Keras format error: the archive was sniffed as Keras)."""
    configs = listing.find("config.json")
    if not configs:
        return False
    try:
        config = _parse(member_bytes(listing, configs[0], limits), limits, "config.json")
    except (FormatError, LimitError):
        return False
    return not (isinstance(config, dict) and isinstance(config.get("class_name"), str))


def is_keras_listing(listing: ZipListing, limits: Limits) -> bool:
    """True when a zip is what Keras' ``load_model`` reads, whatever its member order or name:
    Keras opens the member ``config.json`` by name; it is a Keras object when its JSON (escapes
    decoded, as ``json.loads`` does) is an object with a ``class_name`` string."""
    configs = listing.find("config.json")
    if not configs:
        return False
    try:
        config = _parse(member_bytes(listing, configs[0], limits), limits, "config.json")
    except (FormatError, LimitError):
        return False
    return isinstance(config, dict) and isinstance(config.get("class_name"), str)


def read_keras_listing(listing: ZipListing, ctx: ReadContext) -> Iterator[Fact]:
    """The facts of a Keras v3 archive whose directory has been parsed (issues already given)."""
    configs = listing.find("config.json")
    if not configs:
        raise FormatError(
            "Keras archive has no config.json (expected config.json, metadata.json and weights)"
        )
    for member in configs:
        what = f"config.json (entry {member.index})" if len(configs) > 1 else "config.json"
        config = _parse(member_bytes(listing, member, ctx.limits), ctx.limits, what)
        _config_root(config, what)
        yield from analyse_config(config, ctx, what)
    for member in listing.members:
        # Weights in HDF5 are plain datasets for h5py; every other member (npz weights, which
        # Keras loads with allow_pickle=True, assets, anything extra) is scanned as a file.
        if member.name in _KERAS_MEMBERS or member.is_dir:
            continue
        yield Nested(member.name, member_bytes(listing, member, ctx.limits), member.header_offset)


def looks_like_hdf5(head: bytes) -> bool:
    """HDF5's signature at offset 0, 512, 1024 or 2048 (where the library looks within 4 KiB)."""
    return any(head[at : at + 8] == _HDF5_MAGIC for at in (0, 512, 1024, 2048))


class KerasH5Reader:
    """Legacy Keras HDF5: the JSON in the root attributes ``model_config`` / ``training_config``."""

    name = "keras-h5"

    def sniff(self, head: bytes, size: int) -> bool:
        return looks_like_hdf5(head)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        try:
            configs, keras_layout = _h5_attributes_in_sandbox(data, ctx)
        except _Unavailable as exc:
            yield Issue(
                "keras.h5-unsupported",
                Severity.ERROR,
                f"HDF5 file (legacy Keras .h5) cannot be analysed: {exc}; it cannot be proven clean",
            )
            return
        if not configs:
            if keras_layout:
                yield Issue(
                    "keras.h5-weights", Severity.INFO, "HDF5 holds Keras weights only (no model_config)"
                )
                return
            yield Issue(
                "keras.h5-unknown",
                Severity.ERROR,
                "HDF5 file holds neither a Keras model_config nor Keras weights; its contents are not "
                "analysed, so it cannot be proven clean",
            )
            return
        for key, raw in configs.items():
            config = _parse(raw, ctx.limits, f"HDF5 attribute {key}")
            if key == "model_config":
                _config_root(config, "HDF5 attribute model_config")
            yield from analyse_config(config, ctx, key)


class _Unavailable(Exception):
    """The sandboxed HDF5 reader cannot run here (extra not installed, sandbox not available)."""


def _h5_attributes_in_sandbox(data: memoryview, ctx: ReadContext) -> tuple[dict[str, bytes], bool]:
    """The root attributes Keras keeps its configs in, read by h5py inside the sandbox.

    libhdf5 (C, with a history of memory-safety bugs) never parses these bytes in this process:
    a sandboxed job reads the attributes and hands them back as bytes (``hdf5-attributes``
    runtime). The job reads an in-memory copy of exactly the bytes scanned (a memfd: nothing is
    written to disk).
    """
    if importlib.util.find_spec("h5py") is None:  # the job imports it; this process never does
        raise _Unavailable("h5py is not installed (install model-airlock[keras-h5])")
    try:
        from airlock.sandbox import SandboxLimits, SandboxPolicy, Worker
    except ImportError as exc:
        raise _Unavailable(f"{exc.name} is not installed (install model-airlock[sandbox])") from exc
    memfd = -1
    try:
        # Exactly the bytes this scan checked, as an in-memory file (nothing is written to disk).
        memfd = os.memfd_create("airlock-h5", os.MFD_CLOEXEC)
        view = memoryview(data)
        while view:
            view = view[os.write(memfd, view) :]
        path = f"/proc/self/fd/{memfd}"
        # Worker, not load_state_dict: load_state_dict scans first, and this IS the scan (its
        # reader would come back here, without end); only attributes are read, in the sandbox.
        # The job runs libhdf5 on hostile bytes: its answer is hostile too. Its frame is capped at
        # what this scan accepts (two attributes of max_header_bytes, the layout flag), not at the
        # job's memory: a 1 GiB attribute used to be received, then copied, before being refused.
        policy = SandboxPolicy(limits=SandboxLimits(max_frame_bytes=_h5_reply_cap(ctx.limits)))
        with Worker(path, runtime="hdf5-attributes", policy=policy) as worker:
            try:
                arrays = worker.state_dict()
            except SandboxError as exc:  # the sandbox ran and loaded the file: its answer is refused
                if "exceeds the cap" in str(exc):  # the frame cap derived from max_header_bytes
                    raise LimitError(
                        f"HDF5 attributes are larger than {ctx.limits.max_header_bytes} bytes each "
                        f"(limit max_header_bytes): the sandboxed reader's answer was refused: {exc}"
                    ) from exc
                raise FormatError(f"HDF5 file: the sandboxed reader's answer was refused: {exc}") from exc
    except SandboxError as exc:
        message = str(exc)
        if "does not parse" in message or "HDF5" in message or "OSError" in message:
            raise FormatError(f"HDF5 file does not parse (read in the sandbox): {message}") from exc
        raise _Unavailable(f"the sandbox that reads HDF5 is not available here: {message}") from exc
    finally:
        if memfd >= 0:
            os.close(memfd)
    return _h5_answer(arrays, ctx.limits)


#: the attributes the ``hdf5-attributes`` job hands back, and its layout flag
_H5_CONFIGS: Final = ("model_config", "training_config")
_H5_LAYOUT: Final = "keras_layout"
#: room in a reply frame for its JSON tensor table (three entries), beyond the attribute bytes
_H5_TABLE_BYTES: Final = 4096


def _h5_reply_cap(limits: Limits) -> int:
    """The frame cap of the HDF5 job's answer: both configs at this scan's ``max_header_bytes``,
    the one-byte layout flag and its tensor table; nothing larger is ever read."""
    return 2 * limits.max_header_bytes + 1 + _H5_TABLE_BYTES


def _h5_answer(arrays: dict[str, Any], limits: Limits) -> tuple[dict[str, bytes], bool]:
    """The job's answer, checked as hostile (it ran libhdf5 on the file): only the two configs as
    1-D uint8 of at most ``max_header_bytes`` (sizes checked before any copy) and the layout flag
    as uint8[1] of 0 or 1. Anything else is a :class:`FormatError` (an ERROR verdict), never an
    exception of this process (a 5000-digit byte string as the flag crashed the scan in ``int``)."""
    import numpy as np  # only when the sandbox answered: numpy is already loaded then

    from airlock.sandbox._messages import printable

    unknown = sorted(set(arrays) - {*_H5_CONFIGS, _H5_LAYOUT})
    if unknown:
        raise FormatError(
            f"HDF5 file: the sandboxed reader answered unknown entries ({printable(', '.join(unknown), 200)})"
        )
    configs: dict[str, bytes] = {}
    for key in _H5_CONFIGS:
        value = arrays.get(key)
        if value is None:
            continue
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 1:
            raise FormatError(f"HDF5 file: the sandboxed reader answered {key} that is not bytes")
        if value.nbytes > limits.max_header_bytes:
            raise LimitError(
                f"HDF5 attribute {key} is larger than {limits.max_header_bytes} bytes (limit max_header_bytes)"
            )
        configs[key] = value.tobytes()
    layout = arrays.get(_H5_LAYOUT)
    if layout is None:
        return configs, False
    if (
        not isinstance(layout, np.ndarray)
        or layout.dtype != np.uint8
        or layout.shape != (1,)
        or int(layout[0]) not in (0, 1)
    ):
        raise FormatError("HDF5 file: the sandboxed reader answered a layout flag that is not 0 or 1")
    return configs, bool(layout[0])


#: The instances the registry loads (``airlock._formats.registry.READERS``).
ZIP_READER: Final = KerasZipReader()
H5_READER: Final = KerasH5Reader()
CONFIG_READER: Final = KerasConfigReader()
