"""A text lock file (``airlock hash`` output, ``sha256sum`` lines) ends its lines at ``\\n`` only.

``Manifest.to_text`` escapes ``\\n``, ``\\r`` and ``\\`` in names, as coreutils does, and leaves
every other character alone. The reader used ``str.splitlines()``, which also breaks lines at
``\\v \\f \\x1c \\x1d \\x1e \\x85 U+2028 U+2029``: a file named ``readme<U+2028><HEX>  config.json``
became two entries, and the second one let an unhashed ``config.json`` verify.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airlock.errors import IntegrityError
from airlock.integrity import hash, verify
from tests.integrity.integrity_helpers import build_model

#: every separator str.splitlines() knows besides \n and \r
SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
WEIGHTS = b"weights" * 100
NOTES = b"harmless notes\n"
#: what the attacker wants loaded later: never hashed by anyone
CONFIG = b'{"auto_map": {"AutoModel": "evil.Model"}}'


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(s):04X}" for s in SEPARATORS])
def test_a_name_with_a_unicode_line_break_cannot_smuggle_an_entry(tmp_path: Path, sep: str) -> None:
    config_digest = hashlib.sha256(CONFIG).hexdigest()
    trick = f"readme{sep}{config_digest}  config.json"
    reviewed = build_model(tmp_path / "reviewed", {"model.safetensors": WEIGHTS, trick: NOTES})
    lock = tmp_path / "model.lock"
    lock.write_text(hash(reviewed).to_text(), encoding="utf-8")
    # the lock reads back as exactly the files that were hashed
    assert {e.path for e in verify(reviewed, lock=lock).manifest.files} == {"model.safetensors", trick}
    swapped = build_model(
        tmp_path / "swapped", {"model.safetensors": WEIGHTS, "readme": NOTES, "config.json": CONFIG}
    )
    with pytest.raises(IntegrityError) as caught:
        verify(swapped, lock=lock)
    assert sorted(caught.value.problems) == sorted(  # type: ignore[attr-defined]
        [
            "extra: config.json (not in lock file model.lock)",
            "extra: readme (not in lock file model.lock)",
            f"missing: {trick}",
        ]
    )


def test_crlf_lines_still_read(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model", {"a.bin": WEIGHTS, "b.txt": NOTES})
    lock = tmp_path / "model.lock"
    lock.write_bytes(hash(model).to_text().replace("\n", "\r\n").encode())
    assert len(verify(model, lock=lock).manifest.files) == 2
