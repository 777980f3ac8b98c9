"""ONNX external data: the file a tensor's ``location`` makes the loader open, checked on the file
system (``lstat``/``realpath``): a path that climbs out of the model folder, a symlink or a hard
link to a file outside it, a missing file, an offset/length past its end. Inside an archive the
file system cannot be checked, so external data there is unverifiable. The graph walk that finds
the tensors is ``onnx.py``'s.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Protocol

from airlock._formats.base import Issue, ReadContext
from airlock.results import Severity

__all__ = ["external_data", "location_problem"]

_DIGITS: Final = re.compile(r"[0-9]{1,20}")
_DRIVE: Final = re.compile(r"^[A-Za-z]:")
#: names kept in messages are cut to this many characters
_SHOW: Final = 200
#: entries visited when looking for a hard-linked file's other names inside the model folder
_MAX_LINK_SEARCH: Final = 100_000


class _State(Protocol):
    """What the graph walk keeps for one read: its context, names already reported, and the
    files already checked (location -> (resolved file, size), or None when it failed a check)."""

    ctx: ReadContext
    files: dict[str, tuple[Path, int] | None]

    def once(self, rule: str, key: str) -> bool: ...


def _show(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


def location_problem(location: str) -> str | None:
    """Why ``location`` escapes the folder it is relative to, or None for a plain relative path.

    Both separators count (a Windows loader splits on ``\\``), and a component of dots and spaces
    counts as ``..`` when it has two dots or more (Windows drops trailing dots and spaces).
    """
    if "\x00" in location:
        return "contains a NUL byte (C loaders cut the path there)"
    if location.startswith(("/", "\\")):
        return "is an absolute path"
    if _DRIVE.match(location):
        return "starts with a drive letter"
    for part in re.split(r"[/\\]", location):
        if part.count(".") >= 2 and not part.strip(". "):
            return f"has a {part!r} component that climbs out of the folder"
    return None


def external_data(
    entries: list[tuple[str, str, int]], tensor: str, where: str, offset: int, external: bool, state: _State
) -> Iterator[Issue]:
    label = f"tensor {_show(tensor)!r} in {where}"
    values: dict[str, list[str]] = {}
    for key, value, _ in entries:
        values.setdefault(key, []).append(value)
    for key, seen in values.items():
        if len(seen) > 1:
            yield Issue(
                "onnx.external-data-field",
                Severity.ERROR,
                f"{label}: external_data key {_show(key)!r} appears {len(seen)} times (expected once; "
                f"loaders disagree on which one wins)",
                offset=offset,
            )
    locations = values.get("location", [])
    if not locations:
        if external:
            yield Issue(
                "onnx.external-data-field",
                Severity.ERROR,
                f"{label}: data_location is EXTERNAL but no 'location' entry is given (expected one)",
                offset=offset,
            )
        return
    numbers: dict[str, int | None] = {}
    for key in ("offset", "length"):
        raw = values[key][-1] if key in values else None
        if raw is not None and not _DIGITS.fullmatch(raw):
            yield Issue(
                "onnx.external-data-field",
                Severity.ERROR,
                f"{label}: external_data {key} {_show(raw)!r} is not a plain decimal number (expected digits only)",
                offset=offset,
            )
            return
        numbers[key] = None if raw is None else int(raw)
    for location in locations:
        yield from _check_location(location, label, offset, numbers["offset"], numbers["length"], state)


def _check_location(
    location: str, label: str, offset: int, start: int | None, length: int | None, state: _State
) -> Iterator[Issue]:
    shown = _show(location)
    problem = location_problem(location)
    if problem is not None:
        if state.once("onnx.external-data-traversal", location):
            yield Issue(
                "onnx.external-data-traversal",
                Severity.MALICIOUS,
                f"{label}: external data location {shown!r} {problem}: the loader would read a file outside "
                f"the model folder (expected a plain relative path inside it)",
                offset=offset,
                evidence=shown,
            )
        return
    if not location or ":" in location or "\\" in location:
        if state.once("onnx.external-data-path", location):
            yield Issue(
                "onnx.external-data-path",
                Severity.ERROR,
                f"{label}: external data location {shown!r} is empty or holds ':' or '\\' "
                f"(expected a plain relative path with '/' separators)",
                offset=offset,
                evidence=shown,
            )
        return
    ctx = state.ctx
    if not ctx.on_disk:
        if state.once("onnx.external-data-unverifiable", location):
            yield Issue(
                "onnx.external-data-unverifiable",
                Severity.SUSPICIOUS,
                f"{label}: external data file {shown!r} is referenced from inside an archive, so its links "
                f"and size cannot be checked (expected the model unpacked in a folder)",
                offset=offset,
                evidence=shown,
            )
        return
    if location not in state.files:
        issues: list[Issue] = []
        state.files[location] = _check_file(location, label, offset, ctx, issues)
        yield from issues
    checked = state.files[location]
    if checked is None:
        return
    _, size = checked
    first = start or 0
    if first > size or (length is not None and length > size - first):
        end = "the end" if length is None else first + length
        yield Issue(
            "onnx.external-data-bounds",
            Severity.ERROR,
            f"{label}: external data {shown!r} bytes {first}..{end} lie beyond its size {size} "
            f"(expected offset + length <= file size)",
            offset=offset,
            evidence=shown,
        )


def _check_file(
    location: str, label: str, offset: int, ctx: ReadContext, out: list[Issue]
) -> tuple[Path, int] | None:
    """Resolve ``location`` next to the model; append findings; the file and size when usable."""
    shown = _show(location)
    folder = ctx.file_path.parent
    real_folder = Path(os.path.realpath(folder))
    target = folder / location
    real = Path(os.path.realpath(target))
    if real != real_folder and real_folder not in real.parents:
        out.append(
            Issue(
                "onnx.external-data-symlink",
                Severity.MALICIOUS,
                f"{label}: external data location {shown!r} resolves through a symlink to {_show(str(real))!r}, "
                f"outside the model folder {_show(str(real_folder))!r} (expected a file inside it)",
                offset=offset,
                evidence=shown,
            )
        )
        return None
    try:
        st = os.stat(real)
    except OSError as exc:
        out.append(
            Issue(
                "onnx.external-data-missing",
                Severity.ERROR,
                f"{label}: external data file {shown!r} cannot be read: {exc.strerror} (expected a file next to the model)",
                offset=offset,
                evidence=shown,
            )
        )
        return None
    if not stat.S_ISREG(st.st_mode):
        out.append(
            Issue(
                "onnx.external-data-missing",
                Severity.ERROR,
                f"{label}: external data {shown!r} is not a regular file (expected a file next to the model)",
                offset=offset,
                evidence=shown,
            )
        )
        return None
    if st.st_nlink > 1:
        inside = _names_inside(real_folder, st, ctx)
        if inside is None:
            out.append(
                Issue(
                    "onnx.external-data-hardlink",
                    Severity.SUSPICIOUS,
                    f"{label}: external data file {shown!r} has {st.st_nlink} hard links and the model folder is "
                    f"too large to account for them (expected one name, or all names inside the folder)",
                    offset=offset,
                    evidence=shown,
                )
            )
        elif inside < st.st_nlink:
            out.append(
                Issue(
                    "onnx.external-data-hardlink",
                    Severity.MALICIOUS,
                    f"{label}: external data file {shown!r} is a hard link with {st.st_nlink} names, only {inside} "
                    f"of them inside the model folder: it is a file from outside the folder (expected a file "
                    f"that belongs to the model)",
                    offset=offset,
                    evidence=shown,
                )
            )
            return None
    return real, st.st_size


def _names_inside(folder: Path, target: os.stat_result, ctx: ReadContext) -> int | None:
    """How many names below ``folder`` (links not followed) are the file ``target``; None if the
    folder holds more than ``_MAX_LINK_SEARCH`` entries."""
    count = 0
    seen = 0
    stack = [folder]
    while stack:
        ctx.check_time()
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > _MAX_LINK_SEARCH:
                return None
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
            elif st.st_ino == target.st_ino and st.st_dev == target.st_dev:
                count += 1
    return count
