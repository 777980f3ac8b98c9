"""Print a hashed lock (requirements/dev.lock) as plain ``name==version`` constraints.

pip switches to --require-hashes as soon as one line of any requirements or constraints file has a
hash, and then refuses anything unhashed, such as a wheel just built from this tree. Installing
that wheel with the tested versions (the Dockerfile, the packaging test) uses these constraints.

Usage: python tools/lock_to_constraints.py requirements/dev.lock > constraints.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?==[^\s\\;]+)")


def constraints(lock_text: str) -> str:
    pins = [m.group(1) for line in lock_text.splitlines() if (m := _PIN.match(line))]
    return "".join(f"{pin}\n" for pin in pins)


if __name__ == "__main__":
    sys.stdout.write(constraints(Path(sys.argv[1]).read_text(encoding="utf-8")))
