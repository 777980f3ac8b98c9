"""TensorFlow SavedModel graphs (``saved_model.pb``), read with airlock's own protobuf reader.

A SavedModel runs no Python by itself, but its graph can hold operations that reach outside
the model when the graph runs (on load for initialisers, on every call for signatures): run
Python, read, list or write host files, or talk to the network. The published abuse (e.g. the
TensorAbuse study) wires such ops into ordinary-looking signatures. Every ``NodeDef`` of every
meta graph and of every function in the graph's library is yielded as a ``GraphOp`` fact, judged
by the analysis (``_analysis/tf_ops.py``) with an ALLOWLIST:

* the ops ordinary models use (``ORDINARY_OPS``: arithmetic, neural-network, shape, control
  flow, variables, lookup tables, random, strings, the saver's ``SaveV2``/``RestoreV2``) and calls
  of functions defined in the graph's own library are CLEAN;
* ops that run Python, read, list or write host files, talk to the network or send tensors to
  debug URLs/files (``RISKY_OPS``) are MALICIOUS, named with their node;
* any other op is ``savedmodel.unknown-op`` (SUSPICIOUS): a custom op needs a native library the
  caller loads, and a TensorFlow op outside the list needs a decision
  (``--allow tf.OpName`` accepts one).

``PrintV2`` is CLEAN to stdout/stderr/log and MALICIOUS to a ``file://`` stream.

The meta graph's object graph (``object_graph_def``) can also carry a Keras config: each
``SavedUserObject`` has a ``metadata`` string, where Keras (TF < 2.5, and tf_keras' loader to
this day when ``keras_metadata.pb`` is absent) keeps the layer's JSON config. tf_keras'
``load_model`` revives layers from it outside any safe mode, so a ``Lambda`` there runs its
marshalled bytecode. Every non-empty ``metadata`` is parsed as JSON (bounded by
``max_header_bytes``) and analysed as a Keras config (``keras_config.analyse_config``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Final

from airlock._formats import protobuf as pb
from airlock._formats.base import Fact, GraphOp, Issue, ReadContext
from airlock._formats.keras_config import analyse_config
from airlock._formats.onnx_external import location_problem
from airlock.errors import FormatError, LimitError
from airlock.limits import Limits
from airlock.results import Severity

__all__ = ["SavedModelReader"]

_SCHEMA_VERSION: Final = 1
_SHOW: Final = 200


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


class SavedModelReader:
    name = "tf-savedmodel"

    def sniff(self, head: bytes, size: int) -> bool:
        """``saved_model_schema_version`` = 1 (field 1), then a MetaGraphDef (field 2) that opens
        with its meta_info_def (field 1) or graph_def (field 2) — nothing else at the top."""
        try:
            tag, pos = pb.read_varint(head, 0, len(head))
            version, pos = pb.read_varint(head, pos, len(head))
            meta_tag, pos = pb.read_varint(head, pos, len(head))
            length, pos = pb.read_varint(head, pos, len(head))
        except FormatError:
            return False
        if (tag, version, meta_tag) != (0x08, _SCHEMA_VERSION, 0x12) or pos >= len(head):
            return False
        # a meta graph longer than the file is still claimed: the read then says where it breaks
        return length > 0 and head[pos] in (0x0A, 0x12)

    def read(self, data: memoryview, ctx: ReadContext) -> Iterator[Fact]:
        meta_graphs = 0
        for f in pb.iter_fields(data, 0, len(data)):
            if f.number == 1 and (f.wire != pb.VARINT or f.value != _SCHEMA_VERSION):
                raise FormatError(
                    f"saved_model_schema_version is {f.value} (expected {_SCHEMA_VERSION})", offset=f.offset
                )
            if f.number == 2:
                meta_graphs += 1
        if meta_graphs == 0:
            raise FormatError("SavedModel has no meta graph (field 2); file truncated?", offset=len(data))
        for f in pb.iter_fields(data, 0, len(data)):
            if f.number == 2:
                yield from _meta_graph(data, _message(f, "meta graph"), ctx, 1)


def _message(f: pb.Field, what: str) -> pb.Field:
    if f.wire != pb.LEN:
        raise FormatError(
            f"{what} at offset {f.offset} has wire type {f.wire_name()} (expected an embedded message)",
            offset=f.offset,
        )
    return f


def _children(data: memoryview, f: pb.Field, number: int, what: str) -> Iterator[pb.Field]:
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == number:
            yield _message(g, what)


def _meta_graph(data: memoryview, f: pb.Field, ctx: ReadContext, depth: int) -> Iterator[Fact]:
    depth = pb.enter(depth, ctx.limits, f.offset)
    for graph in _children(data, f, 2, "graph_def"):
        graph_depth = pb.enter(depth, ctx.limits, graph.offset)
        # an op named after a function of the graph's own library calls that function (whose
        # nodes are checked below)
        functions = frozenset(
            _function_name(
                data,
                function,
                ctx.limits,
                pb.enter(pb.enter(graph_depth, ctx.limits, library.offset), ctx.limits, function.offset),
            )
            for library in _children(data, graph, 2, "function library")
            for function in _children(data, library, 1, "function")
        )
        for node in _children(data, graph, 1, "node"):
            yield from _node(data, node, ctx, graph_depth, "graph", functions)
        for library in _children(data, graph, 2, "function library"):
            lib_depth = pb.enter(graph_depth, ctx.limits, library.offset)
            for function in _children(data, library, 1, "function"):
                fn_depth = pb.enter(lib_depth, ctx.limits, function.offset)
                where = f"function {_show(_function_name(data, function, ctx.limits, fn_depth))!r}"
                for node in _children(data, function, 3, "node_def"):
                    yield from _node(data, node, ctx, fn_depth, where, functions)
    for objects in _children(data, f, 7, "object_graph_def"):
        yield from _object_graph(data, objects, ctx, depth)
    for asset in _children(data, f, 6, "asset_file_def"):
        yield from _asset(data, asset, ctx, depth)


def _asset(data: memoryview, f: pb.Field, ctx: ReadContext, depth: int) -> Iterator[Fact]:
    """An ``AssetFileDef`` (tensor_info 1, filename 2): the loader opens
    ``join(export_dir, "assets", filename)`` (a vocabulary for a lookup table, read on load), so
    a filename that is absolute or climbs with ``..`` makes it read a host file."""
    pb.enter(depth, ctx.limits, f.offset)
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number != 2:
            continue
        filename = pb.text(data, g, "asset filename")
        problem = location_problem(filename)
        if problem is not None:
            yield Issue(
                "savedmodel.asset-path",
                Severity.MALICIOUS,
                f"asset file {_show(filename)!r} {problem}: the loader opens it as assets/{_show(filename)} "
                "when the model loads (a lookup table's vocabulary: a host file read into the model) "
                "(expected a plain name inside the assets folder)",
                offset=g.offset,
                callable=_show(filename),
                evidence=_show(filename),
            )


def _object_graph(data: memoryview, f: pb.Field, ctx: ReadContext, depth: int) -> Iterator[Fact]:
    """The Keras configs in a SavedObjectGraph: ``nodes`` (1) -> SavedObject ``user_object`` (4)
    -> SavedUserObject ``identifier`` (1), ``metadata`` (3), as tf_keras' loader reads them."""
    depth = pb.enter(depth, ctx.limits, f.offset)
    for index, saved in enumerate(_children(data, f, 1, "saved object")):
        saved_depth = pb.enter(depth, ctx.limits, saved.offset)
        ctx.check_time()
        for user in _children(data, saved, 4, "user_object"):
            pb.enter(saved_depth, ctx.limits, user.offset)
            identifier = ""
            metadata: pb.Field | None = None
            for g in pb.iter_fields(data, user.start, user.end):
                if g.number == 1:
                    identifier = pb.text(data, g, "user object identifier")
                elif g.number == 3:
                    metadata = g
            if metadata is None or _message(metadata, "user object metadata").start == metadata.end:
                continue  # no Keras config (every object that is not a Keras layer or model)
            what = f"object graph node {index} ({_show(identifier)}) metadata"
            yield from analyse_config(_metadata_json(data, metadata, ctx.limits, what), ctx, what)


def _metadata_json(data: memoryview, f: pb.Field, limits: Limits, what: str) -> object:
    """The JSON of a SavedUserObject's ``metadata``, size checked before it is decoded."""
    if f.end - f.start > limits.max_header_bytes:
        raise LimitError(
            f"{what} is {f.end - f.start} bytes, more than {limits.max_header_bytes} "
            "(limit max_header_bytes)",
            offset=f.offset,
        )
    try:
        return json.loads(bytes(data[f.start : f.end]))
    except RecursionError as exc:
        raise LimitError(f"{what} nests deeper than the JSON parser allows", offset=f.offset) from exc
    except ValueError as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}", offset=f.offset) from exc


def _function_name(data: memoryview, function: pb.Field, limits: Limits, depth: int) -> str:
    name = ""
    for signature in _children(data, function, 1, "signature"):
        pb.enter(depth, limits, signature.offset)
        for g in pb.iter_fields(data, signature.start, signature.end):
            if g.number == 1:
                name = pb.text(data, g, "function name")
    return name


def _node(
    data: memoryview, f: pb.Field, ctx: ReadContext, depth: int, where: str, functions: frozenset[str]
) -> Iterator[Fact]:
    depth = pb.enter(depth, ctx.limits, f.offset)
    ctx.check_time()
    name = op = ""
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 1:
            name = pb.text(data, g, "node name")
        elif g.number == 2:
            op = pb.text(data, g, "node op")
    stream = _attr_string(data, f, "output_stream", ctx.limits, depth) if op == "PrintV2" else None
    yield GraphOp(op, name, where, f.offset, calls_function=op in functions, output_stream=stream)


def _attr_string(data: memoryview, node: pb.Field, key: str, limits: Limits, depth: int) -> str | None:
    """The string value (``AttrValue.s``) of attribute ``key`` of a NodeDef, if present."""
    value: str | None = None
    for entry in _children(data, node, 5, "attr"):
        entry_depth = pb.enter(depth, limits, entry.offset)
        name = ""
        payload: pb.Field | None = None
        for g in pb.iter_fields(data, entry.start, entry.end):
            if g.number == 1:
                name = pb.text(data, g, "attr key")
            elif g.number == 2:
                payload = _message(g, "attr value")
        if name != key or payload is None:
            continue
        pb.enter(entry_depth, limits, payload.offset)
        for g in pb.iter_fields(data, payload.start, payload.end):
            if g.number == 2:
                value = pb.text(data, g, f"attr {key}")
    return value


#: The instance the registry loads (``airlock._formats.registry.READERS``).
READER: Final = SavedModelReader()
