"""Differential fuzzing of GGUF chat templates: what the real consumers read vs what airlock analyses.

Files carry metadata under the template key and its near misses (a trailing NUL or text after
one, named templates, case and spacing variants), as strings, string arrays of one or more
elements, other types, and duplicates, around ordinary metadata. ``gguf.GGUFReader`` (gguf-py,
which transformers uses) runs only in a throwaway subprocess; from its fields the consumers'
readings are derived as their sources define them: llama.cpp and llama-cpp-python cut keys at
the first NUL and take string values of ``tokenizer.chat_template`` / ``tokenizer.chat_template.*``;
transformers takes the exact key and unwraps a one-element array. The invariant: whenever airlock
reads the file without error, every such template text is among the templates airlock analyses.
"""

from __future__ import annotations

import random
from pathlib import Path

from airlock._formats.base import Issue, ReadContext, Template
from airlock._formats.gguf import GGUFReader
from airlock.errors import FormatError, LimitError
from airlock.limits import DEFAULT_LIMITS
from airlock.results import Severity
from tests._differential import reference_readings, write_corpus
from tests.formats_hf.gguf_build import ARRAY, GGUF, STRING, UINT32, Tensor

_KEYS = [
    "tokenizer.chat_template", "tokenizer.chat_template\0", "tokenizer.chat_template\0junk",
    "tokenizer.chat_template.tool_use", "tokenizer.chat_template.rag\0", "Tokenizer.chat_template",
    "tokenizer.chat_template ", "tokenizer.chat_templates", "general.description",
]  # fmt: skip
_TEXTS = [
    "{{ messages[0]['content'] }}",
    "{% for m in messages %}{{ m.role }}{% endfor %}",
    "plain text",
    "{{ x }}",
]


def generate_one(rng: random.Random) -> bytes:
    kv: list[tuple[str, int, object]] = [("general.architecture", STRING, "llama")]
    for _ in range(rng.randint(1, 4)):
        key = rng.choice(_KEYS)
        roll = rng.random()
        if roll < 0.5:
            kv.append((key, STRING, rng.choice(_TEXTS) + str(rng.randint(0, 999))))
        elif roll < 0.8:
            count = rng.choice([1, 1, 2, 3])
            kv.append((key, ARRAY, (STRING, [rng.choice(_TEXTS) + str(i) for i in range(count)])))
        elif roll < 0.9:
            kv.append((key, UINT32, rng.randint(0, 9)))
        else:
            kv.append((key, ARRAY, (UINT32, [1, 2])))
    rng.shuffle(kv)
    return GGUF(kv=kv, tensors=[Tensor("w", [8])]).build()


def generate(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    return [generate_one(rng) for _ in range(count)]


_GGUF_PY = r"""
import json, sys
from gguf import GGUFReader, GGUFValueType
T = "tokenizer.chat_template"
out = []
for path in sys.argv[1:]:
    try:
        reader = GGUFReader(path)
    except Exception as exc:
        out.append(None)
        continue
    used = []
    for name, field in reader.fields.items():
        types = field.types
        c_key = name.split("\0", 1)[0]
        strings = []
        if types == [GGUFValueType.STRING]:
            strings = [bytes(field.parts[field.data[0]]).decode("utf-8")]
            if c_key == T or c_key.startswith(T + "."):
                used.append(strings[0])  # llama.cpp / llama-cpp-python
        elif types[:2] == [GGUFValueType.ARRAY, GGUFValueType.STRING] and len(field.data) == 1:
            if name == T:
                used.append(bytes(field.parts[field.data[0]]).decode("utf-8"))  # transformers
    out.append(used)
print(json.dumps(out))
"""


def gguf_py_readings(paths: list[Path]) -> list[list[str] | None]:
    result: list[list[str] | None] = reference_readings(_GGUF_PY, paths)
    return result


def airlock_templates(raw: bytes) -> set[str] | None:
    ctx = ReadContext(limits=DEFAULT_LIMITS, file_path=Path("m.gguf"), root=Path())
    found: set[str] = set()
    try:
        for fact in GGUFReader().read(memoryview(raw), ctx):
            if isinstance(fact, Template):
                found.add(fact.text)
            elif isinstance(fact, Issue) and fact.severity is not Severity.INFO:
                return None  # the file is not CLEAN whatever the templates hold
    except (FormatError, LimitError):
        return None
    return found


def disagreements(folder: Path, seed: int, count: int) -> tuple[list[str], dict[str, int]]:
    """Files airlock reads cleanly where a consumer uses a template airlock never analysed."""
    files = generate(seed, count)
    paths = write_corpus(folder, seed, files, ".gguf")
    theirs = gguf_py_readings(paths)
    bad: list[str] = []
    stats = {"covered": 0, "airlock_refuses": 0, "reference_refuses": 0}
    for path, raw, used in zip(paths, files, theirs, strict=True):
        ours = airlock_templates(raw)
        if used is None:
            stats["reference_refuses"] += 1
        elif ours is None:
            stats["airlock_refuses"] += 1
        elif set(used) <= ours:
            stats["covered"] += 1
        else:
            bad.append(f"{path.name}: templates {sorted(set(used) - ours)!r:.200} used but not analysed")
    return bad, stats
