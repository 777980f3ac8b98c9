"""Hugging Face model folders: what ``from_pretrained`` reads besides the weights.

A folder is treated as a Hugging Face model when it, or any folder above it up to the scanned one, holds a file some
Hugging Face loader reads (:data:`HF_FILES`: ``config.json``, ``tokenizer.json``,
``model_index.json`` ...) or a ``*.index.json`` shard index. ``*.jinja`` templates and the files in
:data:`HF_FILES` are analysed in every folder. Then:

* ``config.json`` / ``tokenizer_config.json`` / other ``*.json`` must parse as strict JSON
  (``hf.json``, ERROR otherwise).
* ``auto_map`` entries and the other config keys that make a loader import code
  (``hf_code_refs.py``) are yielded as ``CodeReference`` facts; ``_analysis/hf_refs.py`` judges
  them (remote code, modules outside the loader's profile, paths that leave the folder).
* Every ``*.py`` file is executable code ``trust_remote_code`` may import: its source is yielded
  as a ``PythonSource`` fact, which the analysis reports as remote code, MALICIOUS when it calls
  a process/exec/network primitive at import time.
* Chat templates (``chat_template`` in tokenizer_config.json, ``chat_template.jinja``,
  ``chat_template.json``, other ``*.jinja``) are yielded as ``Template`` facts, analysed by the
  scan without rendering.
* Shard indexes: every ``weight_map`` file must be a plain name inside the folder
  (``hf.index-traversal``, MALICIOUS) and exist (``hf.index-missing``, ERROR).

Files the check analysed completely get an INFO ``hf.analysed`` finding, so the scan reports them
(CLEAN when nothing else is wrong) instead of listing them as skipped. Files are opened without
following links and read only up to ``Limits.max_header_bytes``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from airlock._formats.base import (
    CodeReference,
    FolderFact,
    Issue,
    PythonSource,
    ReadContext,
    Template,
    read_folder_file,
)
from airlock._formats.hf_cache import cache_link_target
from airlock._formats.hf_code_refs import (
    auto_map,
    auto_maps,
    custom_pipelines,
    model_index,
    peft,
    present,
    sentence_transformers,
)
from airlock._formats.registry import HF_FOLDER_SUFFIXES
from airlock.errors import FormatError, IntegrityError
from airlock.results import Severity

#: ``typing.TYPE_CHECKING`` without importing ``typing``: every folder scan imports this module,
#: most find no file it analyses (then neither ``typing`` nor ``json`` is imported: ~3 ms)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["ANALYSED", "HFFolderCheck"]

#: rule of the INFO finding that marks a file as analysed by the folder check
ANALYSED: Final = "hf.analysed"
_MARKERS: Final = ("config.json", "tokenizer_config.json")
#: Files that some Hugging Face loader (transformers, diffusers, sentence-transformers, peft) reads
#: from a model folder: any one of them makes the folder a Hugging Face folder.
HF_FILES: Final = frozenset(
    """config.json tokenizer_config.json tokenizer.json special_tokens_map.json added_tokens.json
    generation_config.json preprocessor_config.json processor_config.json chat_template.json
    chat_template.jinja video_preprocessor_config.json feature_extractor_config.json
    image_processor_config.json model_index.json scheduler_config.json adapter_config.json
    modules.json config_sentence_transformers.json sentence_bert_config.json""".split()
)


class HFFolderCheck:
    name = "hf-folder"

    def check(self, folder: Path, ctx: ReadContext) -> Iterator[tuple[str, FolderFact]]:
        try:
            with os.scandir(folder) as listing:
                children = list(listing)
        except OSError:
            return
        if not any(e.name.endswith(HF_FOLDER_SUFFIXES) for e in children):
            return  # nothing below would be analysed: skip building a Path per file (2,000 of them: ~5 ms)
        children.sort(key=lambda e: e.name)
        files: dict[str, Path] = {}
        for e in children:
            if e.is_file(follow_symlinks=False):
                files[e.name] = Path(e.path)
            elif e.is_symlink():
                # The loader opens the link's name and reads its target: a Hugging Face cache
                # snapshot link (the blob) or a link to a file inside the scanned folder is
                # analysed under the link's name (config.json -> notes.txt is a config.json).
                target = cache_link_target(Path(e.path)) or _inside_link_target(Path(e.path), ctx.root)
                if target is not None:
                    files[e.name] = target
        # A folder of a Hugging Face model: it, or a folder above it up to the scanned folder
        # (diffusers components, custom_generate/, and whatever a link inside the model names as
        # such a subfolder: custom_generate -> deep/er), holds a file that some from_pretrained reads.
        hf = _is_hf(files.keys()) or _hf_above(folder, ctx.root)
        for name, path in files.items():
            ctx.check_time()
            if not name.endswith(HF_FOLDER_SUFFIXES):
                continue  # the registry runs this check for one file only when its name ends so
            if name.endswith(".jinja"):
                # Loaders read templates wherever they are (chat_template.jinja,
                # additional_chat_templates/*.jinja): never skipped, whatever the folder holds.
                yield from _template_file(name, path, folder, ctx)
            elif name.endswith(".py") and hf:
                yield from _python_file(name, path, folder, ctx)
            elif name.endswith(".json") and (hf or name in HF_FILES):
                yield from _json_file(name, path, folder, files, ctx)


def _inside_link_target(link: Path, root: Path) -> Path | None:
    """The regular file a link resolves to when it stays inside ``root``; None otherwise (a link
    that leaves the scanned folder is reported by the scan and never read)."""
    try:
        real_root = Path(os.path.realpath(root))
        target = Path(os.path.realpath(link))
        st = target.lstat()
    except (OSError, RuntimeError, ValueError):
        return None
    if real_root not in target.parents or not stat.S_ISREG(st.st_mode):
        return None
    return target


def _is_hf(names: Iterable[str]) -> bool:
    return any(n in HF_FILES or n.endswith(".index.json") for n in names)


def _hf_above(folder: Path, root: Path) -> bool:
    """True when a folder between ``folder`` (excluded) and ``root`` (included) is a Hugging Face
    folder. A subfolder at any depth can be what a loader opens under another name (a link
    inside the model), so depth alone never makes its code or configs unanalysed."""
    try:
        folder.relative_to(root)
    except ValueError:
        return False
    current = folder
    while current not in (root, current.parent):
        current = current.parent
        if _is_hf(_names(current)):
            return True
    return False


def _names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it]
    except OSError:
        return []


def _read(name: str, path: Path, folder: Path, ctx: ReadContext) -> bytes:
    """The bytes of ``folder/name`` (``path``: what it resolves to, a link's target), bounded by
    max_header_bytes; in a verified scan the verified bytes (``read_folder_file``)."""
    return read_folder_file(folder / name, ctx, path)


def _changed(name: str, exc: IntegrityError) -> tuple[str, Issue]:
    return name, Issue("integrity.changed", Severity.ERROR, f"{name}: {exc}; not analysed")


def _analysed(name: str, what: str) -> tuple[str, Issue]:
    return name, Issue(ANALYSED, Severity.INFO, f"{what} (analysed by the Hugging Face folder check)")


def _json_file(
    name: str, path: Path, folder: Path, files: dict[str, Path], ctx: ReadContext
) -> Iterator[tuple[str, Issue | Template | CodeReference]]:
    from airlock._strictjson import parse_json_strict  # json: only when a config is read

    try:
        value = parse_json_strict(_read(name, path, folder, ctx), name)
    except IntegrityError as exc:
        yield _changed(name, exc)
        return
    except (FormatError, OSError) as exc:
        yield name, Issue("hf.json", Severity.ERROR, f"{name}: {exc}; transformers cannot load it")
        return
    yield _analysed(name, "JSON parsed")
    if name == "modules.json" and isinstance(value, list):
        yield from sentence_transformers(name, value, files)
        return
    if not isinstance(value, dict):
        if name in _MARKERS:
            yield (
                name,
                Issue(
                    "hf.json",
                    Severity.ERROR,
                    f"{name}: top level is a JSON {type(value).__name__}, expected an object",
                ),
            )
        return
    for where, found in auto_maps(value):
        yield from auto_map(name, found, files, where)
    custom = value.get("custom_pipelines")
    if custom is not None:
        yield from custom_pipelines(name, custom, files)
    if name == "model_index.json":
        yield from model_index(name, value, folder)
    if name == "adapter_config.json":
        yield from peft(name, value.get("auto_mapping"))
    if name in ("tokenizer_config.json", "chat_template.json", "processor_config.json"):
        yield from _chat_templates(name, value.get("chat_template"))
    if name.endswith(".index.json"):
        yield from _index(name, value, folder, files)


def _chat_templates(name: str, template: object) -> Iterator[tuple[str, Issue | Template]]:
    if template is None:
        return
    if isinstance(template, str):
        yield name, Template(f"{name} chat_template", template, None)
        return
    if isinstance(template, list):
        for index, entry in enumerate(template):
            if isinstance(entry, dict) and isinstance(entry.get("template"), str):
                label = f"{name} chat_template[{entry.get('name', index)!r:.40}]"
                yield name, Template(label, entry["template"], None)
            else:
                yield (
                    name,
                    Issue(
                        "hf.json", Severity.ERROR, f"{name}: chat_template[{index}] is not {{name, template}}"
                    ),
                )
        return
    yield (
        name,
        Issue(
            "hf.json",
            Severity.ERROR,
            f"{name}: chat_template is a JSON {type(template).__name__}, expected a string",
        ),
    )


def _template_file(
    name: str, path: Path, folder: Path, ctx: ReadContext
) -> Iterator[tuple[str, Issue | Template]]:
    try:
        text = _read(name, path, folder, ctx).decode("utf-8")
    except IntegrityError as exc:
        yield _changed(name, exc)
        return
    except (FormatError, OSError, UnicodeDecodeError) as exc:
        yield name, Issue("template.parse", Severity.ERROR, f"{name}: cannot read as a UTF-8 template: {exc}")
        return
    yield _analysed(name, "Jinja template parsed, not rendered")
    yield name, Template(name, text, None)


def _python_file(
    name: str, path: Path, folder: Path, ctx: ReadContext
) -> Iterator[tuple[str, Issue | PythonSource]]:
    try:
        source = _read(name, path, folder, ctx)
    except IntegrityError as exc:
        yield _changed(name, exc)
        return
    except (FormatError, OSError) as exc:
        yield name, Issue("hf.python-parse", Severity.ERROR, f"{name}: does not parse as Python: {exc}")
        return
    yield name, PythonSource(name, source)  # remote code, judged by _analysis/python_source.py


def _index(
    name: str, value: dict[str, object], folder: Path, files: dict[str, Path]
) -> Iterator[tuple[str, Issue]]:
    weight_map = value.get("weight_map")
    if not isinstance(weight_map, dict):
        yield name, Issue("hf.index", Severity.ERROR, f"{name}: weight_map missing or not an object")
        return
    reported: set[str] = set()
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            yield (
                name,
                Issue("hf.index", Severity.ERROR, f"{name}: weight_map[{tensor!r:.60}] is not a file name"),
            )
            continue
        if shard in reported:
            continue
        reported.add(shard)
        path = PurePosixPath(shard)
        if not shard or path.is_absolute() or ".." in path.parts or "\\" in shard:
            yield (
                name,
                Issue(
                    "hf.index-traversal",
                    Severity.MALICIOUS,
                    f"{name}: weight_map file {shard!r:.100} is not a plain file name inside the folder "
                    "(a loader would read weights from elsewhere)",
                    evidence=shard,
                ),
            )
        elif shard not in files and not present(folder / shard):
            yield (
                name,
                Issue(
                    "hf.index-missing",
                    Severity.ERROR,
                    f"{name}: weight_map file {shard!r:.100} is missing from the folder (or not a regular file)",
                    evidence=shard,
                ),
            )
