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

Names resolve as torch's importer (``import_source.cpp``) resolves them: ``torch`` is the
operator namespace ``aten``, ``ops.<ns>`` the namespace ``<ns>``, and ``.autograd`` on *any*
namespace is ``aten`` again, so ``torch.autograd.save`` and ``ops.foo.autograd.save`` are
``aten::save``. The namespaces are values in TorchScript: ``(torch).save``, ``t = torch`` then
``t.save``, or ``ops.aten`` passed around reach every operator by a name no chain shows. So the
only use of ``torch`` or ``ops`` accepted is a chain that ends at an operator; any other (a
namespace in parentheses, assigned, passed, or a chain that stops at a namespace) is reported as
the indirect use ``<ns>::*`` (outside review 17).
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
_DOTTED: Final = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*")
_INDIRECT: Final = "an operator namespace used as a value reaches every operator, file and network ones too"


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
    """Every dotted chain that starts at a free name (one name alone too): (line, names).

    Line breaks and comments inside brackets (NL, COMMENT) do not end a chain: the parser skips them.
    """
    chain: list[str] = []
    start = 0
    expect_name = True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.NL, tokenize.COMMENT):
            continue
        if tok.type == tokenize.NAME and expect_name:
            if not chain:
                start = tok.start[0]
            chain.append(tok.string)
            expect_name = False
        elif tok.type == tokenize.OP and tok.string == "." and chain and not expect_name:
            expect_name = True
        else:
            if chain:
                yield start, chain
            chain = [tok.string] if tok.type == tokenize.NAME else []
            start = tok.start[0]
            expect_name = tok.type != tokenize.NAME
    if chain:
        yield start, chain


def _resolve(chain: list[str]) -> tuple[str, str, str] | None:
    """The operator a chain starting at a free name reaches, or ``(ns, "*", label)`` for a namespace."""
    if chain[0] == "torch" and len(chain) >= 2 and chain[1] == "ops":
        chain = chain[1:]  # torch.ops.ns.name: Python-side scripting reads it as ops.ns.name
    if chain[0] == "torch":
        ns, rest = "aten", chain[1:]
    elif chain[0] == "ops":
        if len(chain) < 2:
            return ("ops", "*", _INDIRECT)
        ns, rest = chain[1], chain[2:]
    else:
        return None
    for field in rest:
        if field != "autograd":
            label = _OPS.get((ns, field)) or _NAMESPACES.get(ns)
            return (ns, field, label) if label else None
        ns = "aten"  # BuiltinModule::attr: "autograd" on any namespace is aten again
    return (ns, "*", _INDIRECT)
