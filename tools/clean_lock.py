"""Tidy a pip-compile lock: drop the project's own self-reference and machine-specific lines.

``make lock`` runs pip-compile --generate-hashes on pyproject.toml's ``dev`` extra, then this. The
project itself is installed from the work tree (``pip install --no-deps -e .``), so it must not be
a hashed requirement; index and find-links URLs belong to the machine's pip configuration, not to
the lock.

Usage: python tools/clean_lock.py requirements/dev.lock
"""

from __future__ import annotations

import sys
from pathlib import Path


def clean(text: str) -> str:
    out: list[str] = []
    skip_self = False
    for line in text.splitlines():
        if line.startswith(("--extra-index-url", "--index-url", "--find-links", "# WARNING")):
            continue
        if line.startswith(("#    pip install", "# The generated requirements", "# Consider using")):
            continue
        if line.startswith("model-airlock"):
            skip_self = True
            continue
        if skip_self:
            if line.startswith("    "):
                continue
            skip_self = False
        if line.strip() in ("#   -c /tmp/freeze.txt", "# via -c /tmp/freeze.txt"):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(clean(path.read_text(encoding="utf-8")), encoding="utf-8")
