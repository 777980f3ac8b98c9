"""A tiny protobuf encoder that builds SavedModel-shaped messages for the tests (no tensorflow).

Field numbers follow tensorflow/core/protobuf/saved_model.proto, meta_graph.proto,
framework/graph.proto, node_def.proto, function.proto and attr_value.proto.
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def number(field_number: int, value: int) -> bytes:
    return varint(field_number << 3) + varint(value)


def node(name: str, op: str, attrs: dict[str, str] | None = None) -> bytes:
    """NodeDef: name 1, op 2, input 3, attr 5 (map entry: key 1, AttrValue 2 with s = 2)."""
    out = field(1, name) + field(2, op) + field(3, "input:0")
    for key, value in (attrs or {}).items():
        out += field(5, field(1, key) + field(2, field(2, value)))
    return out


def function(name: str, *nodes: bytes) -> bytes:
    """FunctionDef: signature (OpDef, name 1) 1, node_def 3."""
    return field(1, field(1, name)) + b"".join(field(3, n) for n in nodes)


def saved_model(*nodes: bytes, functions: tuple[bytes, ...] = ()) -> bytes:
    """SavedModel{schema_version=1, meta_graphs=[MetaGraphDef{meta_info_def, graph_def}]}."""
    meta_info = field(1, field(4, "serve") + field(5, "2.18.0"))  # tags 4, tensorflow_version 5
    library = field(2, b"".join(field(1, f) for f in functions)) if functions else b""
    graph = b"".join(field(1, n) for n in nodes) + library + field(4, number(1, 1987))  # versions 4
    return number(1, 1) + field(2, meta_info + field(2, graph))


def ordinary() -> list[bytes]:
    return [
        node("x", "Placeholder"),
        node("w", "Const"),
        node("mm", "MatMul"),
        node("save/SaveV2", "SaveV2"),
        node("save/RestoreV2", "RestoreV2"),
        node("p", "PrintV2", {"output_stream": "stderr"}),
    ]


def saved_model_with_objects(*user_objects: tuple[str, str | bytes]) -> bytes:
    """An ordinary SavedModel whose object graph (MetaGraphDef field 7: SavedObjectGraph, nodes 1)
    holds one SavedObject per ``(identifier, metadata)``: user_object 4 = SavedUserObject
    (identifier 1, metadata 3), as Keras wrote it before keras_metadata.pb (TF < 2.5)."""
    meta_info = field(1, field(4, "serve") + field(5, "2.4.0"))
    graph = b"".join(field(1, n) for n in ordinary()) + field(4, number(1, 1987))
    nodes = b"".join(
        field(1, field(4, field(1, identifier) + field(2, number(1, 1)) + field(3, metadata)))
        for identifier, metadata in user_objects
    )
    return number(1, 1) + field(2, meta_info + field(2, graph) + field(7, nodes))


def saved_model_with_assets(*filenames: str) -> bytes:
    """An ordinary SavedModel whose meta graph lists assets (MetaGraphDef field 6: AssetFileDef,
    tensor_info 1 with a name, filename 2), as tf.saved_model.save writes a vocabulary file."""
    meta_info = field(1, field(4, "serve") + field(5, "2.18.0"))
    graph = b"".join(field(1, n) for n in ordinary()) + field(4, number(1, 1987))
    assets = b"".join(
        field(6, field(1, field(1, f"asset_path_initializer_{i}:0")) + field(2, name))
        for i, name in enumerate(filenames)
    )
    return number(1, 1) + field(2, meta_info + field(2, graph) + assets)
