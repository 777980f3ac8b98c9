"""The code a Hugging Face config makes a loader import: ``auto_map`` entries
(``trust_remote_code``), transformers' ``custom_pipelines``, diffusers' ``model_index.json``
libraries and custom pipeline, sentence-transformers' ``modules.json`` types and peft's
``parent_library``.

Each is yielded as a neutral :class:`~airlock._formats.base.CodeReference` (ecosystem ``hf``)
where the config names it, with how the loader gets the code:

* ``remote code``: ``trust_remote_code`` imports ``module`` from the repository
  (``repo--module.Class`` names another repository, ``repo``);
* the loader that imports ``module`` by name (``importlib.import_module``), or runs the file
  the folder ships for it (``shipped``): ``diffusers component``, ``diffusers pipeline``
  (``_class_name: [file, class]``), ``sentence-transformers module``, ``peft parent library``.

Which names are allowed, which leave the folder and which need a policy decision is judged by
``_analysis/hf_refs.py``; this module holds no list of libraries. Malformed entries the loader
cannot use are ``hf.json`` (ERROR). What shipped code does when imported is judged from its
source (``PythonSource``). The folder walk that reads the configs is ``hf_folder.py``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from airlock._formats.base import CodeReference, Issue
from airlock._formats.hf_cache import cache_link_target
from airlock.results import Severity

__all__ = [
    "auto_map",
    "auto_maps",
    "custom_pipelines",
    "model_index",
    "peft",
    "present",
    "sentence_transformers",
]

Found = tuple[str, Issue | CodeReference]


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


def auto_map(name: str, mapping: object, files: dict[str, Path], where: str = "auto_map") -> Iterator[Found]:
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
            yield name, _remote_code(name, f"{where:.100} {auto_class}", ref, files)


def _remote_code(name: str, where: str, ref: str, files: dict[str, Path]) -> CodeReference:
    """``[repo--]module.Class`` as ``get_class_from_dynamic_module`` reads it."""
    repo, _, local = ref.rpartition("--")
    module, _, cls = local.rpartition(".")
    file = f"{module}.py"
    return CodeReference(
        "hf",
        "remote code",
        module,
        cls,
        f"{name} {where}",
        shipped=file if file in files else None,
        repo=repo or None,
    )


def custom_pipelines(name: str, custom: object, files: dict[str, Path]) -> Iterator[Found]:
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
        yield name, _remote_code(name, f"custom_pipelines[{task!r:.60}]", impl, files)


def model_index(name: str, value: dict[str, object], folder: Path) -> Iterator[Found]:
    """diffusers ``model_index.json``: ``"unet": [library, class]`` imports ``library`` by name
    (``importlib.import_module``), or, when ``<component>/<library>.py`` is shipped, runs that file;
    ``_class_name: [file, class]`` runs ``<file>.py`` as a custom pipeline."""
    pipeline = value.get("_class_name")
    if isinstance(pipeline, list) and pipeline and isinstance(pipeline[0], str):
        cls = pipeline[1] if len(pipeline) > 1 and isinstance(pipeline[1], str) else ""
        yield (
            name,
            _by_name(
                name, "diffusers pipeline", "_class_name", pipeline[0], cls, folder / f"{pipeline[0]}.py"
            ),
        )
    for component, entry in value.items():
        if component.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        library, cls = entry
        if library is None:
            continue
        if not isinstance(library, str):
            yield name, Issue("hf.json", Severity.ERROR, f"{name}: {component!r:.60} library is not a string")
            continue
        shipped = folder / component / f"{library}.py"
        where = f"component {component!r:.60}"
        yield (
            name,
            _by_name(
                name, "diffusers component", where, library, cls if isinstance(cls, str) else "", shipped
            ),
        )


def _by_name(name: str, kind: str, where: str, module: str, cls: str, shipped: Path) -> CodeReference:
    """A module the loader imports by name, or the file ``shipped`` when the folder has it."""
    file = None
    if "/" not in module and "\\" not in module and ".." not in module and present(shipped):
        file = shipped.name
    return CodeReference("hf", kind, module, cls, f"{name} {where}", shipped=file)


def sentence_transformers(name: str, modules: list[object], files: dict[str, Path]) -> Iterator[Found]:
    """sentence-transformers ``modules.json``: every ``type`` is imported by its dotted name
    (``import_from_string``); a module file the folder ships for it is run instead."""
    for index, entry in enumerate(modules):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if not isinstance(kind, str):
            yield name, Issue("hf.json", Severity.ERROR, f"{name}: module [{index}] has no 'type' string")
            continue
        module, _, cls = kind.rpartition(".")
        file = f"{module or kind}.py"
        where = f"{name} modules[{index}].type"
        yield name, CodeReference("hf", "sentence-transformers module", module or kind, cls if module else "", where,
                                  shipped=file if file in files else None)  # fmt: skip


def peft(name: str, mapping: object) -> Iterator[Found]:
    """peft ``adapter_config.json``: ``auto_mapping.parent_library`` is imported by name and
    ``base_model_class`` taken from it."""
    if not isinstance(mapping, dict):
        return
    library = mapping.get("parent_library")
    if library is None:
        return
    if not isinstance(library, str):
        yield name, Issue("hf.json", Severity.ERROR, f"{name}: auto_mapping.parent_library is not a string")
        return
    cls = mapping.get("base_model_class")
    where = f"{name} auto_mapping.parent_library"
    yield (
        name,
        CodeReference("hf", "peft parent library", library, cls if isinstance(cls, str) else "", where),
    )


def present(path: Path) -> bool:
    """A regular file (not a link), or a Hugging Face cache link to a blob of the same repository."""
    try:
        return (path.is_file() and not path.is_symlink()) or cache_link_target(path) is not None
    except OSError:
        return False
