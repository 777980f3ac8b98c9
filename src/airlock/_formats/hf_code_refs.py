"""The code a Hugging Face config makes a loader import: ``auto_map`` entries
(``trust_remote_code``), transformers' ``custom_pipelines``, diffusers' ``model_index.json``
libraries, sentence-transformers' ``modules.json`` types and peft's ``parent_library``.

Each reference is reported where the config names it: a module path that leaves the folder is
``hf.remote-code-traversal`` (MALICIOUS), code shipped in the folder or fetched from another
repository is ``hf.remote-code`` (SUSPICIOUS, executable code needing a policy decision), and a
module imported by name that the loader does not ship is ``hf.dynamic-module`` (SUSPICIOUS).
What the shipped code does when imported is judged from its source (``PythonSource``). The
folder walk that reads the configs is ``hf_folder.py``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Final

from airlock._formats.base import Issue, ReadContext
from airlock._formats.hf_cache import cache_link_target
from airlock.results import Severity

__all__ = [
    "DIFFUSERS_LIBRARIES",
    "auto_map",
    "auto_maps",
    "custom_pipelines",
    "model_index",
    "peft",
    "present",
    "sentence_transformers",
]


def auto_maps(value: object) -> Iterator[tuple[str, object]]:
    """Every ``auto_map`` in a JSON document, at any depth, with its path (``auto_map``,
    ``image_processor.auto_map``). Loaders honour nested ones: transformers reads the image,
    video and feature processors' configs from sections of ``processor_config.json``."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                where = f"{path}.{key}" if path else str(key)
                if key == "auto_map":
                    yield where, item
                else:
                    stack.append((item, where))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node))


def auto_map(
    name: str, mapping: object, files: dict[str, Path], ctx: ReadContext, where: str = "auto_map"
) -> Iterator[tuple[str, Issue]]:
    if not isinstance(mapping, dict):
        yield name, Issue("hf.json", Severity.ERROR, f"{name}: {where:.100} is not an object")
        return
    for auto_class, refs in mapping.items():
        # a reference, a list of them ([slow, fast] tokenizers) or a dict of them by backend
        # (image processors: {"torchvision": ..., "pil": ...})
        listed = refs if isinstance(refs, list) else list(refs.values()) if isinstance(refs, dict) else [refs]
        for ref in listed:
            if ref is None:
                continue
            if not isinstance(ref, str):
                yield (
                    name,
                    Issue("hf.json", Severity.ERROR, f"{name}: {where:.100}[{auto_class!r}] is not a string"),
                )
                continue
            yield from _class_reference(name, f"{where:.100} {auto_class}", ref, files)


def _class_reference(
    name: str, auto_class: str, ref: str, files: dict[str, Path]
) -> Iterator[tuple[str, Issue]]:
    where = f"{name} {auto_class} -> {ref!r:.100}"
    repo, _, local = ref.rpartition("--")
    module, _, cls = local.rpartition(".")
    path = PurePosixPath(module)
    if not module or path.is_absolute() or ".." in path.parts or "\\" in module or module.startswith("~"):
        yield (
            name,
            Issue(
                "hf.remote-code-traversal",
                Severity.MALICIOUS,
                f"{where}: module path leaves the model folder (expected a module name inside it); "
                "trust_remote_code would import code from elsewhere on the machine",
                callable=ref,
                evidence=ref,
            ),
        )
        return
    if repo:
        yield (
            name,
            Issue(
                "hf.remote-code",
                Severity.SUSPICIOUS,
                f"{where}: code from another repository {repo!r:.80}, which trust_remote_code downloads and runs; "
                "not part of this scan",
                callable=f"{module}.{cls}",
                evidence=ref,
            ),
        )
        return
    file = f"{module}.py"
    present = file in files
    yield (
        name,
        Issue(
            "hf.remote-code",
            Severity.SUSPICIOUS,
            f"{where}: trust_remote_code would import {file} "
            + ("(shipped in the folder) and run it: executable code" if present else "(not in the folder)"),
            callable=f"{module}.{cls}",
            evidence=ref,
        ),
    )


#: Libraries a diffusers ``model_index.json`` may name for a component (``[library, class]``):
#: diffusers itself, transformers, and the diffusers pipeline modules its own pipelines use.
DIFFUSERS_LIBRARIES: Final = frozenset({"diffusers", "transformers", "stable_diffusion", "onnxruntime"})
#: Packages whose classes sentence-transformers' ``modules.json`` and peft's ``auto_mapping`` name.
_ST_PACKAGES: Final = ("sentence_transformers.",)
_PEFT_PACKAGES: Final = ("transformers", "peft")


def _dynamic(name: str, where: str, module: str, how: str) -> tuple[str, Issue]:
    return (
        name,
        Issue(
            "hf.dynamic-module",
            Severity.SUSPICIOUS,
            f"{name} {where}: the loader imports module {module!r:.100} by name ({how}); not a library "
            "the loader ships, so its import-time code is outside this scan",
            callable=module[:100],
            evidence=module[:200],
        ),
    )


def custom_pipelines(name: str, custom: object, files: dict[str, Path]) -> Iterator[tuple[str, Issue]]:
    """transformers' ``pipeline()``: ``custom_pipelines[task].impl`` is imported with
    ``get_class_from_dynamic_module`` exactly like an ``auto_map`` entry."""
    if not isinstance(custom, dict):
        yield name, Issue("hf.json", Severity.ERROR, f"{name}: custom_pipelines is not an object")
        return
    for task, info in custom.items():
        impl = info.get("impl") if isinstance(info, dict) else None
        if not isinstance(impl, str):
            yield (
                name,
                Issue(
                    "hf.json", Severity.ERROR, f"{name}: custom_pipelines[{task!r:.60}] has no 'impl' string"
                ),
            )
            continue
        yield from _class_reference(name, f"custom_pipelines[{task!r:.60}]", impl, files)


def model_index(name: str, value: dict[str, object], folder: Path) -> Iterator[tuple[str, Issue]]:
    """diffusers ``model_index.json``: ``"unet": [library, class]`` imports ``library`` by name
    (``importlib.import_module``), or, when ``<component>/<library>.py`` is shipped, runs that file;
    ``_class_name: [file, class]`` runs ``<file>.py`` as a custom pipeline."""
    pipeline = value.get("_class_name")
    if isinstance(pipeline, list) and pipeline and isinstance(pipeline[0], str):
        yield from _shipped_or_dynamic(name, "_class_name", pipeline[0], folder / f"{pipeline[0]}.py")
    for component, entry in value.items():
        if component.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        library = entry[0]
        if library is None or (isinstance(library, str) and library in DIFFUSERS_LIBRARIES):
            continue
        if not isinstance(library, str):
            yield name, Issue("hf.json", Severity.ERROR, f"{name}: {component!r:.60} library is not a string")
            continue
        yield from _shipped_or_dynamic(
            name, f"component {component!r:.60}", library, folder / component / f"{library}.py"
        )


def _shipped_or_dynamic(name: str, where: str, module: str, shipped: Path) -> Iterator[tuple[str, Issue]]:
    path = PurePosixPath(module)
    if path.is_absolute() or ".." in path.parts or "\\" in module or "/" in module:
        yield (
            name,
            Issue(
                "hf.remote-code-traversal",
                Severity.MALICIOUS,
                f"{name} {where}: module {module!r:.100} leaves the model folder",
                callable=module[:100],
                evidence=module[:200],
            ),
        )
    elif present(shipped):
        yield (
            name,
            Issue(
                "hf.remote-code",
                Severity.SUSPICIOUS,
                f"{name} {where}: the loader runs {shipped.name} shipped in the folder (executable code)",
                callable=module[:100],
                evidence=module[:200],
            ),
        )
    else:
        yield _dynamic(name, where, module, "importlib.import_module")


def sentence_transformers(
    name: str, modules: list[object], files: dict[str, Path]
) -> Iterator[tuple[str, Issue]]:
    """sentence-transformers ``modules.json``: every ``type`` is imported by its dotted name."""
    for index, entry in enumerate(modules):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if not isinstance(kind, str):
            yield name, Issue("hf.json", Severity.ERROR, f"{name}: module [{index}] has no 'type' string")
            continue
        if kind.startswith(_ST_PACKAGES):
            continue
        module = kind.rpartition(".")[0] or kind
        if f"{module}.py" in files:
            yield from _class_reference(name, f"modules[{index}].type", kind, files)
        else:
            yield _dynamic(name, f"modules[{index}].type", kind, "sentence_transformers import_from_string")


def peft(name: str, mapping: object) -> Iterator[tuple[str, Issue]]:
    """peft ``adapter_config.json``: ``auto_mapping.parent_library`` is imported by name."""
    if not isinstance(mapping, dict):
        return
    library = mapping.get("parent_library")
    if library is None:
        return
    if not isinstance(library, str):
        yield name, Issue("hf.json", Severity.ERROR, f"{name}: auto_mapping.parent_library is not a string")
    elif library.split(".", 1)[0] not in _PEFT_PACKAGES:
        yield _dynamic(name, "auto_mapping.parent_library", library, "peft AutoPeftModel")


def present(path: Path) -> bool:
    """A regular file (not a link), or a Hugging Face cache link to a blob of the same repository."""
    try:
        return (path.is_file() and not path.is_symlink()) or cache_link_target(path) is not None
    except OSError:
        return False
