"""List the regular files under a root, in canonical order, without following anything by surprise.

Symbolic links and special files (FIFOs, sockets, devices) are not hashed: they are reported as
problems, and the caller turns them into an itemised ``IntegrityError``. With ``allow_symlinks`` a link
to a regular file is followed (its target's bytes are hashed under the link's name); a link to a
directory never is (loops, and trees that grow without bound).
"""

from __future__ import annotations

import itertools
import os
import stat
from dataclasses import dataclass

from airlock.errors import LimitError, UsageError
from airlock.integrity._params import HashLimits, HashParams

__all__ = ["FileRef", "Tree", "is_excluded", "path_sort_key", "walk"]

#: the relative name of the single entry when the root is one file (what OMS signers record)
SINGLE_FILE_NAME = "."


@dataclass(frozen=True)
class FileRef:
    """One regular file to hash, and the identity it had when listed (checked again when opened)."""

    rel: str
    abspath: str
    size: int
    dev: int
    ino: int
    mtime_ns: int
    ctime_ns: int
    via_symlink: bool


@dataclass(frozen=True)
class Tree:
    """What a walk found: the files (canonical order) and the problems (each one line, sorted)."""

    root: str
    name: str
    is_single_file: bool
    files: tuple[FileRef, ...]
    problems: tuple[str, ...]


def path_sort_key(rel: str) -> tuple[str, ...]:
    """Order by path components (``a/b`` before ``a.b``), as OMS signers order their resources."""
    return tuple(rel.split("/"))


def is_excluded(rel: str, excluded: tuple[str, ...]) -> bool:
    return any(rel == ex or rel.startswith(ex + "/") for ex in excluded)


def _check_name(rel: str, limits: HashLimits) -> str | None:
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:
        return f"unreadable name: {rel.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8"
    if len(encoded) > limits.max_path_bytes:
        return f"name too long: {rel[:80]}... is {len(encoded)} bytes (limit {limits.max_path_bytes})"
    return None


def _ref(rel: str, abspath: str, st: os.stat_result, via_symlink: bool) -> FileRef:
    return FileRef(
        rel, abspath, st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, via_symlink
    )


def _classify(
    rel: str, abspath: str, lst: os.stat_result, params: HashParams
) -> tuple[FileRef | None, str | None, bool]:
    """Return (file, problem, descend) for one directory entry given its lstat."""
    mode = lst.st_mode
    if stat.S_ISREG(mode):
        return _ref(rel, abspath, lst, False), None, False
    if stat.S_ISDIR(mode):
        return None, None, True
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(abspath)
        except OSError as exc:
            target = f"<unreadable: {exc.strerror}>"
        if not params.allow_symlinks:
            return None, f"symlink: {rel} -> {target}", False
        try:
            st = os.stat(abspath)
        except OSError:
            return None, f"broken symlink: {rel} -> {target}", False
        if stat.S_ISREG(st.st_mode):
            return _ref(rel, abspath, st, True), None, False
        return None, f"symlink to a non-regular file: {rel} -> {target}", False
    kind = "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
    return None, f"special file ({kind}): {rel}", False


def walk(root: str | os.PathLike[str], params: HashParams, limits: HashLimits) -> Tree:
    """List every regular file under ``root`` (or ``root`` itself if it is a file)."""
    root_str = os.path.abspath(os.fspath(root))
    try:
        root_lst = os.lstat(root_str)
    except FileNotFoundError as exc:
        raise UsageError(f"path does not exist: {os.fspath(root)}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {os.fspath(root)}: {exc.strerror}") from exc
    name = os.path.basename(root_str.rstrip("/")) or "/"
    root_mode = root_lst.st_mode
    if stat.S_ISLNK(root_mode):
        if not params.allow_symlinks:
            return Tree(root_str, name, True, (), (f"symlink: {name} -> {os.readlink(root_str)}",))
        root_mode = os.stat(root_str).st_mode
    if not stat.S_ISDIR(root_mode):
        ref, problem, _ = _classify(SINGLE_FILE_NAME, root_str, root_lst, params)
        return Tree(root_str, name, True, (ref,) if ref else (), (problem,) if problem else ())

    files: list[FileRef] = []
    problems: list[str] = []
    stack: list[tuple[str, str, int]] = [(root_str, "", 0)]
    #: entries listed so far: files, folders, links and special files all count against
    #: ``max_files`` (as in the scanner's walk), so a tree of empty folders or of links is bounded
    #: too, and no listing holds more than what is left of the limit
    listed = 0
    while stack:
        dir_abs, dir_rel, depth = stack.pop()
        if depth > limits.max_depth:
            raise LimitError(f"directory depth limit: {dir_rel} is deeper than {limits.max_depth} levels")
        left = limits.max_files - listed
        try:
            with os.scandir(dir_abs) as it:
                entries = list(itertools.islice(it, left + 1))
        except OSError as exc:
            problems.append(f"unreadable directory: {dir_rel or '.'} ({exc.strerror})")
            continue
        listed += len(entries)
        if listed > limits.max_files:
            raise LimitError(
                f"file count limit: more than {limits.max_files} files under {name} "
                "(folders, links and special files count too)"
            )
        for entry in entries:
            rel = f"{dir_rel}/{entry.name}" if dir_rel else entry.name
            if is_excluded(rel, params.excluded):
                continue
            name_problem = _check_name(rel, limits)
            if name_problem:
                problems.append(name_problem)
                continue
            try:
                lst = entry.stat(follow_symlinks=False)
            except OSError as exc:
                problems.append(f"unreadable: {rel} ({exc.strerror})")
                continue
            ref, problem, descend = _classify(rel, entry.path, lst, params)
            if problem:
                problems.append(problem)
            if ref:
                files.append(ref)
            if descend:
                stack.append((entry.path, rel, depth + 1))
    files.sort(key=lambda f: path_sort_key(f.rel))
    return Tree(root_str, name, False, tuple(files), tuple(sorted(problems)))
