"""Walk the paths to scan without following links or opening special files."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from airlock._formats.hf_cache import BOOKKEEPING, cache_link_target, cache_repo
from airlock._render import shown_name
from airlock.errors import LimitError, UsageError
from airlock.limits import Limits

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, NamedTuple
else:
    from airlock._record import NamedTuple

__all__ = ["Entry", "walk"]


class Entry(NamedTuple):
    """A path met while walking. ``kind`` is ``file``, ``symlink``, ``special``, ``bookkeeping``
    (a folder of the Hugging Face cache for markers and locks, never loaded: its empty files are
    not listed, any other file in it is an entry of its own kind) or ``unlistable`` (a folder below
    the root that this user may not list)."""

    path: Path
    display: str
    kind: str
    #: for symlinks: where the link points and whether that stays inside the scanned tree
    target: str | None = None
    inside: bool = True
    #: for a Hugging Face cache snapshot link (kind ``file``): the blob whose bytes the loader reads
    blob: Path | None = None
    #: for a regular file (kind ``file``, no ``blob``): its size when the walk saw it
    size: int = 0
    #: the folder listed that holds it (``path.parent``, the walk's own object: one per folder);
    #: None for the root itself
    folder: Path | None = None


#: ``folder / name`` for a name ``os.scandir`` gave (never empty, ``.``, ``..`` or with a slash)
#: without pathlib parsing the name again (2,000 files: ~2.5 ms): CPython's own child constructor,
#: which its glob uses; where a Python has none, the division (tests/scan/test_walk_paths.py
#: compares the two)
_child = getattr(Path, "_make_child_relpath", None) or Path.__truediv__

#: list a folder through a descriptor of it (``os.scandir(fd)``: its entries' ``stat`` is then an
#: ``fstatat`` relative to it) where the platform can
_BY_DESCRIPTOR: Final = (
    os.scandir in os.supports_fd and hasattr(os, "O_DIRECTORY") and hasattr(os, "O_NOFOLLOW")
)
_OPEN_FOLDER: Final = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


class _Replaced(Exception):
    """A folder opened for listing is not the one the walk saw at its path."""


def _display(path: Path, root: Path, root_is_dir: bool) -> str:
    if not root_is_dir:
        return str(path)
    rel = path.relative_to(root).as_posix()
    return f"{root.as_posix().rstrip('/')}/{rel}"


def walk(root: Path, limits: Limits) -> Iterator[Entry]:
    """Yield every file, symlink and special file below ``root`` (or ``root`` itself), sorted.

    Symlinks are reported, never followed: following them would let a model folder make the
    scanner read (and report on) files outside it, and would let a link swap the bytes that get
    loaded after the scan. The one exception is the Hugging Face hub cache, where every file a
    loader opens is a link ``snapshots/<commit>/<name> -> ../../blobs/<hash>``: such a link is a
    ``file`` entry named by the link and read from the blob, when the resolved blob is a regular
    file inside the same cache repository (``hf_cache.cache_link_target``).
    """
    try:
        st = root.lstat()
    except OSError as exc:
        raise UsageError(f"cannot read {root}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISLNK(st.st_mode) and cache_link_target(root) is None:
            # A link named on the command line is the file the caller chose, and what load and
            # convert read through: scan the regular file it points to, under the name given.
            # (Links met inside a scanned folder are still never followed; a Hugging Face cache
            # link is an entry of its own below, named by the link and read from its blob.)
            with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: a loop, before Python 3.13
                target = root.resolve(strict=True)
                target_st = target.stat()
                if stat.S_ISREG(target_st.st_mode):
                    yield Entry(target, str(root), "file", size=target_st.st_size)
                    return
        yield _entry(root, st, _display(root, root, False), root.parent.resolve())
        return
    count = 0
    real_root = root.resolve()
    #: (folder, inside a bookkeeping folder of the Hugging Face cache, the display of its children
    #: before their names: ``_display`` of the folder and a slash, built once per folder, and the
    #: (device, inode) the folder had where it was seen: the root's lstat, its parent's listing)
    stack = [(root, False, f"{root.as_posix().rstrip('/')}/", (st.st_dev, st.st_ino))]
    while stack:
        folder, bookkeeping, shown, seen = stack.pop()
        # Listed through a descriptor of the folder (opened without following a link: a folder
        # swapped for a link after its parent was listed is refused, never walked into), each
        # child's lstat is then relative to it: no lookup of the whole path again per file
        # (2,000 files: ~1.3 ms), and every child is looked up in the folder that was listed.
        # O_NOFOLLOW guards the last name of the path only: a folder *above* it swapped for a
        # link (sub -> elsewhere, after sub/ was listed) would still lead the open of sub/deep
        # elsewhere. So the folder opened must be the one seen (its device and inode), whatever
        # any name on its path became meanwhile.
        listed = -1
        try:
            if _BY_DESCRIPTOR:
                listed = os.open(folder, _OPEN_FOLDER)
                opened = os.fstat(listed)
                if (opened.st_dev, opened.st_ino) != seen:
                    raise _Replaced
            with os.scandir(folder if listed < 0 else listed) as it:
                children = sorted(it, key=lambda e: e.name)
        except (OSError, _Replaced) as exc:
            if listed >= 0:
                os.close(listed)
            if isinstance(exc, PermissionError) and folder is not root:
                # A folder below the root that this user may not list is an entry of its own (an
                # ERROR in the report), as an unreadable file is, and the walk goes on: ending the
                # scan here (exit 2, no report) hid every other file of the tree, a MALICIOUS one
                # too (outside review 27). A folder replaced while walked still ends the scan.
                yield Entry(folder, shown[:-1], "unlistable", folder=folder.parent)
                continue
            why = exc.strerror if isinstance(exc, OSError) else "it was replaced while the tree was walked"
            # the folder's name is the tree's text: shown as one name, never as lines of its own
            raise UsageError(f"cannot list {shown_name(str(folder))}: {why}") from exc
        subdirs: list[tuple[Path, bool, str, tuple[int, int]]] = []
        try:
            for child in children:
                count += 1
                if count > limits.max_files:
                    raise LimitError(f"folder holds more than {limits.max_files} entries (limit max_files)")
                path: Path = _child(folder, child.name)
                display = shown + child.name  # _display(path, root, True), without pathlib's parsing
                cst = child.stat(follow_symlinks=False)
                if stat.S_ISREG(cst.st_mode) and not bookkeeping:
                    # the usual entry, built with every field given (no keyword binding)
                    yield Entry(path, display, "file", None, True, None, cst.st_size, folder)
                elif stat.S_ISDIR(cst.st_mode):
                    if not bookkeeping and child.name in BOOKKEEPING and _in_cache(path):
                        yield Entry(path, display, "bookkeeping")
                        subdirs.append((path, True, f"{display}/", (cst.st_dev, cst.st_ino)))
                    else:
                        subdirs.append((path, bookkeeping, f"{display}/", (cst.st_dev, cst.st_ino)))
                elif bookkeeping and stat.S_ISREG(cst.st_mode) and cst.st_size == 0:
                    continue  # a marker or a lock: empty, never loaded (covered by the folder's entry)
                else:
                    # Bookkeeping is verified, not assumed from the folder's name: anything in it that
                    # is not an empty marker (bytes, a link, a device) is scanned like any other file;
                    # a link elsewhere in the model may point at it.
                    yield _entry(path, cst, display, real_root, folder)
        finally:
            if listed >= 0:
                os.close(listed)  # the children's stat() reads through it: closed after the last
        stack.extend(reversed(subdirs))


def _entry(
    path: Path, st: os.stat_result, display: str, real_root: Path, folder: Path | None = None
) -> Entry:
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        blob = cache_link_target(path)
        if blob is not None:
            return Entry(path, display, "file", target=target, blob=blob, folder=folder)
        resolved = _resolved(path)
        if resolved is None:  # a loop: it names no file, no loader can open it, nothing is followed
            return Entry(path, display, "symlink", target=target, inside=False, folder=folder)
        # Under a cache snapshot the hub client only ever links files to blobs of the repository:
        # any other link there (to a folder, to a link elsewhere) is not "scanned in place" even
        # when its target lies in the scanned tree, because the target's names (blobs/<x>/...)
        # are not the names the loader opens (snapshots/<commit>/custom_generate/...).
        inside = cache_repo(path) is None and (resolved == real_root or real_root in resolved.parents)
        return Entry(path, display, "symlink", target=target, inside=inside, folder=folder)
    if stat.S_ISREG(st.st_mode):
        return Entry(path, display, "file", size=st.st_size, folder=folder)
    return Entry(path, display, "special", folder=folder)


def _resolved(path: Path) -> Path | None:
    """``path.resolve()``, or None for a link that loops (``a -> b -> a``, or one through itself):
    Python raises RuntimeError for it before 3.13, OSError (ELOOP) since; either escaped the walk
    and ended the whole scan with a traceback and no report (outside review 27)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _in_cache(folder: Path) -> bool:
    """``<repo>/.no_exist`` or ``<hub>/.locks``: bookkeeping of the Hugging Face hub cache."""
    parent = folder.parent
    if folder.name == ".no_exist":
        return (parent / "snapshots").is_dir() and cache_repo(
            parent / "snapshots" / "x" / "y"
        ) == parent.absolute()
    try:
        with os.scandir(parent) as it:
            return any(cache_repo(Path(e.path) / "snapshots" / "x" / "y") is not None for e in it)
    except OSError:
        return False
