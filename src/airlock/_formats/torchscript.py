"""Static analysis of TorchScript code members (``<archive>/code/**/*.py``). Nothing is run.

``torch.jit.load`` compiles and runs this code (CVE-2025-32434: ``torch.load`` used to hand
TorchScript archives to it), so its mere presence is a finding. On top of that, the code may
call any operator registered with torch. We studied the 4,374 operator schemas torch 2.13
registers and kept the ones that reach outside the tensor world:

* ``aten::save`` — writes any file (``torch.save`` in TorchScript source);
* ``aten::from_file`` — reads, or with ``shared=True`` maps writably, any file;
* ``debugprims::load_tensor`` — loads tensors from a named external store;
* the collective-communication namespaces (``c10d``, ``_c10d_functional``,
  ``_c10d_functional_autograd``, ``symm_mem``) — send and receive tensors over the network.

Everything else TorchScript can call computes on tensors or raises exceptions. The source is
tokenised (comments and strings do not count); every dotted name that resolves to one of these
operators is reported, called or merely referenced (an alias is a reference). Source that does
not tokenise falls back to a plain scan of the text, which can only report more.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["OpUse", "dangerous_ops"]

_OPS: Final = {
    ("aten", "save"): "writes a file",
    ("aten", "from_file"): "reads (or maps writably) any file",
    ("debugprims", "load_tensor"): "loads tensors from an external store",
}
_NAMESPACES: Final = {
    "c10d": "network communication (distributed)",
    "_c10d_functional": "network communication (distributed)",
    "_c10d_functional_autograd": "network communication (distributed)",
    "symm_mem": "network communication (symmetric memory)",
}
_DOTTED: Final = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:[ \t]*\.[ \t]*[A-Za-z_]\w*)+")


@dataclass(frozen=True)
class OpUse:
    """One use of a dangerous operator: ``ns::name``, what it does, 1-based line, the line text."""

    op: str
    label: str
    line: int
    text: str


def dangerous_ops(source: str) -> Iterator[OpUse]:
    """Every use of a dangerous operator in TorchScript ``source``."""
    lines = source.splitlines()
    try:
        chains = list(_token_chains(source))
    except (tokenize.TokenError, SyntaxError):
        chains = [
            (source.count("\n", 0, m.start()) + 1, re.sub(r"\s", "", m.group()).split("."))
            for m in _DOTTED.finditer(source)
        ]
    for line, chain in chains:
        resolved = _resolve(chain)
        if resolved is None:
            continue
        text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        yield OpUse(f"{resolved[0]}::{resolved[1]}", resolved[2], line, text[:200])


def _token_chains(source: str) -> Iterator[tuple[int, list[str]]]:
    chain: list[str] = []
    start = 0
    expect_name = True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and expect_name:
            if not chain:
                start = tok.start[0]
            chain.append(tok.string)
            expect_name = False
        elif tok.type == tokenize.OP and tok.string == "." and chain and not expect_name:
            expect_name = True
        elif tok.type in (tokenize.NL, tokenize.COMMENT) and chain and expect_name:
            continue
        else:
            if len(chain) > 1:
                yield start, chain
            chain = [tok.string] if tok.type == tokenize.NAME else []
            start = tok.start[0]
            expect_name = tok.type != tokenize.NAME
    if len(chain) > 1:
        yield start, chain


def _resolve(chain: list[str]) -> tuple[str, str, str] | None:
    if chain[0] == "torch" and len(chain) >= 4 and chain[1] == "ops":
        ns, name = chain[2], chain[3]
    elif chain[0] == "ops" and len(chain) >= 3:
        ns, name = chain[1], chain[2]
    elif chain[0] == "torch" and len(chain) == 2:
        ns, name = "aten", chain[1]
    else:
        return None
    label = _OPS.get((ns, name)) or _NAMESPACES.get(ns)
    return (ns, name, label) if label else None
