"""ONNX models (``ModelProto``), read with airlock's own protobuf reader.

An ONNX file runs no Python, but loading it can still hurt:

* **external data** (checked on the file system by ``onnx_external.py``) — a tensor whose
  ``data_location`` is EXTERNAL names a file (``location``) the loader opens and reads at
  ``offset``/``length``. CVE-2022-25882 (``..``), CVE-2024-27318
  (the bypass of its fix) and later reports (absolute paths, symlinks and hard links to files
  outside the folder) made loaders read arbitrary files into tensors. Every location must be a
  plain relative path that stays inside the model's folder after resolving links; on disk the
  target is checked with ``lstat``/``realpath``: a symlink out, a hard link whose other names lie
  outside, a missing file and an offset/length past its end are findings. Inside an archive the
  file system cannot be checked, so external data there is reported as unverifiable.
* **custom operators** — every operator a node runs is yielded as a ``GraphOp`` fact (once per
  ``domain::op_type``); which domains the runtimes implement themselves, and so which ones name
  code from a custom-op library, is the analysis' decision (``_analysis/onnx_ops.py``).
* **model-local functions** (``FunctionProto``) redefine what an operator name means; each is
  yielded as a ``GraphOp`` fact with ``defines`` set, and its body is walked like a graph.

Graphs nested in attributes (``If``/``Loop``/``Scan`` bodies), training graphs, sparse tensors
and function bodies are all walked; nesting is bounded by ``Limits.max_protobuf_depth``.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from airlock._formats import protobuf as pb
from airlock._formats.base import Fact, GraphOp, Issue, ReadContext
from airlock._formats.onnx_external import external_data, location_problem
from airlock.errors import FormatError
from airlock.results import Severity

__all__ = ["OnnxReader", "location_problem", "looks_like_onnx"]

#: ModelProto fields and their wire types (onnx.proto): what the sniff accepts at the top level.
_MODEL_FIELDS: Final = {
    1: pb.VARINT,  # ir_version
    2: pb.LEN,  # producer_name
    3: pb.LEN,  # producer_version
    4: pb.LEN,  # domain
    5: pb.VARINT,  # model_version
    6: pb.LEN,  # doc_string
    7: pb.LEN,  # graph
    8: pb.LEN,  # opset_import
    14: pb.LEN,  # metadata_props
    20: pb.LEN,  # training_info
    25: pb.LEN,  # functions
    26: pb.LEN,  # configuration
}
_MAX_IR_VERSION: Final = 64
_EXTERNAL: Final = 1
_KNOWN_LOCATIONS: Final = (0, _EXTERNAL)
#: names kept in messages are cut to this many characters
_SHOW: Final = 200


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


@dataclass
class _State:
    """What one read accumulates: reported names (each reported once), caches per location."""

    ctx: ReadContext
    functions: frozenset[tuple[str, str]]
    reported: set[tuple[str, str]] = field(default_factory=set)
    #: location -> (resolved file, size) when it passed the file-system checks, else None
    files: dict[str, tuple[Path, int] | None] = field(default_factory=dict)

    def once(self, rule: str, key: str) -> bool:
        if (rule, key) in self.reported:
            return False
        self.reported.add((rule, key))
        return True


class OnnxReader:
    name = "onnx"

    def sniff(self, head: bytes, size: int) -> bool:
        return looks_like_onnx(head, size)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        size = len(data)
        functions: set[tuple[str, str]] = set()
        present: set[int] = set()
        for f in pb.iter_fields(data, 0, size):
            present.add(f.number)
            if f.number == 25:
                functions.add(_function_key(data, f))
        # Protobuf has no end marker: a file cut at a field boundary still parses. ONNX requires
        # ir_version, a graph and opset_import (serialised last of the three), so a cut that
        # drops any of them is caught here.
        for number, what in ((1, "ir_version"), (7, "graph"), (8, "opset_import")):
            if number not in present:
                raise FormatError(
                    f"ModelProto has no {what} (field {number}); every ONNX model needs one (file truncated?)",
                    offset=size,
                )
        state = _State(ctx, frozenset(functions))
        for f in pb.iter_fields(data, 0, size):
            ctx.check_time()
            if f.number == 7:
                yield from _graph(data, _message(f, "graph"), state, 1, "graph")
            elif f.number == 20:
                yield from _training_info(data, _message(f, "training_info"), state, 1)
            elif f.number == 25:
                yield from _function(data, _message(f, "function"), state, 1)


def looks_like_onnx(head: bytes, size: int) -> bool:
    """What ``onnx.load`` (protobuf) accepts as a ModelProto, judged on the first bytes.

    Protobuf fields may come in any order (writers use number order; parsers do not care), so
    the sniff does not ask for ``ir_version`` first: every field seen must be a ModelProto field
    with its wire type (or, after one, a field protobuf keeps as unknown, when an anchor below is
    seen too), a length that fits the file, and content of the right shape where the
    head shows it (UTF-8 strings; a graph, opset or metadata entry whose own first fields are
    fields of that message). At least one of ``ir_version`` (1..64), ``graph`` and
    ``opset_import`` must be seen, unless a single field already runs past the head; and at least
    two fields, or one that runs past the head. A truncated model is still claimed, so the read
    reports where it breaks."""
    pos = 0
    seen = anchors = unknown = 0
    end = len(head)
    cut = False
    while pos < end:
        try:
            tag, p = pb.read_varint(head, pos, end)
            number, wire = tag >> 3, tag & 7
            expected = _MODEL_FIELDS.get(number)
            if expected is None:
                # protobuf keeps fields it does not know and onnx.load accepts them; after a
                # ModelProto field, an unknown one with a valid wire type is allowed
                if seen == 0 or number == 0 or wire not in (pb.VARINT, pb.I64, pb.LEN, pb.I32):
                    return False
                unknown += 1
            elif expected != wire:
                return False
            value = 0
            if wire in (pb.VARINT, pb.LEN):
                value, p = pb.read_varint(head, p, end)
        except FormatError:
            cut = True  # a tag or varint cut by the end of the head
            break
        if wire == pb.VARINT:
            if number == 1:
                if not 1 <= value <= _MAX_IR_VERSION:
                    return False
                anchors += 1
            pos = p
        elif wire != pb.LEN:
            pos = p + (8 if wire == pb.I64 else 4)
        else:
            if expected is not None and not _plausible_body(number, head[p : min(end, p + value)]):
                return False
            if p + value > size:
                # runs past the end of the file: a truncated model when what came before is
                # ONNX (claimed, so the read says where it breaks); otherwise not ONNX
                return anchors >= 1 and expected is not None
            anchors += number in (7, 8)
            pos = p + value
        seen += 1
    past = cut or pos > end  # the last field runs past the head: judged on what was seen
    if unknown:
        return anchors >= 1 and seen - unknown >= 1
    return seen >= 1 and (anchors >= 1 or past) and (seen >= 2 or past)


#: the wire types of the first fields of the messages the sniff looks into
_BODY_FIELDS: Final[dict[int, dict[int, int]]] = {
    # GraphProto: node, name, initializer, doc_string, input, output, value_info,
    # quantization_annotation, sparse_initializer, metadata_props — all length-delimited
    7: {n: pb.LEN for n in (1, 2, 5, 10, 11, 12, 13, 14, 15, 16)},
    8: {1: pb.LEN, 2: pb.VARINT},  # OperatorSetIdProto: domain, version
    14: {1: pb.LEN, 2: pb.LEN},  # StringStringEntryProto: key, value
}
_TEXT_FIELDS: Final = frozenset({2, 3, 4, 6})


def _plausible_body(number: int, body: bytes) -> bool:
    """The (possibly cut) content of ModelProto field ``number`` looks like what it must hold."""
    if number in _TEXT_FIELDS:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(body, final=False)
        except UnicodeDecodeError:
            return False
        return True
    fields = _BODY_FIELDS.get(number)
    if fields is None or not body:
        return True
    try:
        tag, _ = pb.read_varint(body, 0, len(body))
    except FormatError:
        return True  # the first tag itself is cut
    return fields.get(tag >> 3) == tag & 7


def _message(f: pb.Field, what: str) -> pb.Field:
    if f.wire != pb.LEN:
        raise FormatError(
            f"{what} at offset {f.offset} has wire type {f.wire_name()} (expected an embedded message)",
            offset=f.offset,
        )
    return f


def _function_key(data: memoryview, f: pb.Field) -> tuple[str, str]:
    _message(f, "function")
    name = domain = ""
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 1:
            name = pb.text(data, g, "function name")
        elif g.number == 10:
            domain = pb.text(data, g, "function domain")
    return domain, name


def _graph(data: memoryview, f: pb.Field, state: _State, depth: int, where: str) -> Iterator[Fact]:
    depth = pb.enter(depth, state.ctx.limits, f.offset)
    name = ""
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 2:
            name = _show(pb.text(data, g, "graph name"))
    where = f"{where} {name!r}" if name else where
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 1:
            yield from _node(data, _message(g, "node"), state, depth, where)
        elif g.number == 5:
            yield from _tensor(data, _message(g, "initializer"), state, depth, where)
        elif g.number == 15:
            yield from _sparse(data, _message(g, "sparse_initializer"), state, depth, where)


def _training_info(data: memoryview, f: pb.Field, state: _State, depth: int) -> Iterator[Fact]:
    depth = pb.enter(depth, state.ctx.limits, f.offset)
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number in (1, 2):
            role = "initialization" if g.number == 1 else "algorithm"
            yield from _graph(data, _message(g, role), state, depth, f"training {role} graph")


def _function(data: memoryview, f: pb.Field, state: _State, depth: int) -> Iterator[Fact]:
    depth = pb.enter(depth, state.ctx.limits, f.offset)
    domain, name = _function_key(data, f)
    qualified = f"{domain}::{name}" if domain else name
    nodes = sum(1 for g in pb.iter_fields(data, f.start, f.end) if g.number == 7)
    yield GraphOp(name, "", "the model's functions", f.offset, ecosystem="onnx", domain=domain, defines=nodes)
    where = f"function {_show(qualified)!r}"
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 7:
            yield from _node(data, _message(g, "node"), state, depth, where)


def _node(data: memoryview, f: pb.Field, state: _State, depth: int, where: str) -> Iterator[Fact]:
    depth = pb.enter(depth, state.ctx.limits, f.offset)
    state.ctx.check_time()
    name = op_type = domain = ""
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 3:
            name = pb.text(data, g, "node name")
        elif g.number == 4:
            op_type = pb.text(data, g, "node op_type")
        elif g.number == 7:
            domain = pb.text(data, g, "node domain")
    if state.once("operator", f"{domain}::{op_type}"):  # the first node running each operator
        calls = (domain, op_type) in state.functions
        yield GraphOp(op_type, name, where, f.offset, calls_function=calls, ecosystem="onnx", domain=domain)
    here = f"node {_show(name or op_type)!r} in {where}"
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 5:
            yield from _attribute(data, _message(g, "attribute"), state, depth, here)


def _attribute(data: memoryview, f: pb.Field, state: _State, depth: int, where: str) -> Iterator[Fact]:
    depth = pb.enter(depth, state.ctx.limits, f.offset)
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number in (5, 10):
            yield from _tensor(data, _message(g, "attribute tensor"), state, depth, where)
        elif g.number in (6, 11):
            yield from _graph(data, _message(g, "attribute graph"), state, depth, f"subgraph of {where}")
        elif g.number in (22, 23):
            yield from _sparse(data, _message(g, "attribute sparse tensor"), state, depth, where)


def _sparse(data: memoryview, f: pb.Field, state: _State, depth: int, where: str) -> Iterator[Fact]:
    depth = pb.enter(depth, state.ctx.limits, f.offset)
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number in (1, 2):
            yield from _tensor(data, _message(g, "sparse tensor part"), state, depth, where)


def _tensor(data: memoryview, f: pb.Field, state: _State, depth: int, where: str) -> Iterator[Fact]:
    depth = pb.enter(depth, state.ctx.limits, f.offset)
    name = ""
    data_location = 0
    entries: list[tuple[str, str, int]] = []
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 8:
            name = pb.text(data, g, "tensor name")
        elif g.number == 14:
            if g.wire != pb.VARINT:
                raise FormatError(
                    f"tensor data_location at offset {g.offset} is not a varint", offset=g.offset
                )
            data_location = g.value
        elif g.number == 13:
            pb.enter(depth, state.ctx.limits, g.offset)
            key = value = ""
            for h in pb.iter_fields(data, _message(g, "external_data entry").start, g.end):
                if h.number == 1:
                    key = pb.text(data, h, "external_data key")
                elif h.number == 2:
                    value = pb.text(data, h, "external_data value")
            entries.append((key, value, g.offset))
    if data_location not in _KNOWN_LOCATIONS:
        yield Issue(
            "onnx.bad-tensor",
            Severity.ERROR,
            f"tensor {_show(name)!r} in {where} has data_location {data_location} (expected 0 DEFAULT or 1 EXTERNAL)",
            offset=f.offset,
        )
    if data_location == _EXTERNAL or entries:
        yield from external_data(entries, name, where, f.offset, data_location == _EXTERNAL, state)


#: The instance the registry loads (``airlock._formats.registry.READERS``).
READER: Final = OnnxReader()
