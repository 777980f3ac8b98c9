"""The walk builds each child's path without pathlib parsing its name again (``walk._child``): the
paths must be exactly what ``folder / name`` gives, for any name a directory may hold."""

from __future__ import annotations

import os
from pathlib import Path

from airlock._scan.walk import _child, walk
from airlock.limits import DEFAULT_LIMITS

NAMES = ["a.pkl", ".hidden", "...", " lead", "trail ", "é.pt", "a\\b", "x:y", "tab\tname", "\udcff.bin", "-x"]


def test_a_child_path_is_the_division() -> None:
    for folder in (Path("rel/dir"), Path("/abs/dir"), Path("."), Path("/"), Path("a/./b//c")):
        for name in NAMES:
            made = _child(folder, name)
            assert made == folder / name and str(made) == str(folder / name)
            assert made.parts == (folder / name).parts and made.name == name
            assert made.parent == folder and type(made) is type(folder / name)


def test_walked_paths_and_folders(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "sub" / "deeper").mkdir(parents=True)
    for folder in (root, root / "sub", root / "sub" / "deeper"):
        for name in NAMES:
            try:
                (folder / name).write_bytes(b"x")
            except (OSError, UnicodeEncodeError):  # a file system that refuses the name
                continue
    os.symlink("a.pkl", root / "link.pkl")
    entries = list(walk(root, DEFAULT_LIMITS))
    assert len(entries) > 3 * 5
    for entry in entries:
        rel = entry.display[len(root.as_posix()) + 1 :]
        assert entry.path == root / rel and str(entry.path) == str(root / rel)
        assert entry.folder == entry.path.parent
        if entry.kind == "file":
            assert entry.size == entry.path.lstat().st_size
