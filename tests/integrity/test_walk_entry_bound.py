"""``max_files`` bounds every entry the hashing walk lists, not only regular files (outside review 24).

The walk counted regular files only: folders were pushed on its stack and links and special files
became problem lines without bound, and each folder was listed whole before anything was counted.
Measured on the old code: a folder of 200,000 empty folders and one file, hashed with
``max_files=1000``, was walked to the end (18 s, 220 MB) and hashed fine; links the same way, each
one a line of the error. Now files, folders, links and special files all count (as the scanner's
walk counts them), and a listing stops one entry past what is left of the limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.errors import IntegrityError, LimitError
from airlock.integrity import HashLimits, hash

LIMIT = 10


def _tree(root: Path, folders: int, links: int = 0) -> Path:
    root.mkdir()
    (root / "weights.bin").write_bytes(b"w")
    for i in range(folders):
        (root / f"d{i}").mkdir()
    for i in range(links):
        (root / f"l{i}").symlink_to("weights.bin")
    return root


@pytest.mark.parametrize("entries", [LIMIT - 1, LIMIT])
def test_entries_up_to_the_limit_are_hashed(tmp_path: Path, entries: int) -> None:
    manifest = hash(_tree(tmp_path / "m", entries - 1), limits=HashLimits(max_files=LIMIT))
    assert [f.path for f in manifest.files] == ["weights.bin"]


def test_one_empty_folder_past_the_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LimitError) as info:
        hash(_tree(tmp_path / "m", LIMIT), limits=HashLimits(max_files=LIMIT))
    assert str(info.value) == (
        f"file count limit: more than {LIMIT} files under m (folders, links and special files count too)"
    )


def test_nested_folders_count_across_listings(tmp_path: Path) -> None:
    root = tmp_path / "m"
    deep = root.joinpath(*[f"d{i}" for i in range(LIMIT)])  # LIMIT folders, one per listing
    deep.mkdir(parents=True)
    assert hash(root, limits=HashLimits(max_files=LIMIT)).files == ()
    (deep / "x").write_bytes(b"x")  # the one file makes LIMIT + 1 entries
    with pytest.raises(LimitError, match=r"^file count limit: more than 10 files under m \(folders, links"):
        hash(root, limits=HashLimits(max_files=LIMIT))


def test_links_count_before_they_become_problem_lines(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m", 0, links=LIMIT)  # one file and LIMIT links
    with pytest.raises(LimitError, match=r"^file count limit: more than 10 files under m"):
        hash(root, limits=HashLimits(max_files=LIMIT))
    with pytest.raises(IntegrityError, match=r"\(10 problems\)"):  # within the limit: itemised
        hash(root, limits=HashLimits(max_files=LIMIT + 1))
