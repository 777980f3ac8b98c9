"""The Hugging Face hub cache, read the way its loaders read it.

``huggingface_hub`` keeps every downloaded repository in ``<hub>/models--org--name/``::

    blobs/<sha256 or git sha1>          the bytes, named by hash
    refs/main                           the commit a revision name points to
    snapshots/<commit>/config.json  ->  ../../blobs/<hash>   (relative symlinks)
    .no_exist/<commit>/<name>           empty markers: "this file is not in the repo"

``from_pretrained``/``snapshot_download`` hand the loader ``snapshots/<commit>/``: the loader sees
the snapshot's file *names* (which decide what is a config, a template, remote code) and the
blobs' *bytes*. So a link under ``snapshots/`` whose target, fully resolved, is a regular file
inside the same repository folder is followed; any other link is not (a repository must not make
the scanner read files elsewhere on the machine).

Nothing here reads a file's content; it only resolves paths.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from airlock.errors import UsageError

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["BOOKKEEPING", "cache_link_target", "cache_repo", "hub_cache_dir", "resolve_hf_uri"]

#: ``models--org--name`` (also datasets and spaces): a repository folder of the hub cache
_REPO_NAME: Final = r"^(models|datasets|spaces)--[^/]+$"  # patterns compile on first use (re caches)
#: folders of the cache that hold bookkeeping (empty marker and lock files), never loaded
BOOKKEEPING: Final = frozenset({".no_exist", ".locks"})
_REVISION: Final = r"^[A-Za-z0-9._/-]{1,255}$"


def cache_repo(path: Path) -> Path | None:
    """The repository folder of the hub cache that ``path`` lies under, via ``snapshots/``.

    ``<repo>/snapshots/<commit>/...`` -> ``<repo>``; None for any other path. Decided by the
    names on the path (not resolved), as the loader builds it.
    """
    parts = path.absolute().parts
    for i in range(len(parts) - 3, -1, -1):
        if parts[i + 1] == "snapshots" and re.match(_REPO_NAME, parts[i]):
            return Path(*parts[: i + 1])
    return None


def cache_link_target(link: Path) -> Path | None:
    """Where the loader reads the bytes of ``link`` from, when it is a hub-cache snapshot link.

    The fully resolved target must be a regular file inside the same repository folder (in
    practice ``blobs/<hash>``); otherwise None and the link is treated as any other link.
    """
    repo = cache_repo(link)
    if repo is None:
        return None
    try:
        if not stat.S_ISLNK(link.lstat().st_mode):
            return None
        real_repo = Path(os.path.realpath(repo))
        target = Path(os.path.realpath(link))
        st = target.lstat()
    except (OSError, RuntimeError, ValueError):
        return None
    if real_repo not in target.parents or not stat.S_ISREG(st.st_mode):
        return None
    return target


def hub_cache_dir(env: dict[str, str] | None = None) -> Path:
    """The hub cache folder as ``huggingface_hub`` computes it: ``HF_HUB_CACHE``, else the older
    ``HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, with ``HF_HOME`` defaulting to
    ``$XDG_CACHE_HOME/huggingface`` and that to ``~/.cache/huggingface``."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(_expand(explicit))
    home = env.get("HF_HOME")
    if not home:
        xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(_expand(home)) / "hub"


def _expand(value: str) -> str:
    """``~`` and ``$VAR`` expanded, as huggingface_hub does for these variables."""
    return os.path.expandvars(os.path.expanduser(value))


def resolve_hf_uri(uri: str, env: dict[str, str] | None = None) -> Path:
    """``hf://org/name[@revision]`` -> the snapshot folder the loader would read, offline.

    The revision (default ``main``) is a name under ``refs/`` or a commit with a snapshot folder,
    exactly what ``from_pretrained(..., local_files_only=True)`` accepts. A repository or
    revision that is not in the local cache is a :class:`~airlock.errors.UsageError` (nothing is
    downloaded).
    """
    spec = uri.removeprefix("hf://")
    repo_id, _, revision = spec.partition("@")
    revision = revision or "main"
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", p) for p in parts):
        raise UsageError(f"{uri!r} is not hf://ORG/NAME[@REVISION]")
    if not re.match(_REVISION, revision) or ".." in revision.split("/"):
        raise UsageError(f"{uri!r}: revision {revision!r} is not a branch, tag or commit name")
    cache = hub_cache_dir(env)
    repo = cache / f"models--{parts[0]}--{parts[1]}"
    if not repo.is_dir():
        raise UsageError(
            f"{repo_id} is not in the local Hugging Face cache ({cache}; set HF_HUB_CACHE or HF_HOME to "
            "use another); airlock never downloads: fetch it first (huggingface-cli download)"
        )
    commit = revision
    ref = repo / "refs" / revision
    if ref.is_file() and not ref.is_symlink():
        try:
            commit = ref.read_text(encoding="ascii", errors="replace").strip()
        except OSError as exc:
            raise UsageError(f"cannot read {ref}: {exc.strerror}") from exc
    snapshot = repo / "snapshots" / commit
    if not re.fullmatch(r"[0-9a-f]{40}|[A-Za-z0-9._-]{1,255}", commit) or not snapshot.is_dir():
        known = (
            sorted(p.name for p in (repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
        )
        raise UsageError(
            f"revision {revision!r} of {repo_id} is not in the local cache {repo}"
            + (f" (snapshots there: {', '.join(known[:5])})" if known else " (no snapshots there)")
        )
    return snapshot
