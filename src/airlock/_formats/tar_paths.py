"""Where an extracting loader would write each tar member, and which links it would follow.

``tarfile.extractall`` without a filter (``filter='fully_trusted'``, the only behaviour before
Python 3.12 and the default until 3.14), GNU tar with ``-P`` and many ad-hoc loaders join each
member's name to the target folder as it is: an absolute name is written where it points, ``..``
climbs out, a symbolic link is created with whatever target it names, and a later regular member
whose path goes through (or lands on) an earlier link is written *through* it, because ``open(...,
"wb")`` follows links. A hard link's target is a path from the extraction folder that
``os.link`` follows.

The check simulates that extraction on the names alone, in archive order: paths are resolved
component by component, following the archive's own symbolic links (at most 40 per path, Linux's
``ELOOP`` bound), so chains of links that each look harmless alone (``a -> .``, then ``b -> a/..``)
are resolved as the kernel would. Backslashes count as separators and ``C:`` as absolute (a Windows
extractor). Findings (MALICIOUS: nothing an ordinary model archive needs does this):

* ``tar.bad-name`` — the name is absolute or climbs out of the folder with ``..``;
* ``tar.link-escape`` — a link whose target resolves outside the folder;
* ``tar.link-write`` — a member written through an earlier link member.

Links that stay inside the folder and are never written through are ``tar.link`` (SUSPICIOUS).
"""

from __future__ import annotations

import re
import tarfile
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final, NamedTuple

from airlock._formats.base import Issue
from airlock.results import Severity

__all__ = ["extraction_issues"]

#: symbolic links the kernel follows in one path lookup before it fails with ELOOP
_MAX_HOPS: Final = 40
#: Linux's PATH_MAX: a longer path cannot be opened
_PATH_MAX: Final = 4096
#: path components resolved for one path (names and link targets can be megabytes in pax headers)
_MAX_STEPS: Final = 4096
_SEPARATORS: Final = re.compile(r"[/\\]")
_DRIVE: Final = re.compile(r"[A-Za-z]:")


class _Landing(NamedTuple):
    #: the path inside the folder, or None when it leaves the folder
    parts: tuple[str, ...] | None
    #: the first link followed on the way (its normalised name), if any
    via: str | None
    #: True when resolution gave up after _MAX_HOPS links (ELOOP: the write fails)
    loop: bool = False


def _absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or _DRIVE.match(path) is not None


def _walk(start: tuple[str, ...], path: str, links: dict[str, str], *, follow_last: bool) -> _Landing:
    """Resolve ``path`` from the folder ``start`` as the kernel would after extracting ``links``."""
    if _absolute(path):
        return _Landing(None, None)
    todo = deque(_SEPARATORS.split(path))
    # stack[i] is the key of the i-th folder level ("a", "a/b", ...): built once per component
    stack: list[str] = []
    for part in start:
        stack.append(f"{stack[-1]}/{part}" if stack else part)
    via: str | None = None
    hops = steps = 0
    while todo:
        steps += 1
        if steps > _MAX_STEPS:
            return _Landing(None, via, loop=True)  # unresolvable within the bound: never "inside"
        part = todo.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return _Landing(None, via)
            stack.pop()
            continue
        key = f"{stack[-1]}/{part}" if stack else part
        if len(key) > _PATH_MAX:
            return _Landing(None, via, loop=True)  # the kernel fails with ENAMETOOLONG: never "inside"
        target = links.get(key)
        if target is None or not (follow_last or any(p not in ("", ".") for p in todo)):
            stack.append(key)
            continue
        hops += 1
        if hops > _MAX_HOPS:
            return _Landing(None, via, loop=True)
        via = via or key
        if _absolute(target):
            return _Landing(None, via)
        todo.extendleft(reversed(_SEPARATORS.split(target)))
    return _Landing(tuple(stack[-1].split("/")) if stack else (), via)


def _kind(info: tarfile.TarInfo) -> str:
    return "symbolic link" if info.issym() else "hard link"


def extraction_issues(
    members: list[tarfile.TarInfo], check_time: Callable[[], None] = lambda: None
) -> Iterator[Issue]:
    """The findings above, for members in archive order (``check_time`` is called per member)."""
    all_links: dict[str, str] = {}
    for info in members:
        if info.issym():
            name = _walk((), info.name, {}, follow_last=False).parts
            if name is not None:
                all_links["/".join(name)] = info.linkname
    symlinks: dict[str, str] = {}
    hardlinks: dict[str, str] = {}
    for info in members:
        check_time()
        lexical = _walk((), info.name, {}, follow_last=False).parts
        if lexical is None:
            yield Issue(
                "tar.bad-name",
                Severity.MALICIOUS,
                f"member name {info.name!r} is absolute or climbs out of the extraction folder with '..': "
                "tarfile.extractall without a filter (and other extracting loaders) write it outside",
                offset=info.offset,
                evidence=info.name,
            )
        else:
            yield from _write_through(info, symlinks, hardlinks)
        if info.issym() or info.islnk():
            yield _link_issue(info, lexical, all_links)
            if lexical is not None:
                key = "/".join(lexical)
                (symlinks if info.issym() else hardlinks)[key] = info.linkname


def _write_through(
    info: tarfile.TarInfo, symlinks: dict[str, str], hardlinks: dict[str, str]
) -> Iterator[Issue]:
    # A new link replaces an existing symlink at its own name (tarfile unlinks it first); every
    # other member follows a link at its last component too (open(..., "wb") follows links).
    follow_last = not (info.issym() or info.islnk() or info.isdir())
    landing = _walk((), info.name, symlinks, follow_last=follow_last)
    via = landing.via
    kind = "symbolic link"
    if via is None and landing.parts is not None and follow_last and info.isreg():
        key = "/".join(landing.parts)
        if key in hardlinks:
            via, kind = key, "hard link"
    if via is None:
        return
    target = symlinks.get(via, hardlinks.get(via, ""))
    where = "outside the extraction folder" if landing.parts is None else f"to {'/'.join(landing.parts)!r}"
    if landing.loop:
        where = "into a loop of links"
    yield Issue(
        "tar.link-write",
        Severity.MALICIOUS,
        f"member {info.name!r} is extracted through the earlier {kind} {via!r} -> {target!r}, "
        f"so it is written {where}",
        offset=info.offset,
        evidence=info.name,
    )


def _link_issue(info: tarfile.TarInfo, lexical: tuple[str, ...] | None, links: dict[str, str]) -> Issue:
    if info.issym():
        start = lexical[:-1] if lexical else ()
        landing = _walk(start, info.linkname, links, follow_last=True)
    else:
        landing = _walk((), info.linkname, links, follow_last=True)
    if landing.parts is not None or landing.loop:
        return Issue(
            "tar.link",
            Severity.SUSPICIOUS,
            f"member {info.name!r} is a {_kind(info)} to {info.linkname!r}: an extracting loader would follow it",
            offset=info.offset,
        )
    return Issue(
        "tar.link-escape",
        Severity.MALICIOUS,
        f"member {info.name!r} is a {_kind(info)} to {info.linkname!r}, which resolves outside the "
        "extraction folder: an extracting loader creates it, and what is written or read through it "
        "reaches files elsewhere",
        offset=info.offset,
        evidence=info.linkname,
    )
