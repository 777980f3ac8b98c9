"""TensorFlow SavedModel graphs (``saved_model.pb``), read with airlock's own protobuf reader.

A SavedModel runs no Python by itself, but its graph can hold operations that reach outside
the model when the graph runs (on load for initialisers, on every call for signatures): run
Python, read, list or write host files, or talk to the network. The published abuse (e.g. the
TensorAbuse study) wires such ops into ordinary-looking signatures. Every ``NodeDef`` of every
meta graph and of every function in the graph's library is checked against the table below.

Why each class weighs what it does:

* running Python (``PyFunc`` ...) is code execution: MALICIOUS;
* writing files (``WriteFile``, ``PrintV2`` to a ``file://`` stream, ``DistributedSave``) lets the
  model plant content anywhere the process can write: MALICIOUS;
* network clients/servers (``Rpc*``, tf.data service) have no place in a published model: MALICIOUS;
* reading and listing files (``ReadFile``, ``MatchingFiles``, file datasets, ``ImmutableConst``)
  can leak host files through outputs, and has rare legitimate uses: SUSPICIOUS;
* debug ops send tensors to URLs or files named in attributes; legacy ``Save``/``SaveSlices``
  write checkpoints to a path fed at run time: SUSPICIOUS.

Not reported: ``SaveV2``/``RestoreV2``/``MergeV2Checkpoints`` (every SavedModel's saver uses
them; their path normally comes from the loader) and vocabulary-table initialisers reading
asset files. Custom ops (not in TensorFlow) need a library the caller loads; they are not listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from airlock._formats import protobuf as pb
from airlock._formats.base import Fact, Issue, ReadContext
from airlock.errors import FormatError
from airlock.limits import Limits
from airlock.results import Severity

__all__ = ["RISKY_OPS", "SavedModelReader"]

_PY: Final = ("savedmodel.python-op", Severity.MALICIOUS, "runs Python code")
_WRITE: Final = ("savedmodel.file-op", Severity.MALICIOUS, "writes files on the host")
_NET: Final = ("savedmodel.network-op", Severity.MALICIOUS, "opens network connections")
_READ: Final = ("savedmodel.file-op", Severity.SUSPICIOUS, "reads or lists files on the host")
_DEBUG: Final = ("savedmodel.debug-op", Severity.SUSPICIOUS, "sends tensors to debug URLs or files")
_CKPT: Final = (
    "savedmodel.file-op",
    Severity.SUSPICIOUS,
    "writes a legacy checkpoint to a path given at run time",
)

#: op name -> (rule, severity, what it does)
RISKY_OPS: Final[dict[str, tuple[str, Severity, str]]] = {
    **dict.fromkeys(["PyFunc", "PyFuncStateless", "EagerPyFunc"], _PY),
    **dict.fromkeys(["WriteFile", "DistributedSave"], _WRITE),
    **dict.fromkeys(
        ["RpcCall", "RpcClient", "RpcServer", "RpcServerRegister", "RpcServerStart", "RegisterDataset",
         "RegisterDatasetV2", "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3",
         "DataServiceDatasetV4"],
        _NET,
    ),
    **dict.fromkeys(
        ["ReadFile", "MatchingFiles", "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "ImmutableConst",
         "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2",
         "ExperimentalCSVDataset", "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "TextLineDatasetV2",
         "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "TFRecordReader",
         "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LoadDataset"],
        _READ,
    ),
    **dict.fromkeys(["DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary"], _DEBUG),
    **dict.fromkeys(["Save", "SaveSlices"], _CKPT),
}  # fmt: skip

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
        for node in _children(data, graph, 1, "node"):
            yield from _node(data, node, ctx, graph_depth, "graph")
        for library in _children(data, graph, 2, "function library"):
            lib_depth = pb.enter(graph_depth, ctx.limits, library.offset)
            for function in _children(data, library, 1, "function"):
                fn_depth = pb.enter(lib_depth, ctx.limits, function.offset)
                where = f"function {_show(_function_name(data, function, ctx.limits, fn_depth))!r}"
                for node in _children(data, function, 3, "node_def"):
                    yield from _node(data, node, ctx, fn_depth, where)


def _function_name(data: memoryview, function: pb.Field, limits: Limits, depth: int) -> str:
    name = ""
    for signature in _children(data, function, 1, "signature"):
        pb.enter(depth, limits, signature.offset)
        for g in pb.iter_fields(data, signature.start, signature.end):
            if g.number == 1:
                name = pb.text(data, g, "function name")
    return name


def _node(data: memoryview, f: pb.Field, ctx: ReadContext, depth: int, where: str) -> Iterator[Fact]:
    depth = pb.enter(depth, ctx.limits, f.offset)
    ctx.check_time()
    name = op = ""
    for g in pb.iter_fields(data, f.start, f.end):
        if g.number == 1:
            name = pb.text(data, g, "node name")
        elif g.number == 2:
            op = pb.text(data, g, "node op")
    risk = RISKY_OPS.get(op)
    if op == "PrintV2":
        stream = _attr_string(data, f, "output_stream", ctx.limits, depth)
        if stream is not None and stream.startswith("file://"):
            risk = ("savedmodel.file-op", Severity.MALICIOUS, f"appends tensor text to {_show(stream)!r}")
    if risk is None:
        return
    rule, severity, what = risk
    yield Issue(
        rule,
        severity,
        f"node {_show(name)!r} in {where} is a {_show(op)!r} op, which {what} when the graph runs "
        f"(expected only computation ops)",
        offset=f.offset,
        callable=_show(op),
        evidence=_show(name),
    )


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
