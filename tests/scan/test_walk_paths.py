"""The walk builds each child's path without pathlib parsing its name again (``walk._child``): the
paths must be exactly what ``folder / name`` gives, for any name a directory may hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airlock._scan.walk import _child, walk
from airlock.errors import LimitError, UsageError
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


def test_a_folder_swapped_for_a_link_after_it_was_seen_is_not_walked_into(tmp_path: Path) -> None:
    """Round 5 (folders listed through a descriptor opened with O_NOFOLLOW). The walk saw ``sub``
    as a folder while listing the root; before it lists ``sub`` that folder becomes a link to a
    folder outside the tree. Before: ``os.scandir(path)`` followed the link and the walk reported
    the outside folder's files as ``sub/...``. Now the listing is refused (``cannot list``): the
    scan fails, it never reads outside the tree under the tree's names."""
    root = tmp_path / "t"
    (root / "sub").mkdir(parents=True)
    (root / "a.pkl").write_bytes(b"x")
    (root / "sub" / "in.pkl").write_bytes(b"x")
    (root / "z.pkl").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pkl").write_bytes(b"x")
    entries = walk(root, DEFAULT_LIMITS)
    seen = [next(entries).display, next(entries).display]  # a.pkl, then z.pkl: sub seen as a folder
    assert [name.rsplit("/", 1)[1] for name in seen] == ["a.pkl", "z.pkl"]
    (root / "sub" / "in.pkl").unlink()
    (root / "sub").rmdir()
    os.symlink(outside, root / "sub")
    with pytest.raises(UsageError, match="cannot list"):
        rest = [entry.display for entry in entries]
        assert not any("secret" in name for name in rest), rest  # before: sub/secret.pkl


def test_the_walk_holds_no_descriptor_after_it_ends(tmp_path: Path) -> None:
    """Each folder's descriptor is closed once its children are listed and stat'ed, also when
    the walk stops early (a limit) or is abandoned."""
    root = tmp_path / "t"
    for folder in ("a", "b/c", "d"):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            (root / folder / f"f{i}").write_bytes(b"x")
    before = set(os.listdir("/proc/self/fd"))
    assert len(list(walk(root, DEFAULT_LIMITS))) == 9
    with pytest.raises(LimitError):
        list(walk(root, DEFAULT_LIMITS.replace(max_files=5)))
    abandoned = walk(root, DEFAULT_LIMITS)
    next(abandoned)
    del abandoned  # the suspended generator is closed (CPython: at once)
    assert set(os.listdir("/proc/self/fd")) == before


def test_a_folder_above_swapped_for_a_link_after_it_was_listed_is_not_walked_into(tmp_path: Path) -> None:
    """Outside review 16: O_NOFOLLOW guards the last name of a path only. The walk listed ``sub``
    (it holds ``deep/``); then ``sub`` became a link to a folder outside the tree that has a
    ``deep/`` too. Opening ``sub/deep`` followed the link ``sub`` and the walk reported the outside
    folder's files as ``sub/deep/...``. The folder opened must be the one the walk saw there."""
    root = tmp_path / "t"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "sub" / "x.pkl").write_bytes(b"x")
    (root / "sub" / "deep" / "in.pkl").write_bytes(b"x")
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "secret.pkl").write_bytes(b"x")
    entries = walk(root, DEFAULT_LIMITS)
    first = next(entries)  # sub/x.pkl: sub is listed, sub/deep is next
    assert first.display.endswith("sub/x.pkl")
    (root / "sub").rename(tmp_path / "sub_old")
    os.symlink(outside, root / "sub")
    with pytest.raises(UsageError, match=r"cannot list .*replaced"):
        rest = [entry.display for entry in entries]
        assert not any("secret" in name for name in rest), rest  # before: sub/deep/secret.pkl


def test_the_root_replaced_before_it_is_listed_is_refused(tmp_path: Path) -> None:
    """The root is checked the same way: the folder listed is the one its lstat saw."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.pkl").write_bytes(b"x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.pkl").write_bytes(b"x")
    entries = walk(root, DEFAULT_LIMITS)
    real_lstat = Path.lstat

    def lstat_then_swap(self: Path) -> os.stat_result:
        found = real_lstat(self)
        if self == root:  # between the walk's lstat of the root and its listing
            root.rename(tmp_path / "t_old")
            other.rename(root)
        return found

    Path.lstat = lstat_then_swap  # type: ignore[method-assign]
    try:
        with pytest.raises(UsageError, match="replaced"):
            list(entries)
    finally:
        Path.lstat = real_lstat  # type: ignore[method-assign]
