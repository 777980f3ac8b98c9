"""The layering of docs/architecture.md, checked on the source: readers yield neutral facts and
never reach into the analysis or the policy that judges them; every format is one record in the
registry, and no other module matches format names as strings."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import airlock

SRC = Path(airlock.__file__).parent
FORMATS_DIR = SRC / "_formats"
#: what a reader must never import: the layer that classifies its facts
JUDGES = ("airlock._analysis", "airlock.policy", "airlock._scan")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names; relative imports resolved in airlock)."""
    package = ".".join(("airlock", *path.relative_to(SRC).parts[:-1]))
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from airlock import policy`` imports the module airlock.policy
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.args[0] if node.args else None, ast.Constant):
            # importlib.import_module("airlock._analysis...") and __import__ spelled out
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            value = node.args[0].value  # type: ignore[attr-defined]
            if called in ("import_module", "__import__") and isinstance(value, str):
                found.append((node.lineno, value))
    return found


def _judges(module: str) -> bool:
    return any(module == j or module.startswith(f"{j}.") for j in JUDGES)


def test_readers_never_import_the_analysis_or_the_policy() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for path in sorted(FORMATS_DIR.glob("*.py"))
        for line, module in _imports(path)
        if _judges(module)
    ]
    assert offenders == []


def test_the_import_check_sees_every_spelling() -> None:
    """The check itself: each way of importing the analysis from a reader is caught."""
    spellings = [
        "from airlock._analysis import analyse_template",
        "import airlock._analysis.catalogue",
        "from airlock import policy",
        "from .._analysis.pickle_vm import Global",
        "from ..policy import Policy",
        "import importlib\nimportlib.import_module('airlock._analysis.catalogue')",
        "def f():\n    from airlock._analysis.template import analyse_template",
    ]
    for text in spellings:
        assert any(_judges(m) for _, m in _imports_in(text, "airlock._formats")), text
    clean = "from airlock._formats.base import Issue\nimport airlock.results\nfrom . import base\n"
    assert not any(_judges(m) for _, m in _imports_in(clean, "airlock._formats"))


# --- one Format record per format ----------------------------------------------------------


def test_every_format_has_a_complete_record() -> None:
    from airlock._formats.registry import FORMATS, Format, format_named
    from airlock.sandbox._runtimes import runtime_named

    names = [fmt.name for fmt in FORMATS]
    assert len(set(names)) == len(names), names
    for fmt in FORMATS:
        missing = [slot for slot in Format.__slots__ if slot != "_loaded" and not hasattr(fmt, slot)]
        assert missing == [], (fmt, missing)
        assert fmt.name and isinstance(fmt.name, str)
        assert callable(fmt.may_match)
        assert isinstance(fmt.whole_pickle, bool) and isinstance(fmt.unpickled_weights, bool)
        reader = fmt.reader()  # importable, and the reader reports the record's name
        assert reader.name == fmt.name, (fmt, reader.name)
        assert callable(reader.sniff) and callable(reader.read)
        if fmt.planner is not None:
            module, _, function = fmt.planner.partition(":")
            assert callable(getattr(importlib.import_module(module), function)), fmt.planner
        if fmt.runtime is not None:
            assert runtime_named(fmt.runtime).name == fmt.runtime
        if fmt.unpickled_weights:  # weights a loader unpickles are loaded in a runtime, or converted
            assert fmt.runtime is not None or fmt.planner is not None, fmt
        assert format_named(fmt.name) is fmt
        assert format_named(f"{fmt.name}+pickle") is fmt  # a report's joined name: the file's own first
    assert format_named(None) is None and format_named("no-such-format") is None


def test_every_reader_instance_is_registered() -> None:
    """A reader defined in _formats but missing from the registry would never be sniffed."""
    from airlock._formats.registry import FORMATS

    registered = {id(fmt.reader()) for fmt in FORMATS}
    unregistered = []
    for path in sorted(FORMATS_DIR.glob("*.py")):
        module = importlib.import_module(f"airlock._formats.{path.stem}")
        for attribute, value in vars(module).items():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, type) or not all(hasattr(item, a) for a in ("name", "sniff", "read")):
                    continue
                if id(item) not in registered:
                    unregistered.append(f"{path.stem}.{attribute}: {item.name}")
    assert unregistered == []


def _format_names() -> frozenset[str]:
    from airlock._formats.registry import FORMATS

    return frozenset(fmt.name for fmt in FORMATS)


#: what code that holds a format name calls it (``fmt``, ``report.format``, ``reader.name``)
_FORMAT_WORDS = ("fmt", "format", "reader")


def _name_matches(tree: ast.AST, names: frozenset[str]) -> list[tuple[int, str]]:
    """Places where code matches a format name as a string: a format name compared with (``==``,
    ``in``) or matched against (``case "zip"``) something called a format, or a table whose
    strings are two or more format names and nothing else. The same words in other roles (a tar
    member named ``pickle``, a decompressor ``zlib``, a package ``onnx``) are not format names."""

    def named(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [n for element in node.elts for n in named(element)]
        if isinstance(node, ast.Call) and node.args and getattr(node.func, "id", "") in ("frozenset", "set"):
            return named(node.args[0])
        return []

    def strings(node: ast.AST) -> list[object]:
        return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]

    def about_a_format(node: ast.AST) -> bool:
        return any(word in ast.unparse(node).lower() for word in _FORMAT_WORDS)

    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            hits = [n for side in sides for n in named(side)]
            if hits and any(about_a_format(side) for side in sides if not named(side)):
                found.append((node.lineno, f"compares {hits}"))
        elif isinstance(node, ast.Match) and about_a_format(node.subject):
            for case in node.cases:
                hits = [
                    n for p in ast.walk(case.pattern) if isinstance(p, ast.MatchValue) for n in named(p.value)
                ]
                if hits:
                    found.append((case.pattern.lineno, f"matches {hits}"))
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            hits = named(node)
            if len(hits) >= 2 and len(hits) == len(strings(node)):
                found.append((node.lineno, f"lists {hits}"))
    return found


def test_no_module_outside_the_registry_matches_format_names() -> None:
    names = _format_names()
    offenders = [
        f"{path.relative_to(SRC)}:{line} {what}"
        for path in sorted(SRC.rglob("*.py"))
        if path != FORMATS_DIR / "registry.py"
        for line, what in _name_matches(ast.parse(path.read_text(encoding="utf-8")), names)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "source",
    [
        'if fmt == "zip": pass',
        'ok = fmt.split("+")[0] in ("zip", "torch-legacy")',
        'PICKLES = frozenset({"pickle", "torch-legacy"})',
        'match fmt:\n    case "safetensors":\n        pass',
        'if "npy" != reader.name: pass',
        'if report.files[0].format in {"pickle"}: pass',
    ],
)
def test_the_format_name_check_sees_every_spelling(source: str) -> None:
    assert _name_matches(ast.parse(source), _format_names())


def test_the_format_name_check_leaves_other_strings_alone() -> None:
    source = (
        'name = "zip"\nprint("pickle")\nrule = "pickle.unknown-global"\nif fmt == "zipfile": pass\n'
        'if info.name == "pickle": pass\nif kind == "zlib": pass\nLOADERS = ("torch", "onnx", "gguf")\n'
    )
    assert _name_matches(ast.parse(source), _format_names()) == []


# --- folder checks yield facts; the scan judges them -----------------------------------------


def test_the_hf_folder_check_yields_code_and_templates_as_facts(tmp_path: Path) -> None:
    """The check reports what the folder holds (a template, a Python file's source) and judges
    neither; the scan's analysis names the payloads."""
    from airlock._formats.base import Issue, PythonSource, ReadContext, Template
    from airlock._formats.hf_folder import HFFolderCheck
    from airlock.limits import DEFAULT_LIMITS
    from airlock.results import Severity, Verdict

    (tmp_path / "config.json").write_text('{"auto_map": {"AutoModel": "modeling_x.M"}}')
    (tmp_path / "modeling_x.py").write_text("import os\nos.system('true')\nclass M: pass\n")
    ssti = "{{ cycler.__init__.__globals__.os.popen('true').read() }}"
    (tmp_path / "chat_template.jinja").write_text(ssti)
    ctx = ReadContext(limits=DEFAULT_LIMITS, file_path=tmp_path, root=tmp_path)
    facts = list(HFFolderCheck().check(tmp_path, ctx))
    assert (
        "modeling_x.py",
        PythonSource("modeling_x.py", b"import os\nos.system('true')\nclass M: pass\n"),
    ) in facts
    assert ("chat_template.jinja", Template("chat_template.jinja", ssti, None)) in facts
    judged = [f for _, f in facts if isinstance(f, Issue) and f.severity is Severity.MALICIOUS]
    assert judged == []  # nothing judged by the reader
    report = airlock.scan(tmp_path)
    malicious = {
        (f.location.path.rsplit("/", 1)[-1], f.rule)
        for f in report.findings()
        if f.severity is Severity.MALICIOUS
    }
    assert ("modeling_x.py", "hf.remote-code") in malicious
    assert any(name == "chat_template.jinja" for name, _ in malicious)
    assert report.verdict is Verdict.MALICIOUS


# --- policy lives in the analysis: readers name no rule a judge decides --------------------------

#: the analysis modules that judge a reader's facts (each owns its allowlist and its rule ids)
_FACT_JUDGES = ("keras_names", "tf_ops", "onnx_ops", "hf_refs")


def _rule_ids(path: Path) -> set[str]:
    """The rule ids a judge module emits: first arguments of ``Issue(...)`` and the rule of each
    ``(rule, severity, what)`` triple it tabulates."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Issue" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
        elif isinstance(node, ast.Tuple) and len(node.elts) == 3:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and "." in first.value:
                found.add(first.value)
    return found


def _string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_readers_emit_no_rule_that_a_judge_decides() -> None:
    """A reader yields the fact (an op, a class name); the verdict and its rule are the judge's.
    The ONNX domain allowlist once lived in the reader and emitted ``onnx.custom-domain`` there."""
    judged: dict[str, str] = {}
    for module in _FACT_JUDGES:
        for rule in _rule_ids(SRC / "_analysis" / f"{module}.py"):
            judged[rule] = module
    assert {"onnx.custom-domain", "onnx.function", "savedmodel.unknown-op", "keras.custom-object"} <= set(
        judged
    )
    offenders = [
        f"{path.relative_to(SRC)} emits {rule!r} (decided by _analysis/{judged[rule]}.py)"
        for path in sorted(FORMATS_DIR.glob("*.py"))
        for rule in sorted(_string_constants(path) & set(judged))
    ]
    assert offenders == []


def test_the_onnx_domain_allowlist_is_the_analysis_one() -> None:
    import airlock._formats.onnx as reader
    from airlock._analysis.onnx_ops import STANDARD_DOMAINS

    assert "com.microsoft" in STANDARD_DOMAINS
    assert not hasattr(reader, "STANDARD_DOMAINS")


# --- readers hold no allowlist: a name on a profile and its near miss give the same facts --------


def _reader_constants(path: Path) -> set[str]:
    """String constants of a reader module that could be data: not docstrings, not ``__all__``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skip.add(id(body[0].value))  # a docstring
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            skip.update(id(n) for n in ast.walk(node.value))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    }


def _allowlisted_names() -> dict[str, str]:
    """Module, package and domain names the judges' allowlist profiles allow, by judge."""
    from airlock._analysis.hf_refs import HF_PROFILE
    from airlock._analysis.onnx_ops import STANDARD_DOMAINS

    names = {name: "onnx_ops" for name in STANDARD_DOMAINS if name}
    for profile in HF_PROFILE.values():
        names.update(dict.fromkeys(profile.exact | profile.packages, "hf_refs"))
    return names


def test_readers_hold_none_of_the_names_a_profile_allows() -> None:
    """A reader that skips an allowed library must spell the library: no reader module holds a
    name from a judge's allowlist profile (the diffusers / sentence-transformers / peft package
    lists and the ONNX domains once lived in readers)."""
    names = _allowlisted_names()
    assert {"diffusers", "sentence_transformers", "peft", "com.microsoft"} <= set(names)
    offenders = [
        f"{path.relative_to(SRC)} holds {name!r} (allowed by _analysis/{names[name]}.py)"
        for path in sorted(FORMATS_DIR.glob("*.py"))
        for name in sorted(_reader_constants(path) & set(names))
    ]
    assert offenders == []


def test_the_allowlist_check_sees_a_list_in_a_reader(tmp_path: Path) -> None:
    reader = tmp_path / "reader.py"
    reader.write_text(
        '"""docstring naming diffusers"""\n__all__ = ["peft"]\n_LIBS = frozenset({"diffusers"})\n'
    )
    assert _reader_constants(reader) & set(_allowlisted_names()) == {"diffusers"}


def _hf_facts(folder: Path, name: str) -> list[tuple[str, object]]:
    """The HF folder check's facts for a folder whose configs make the loaders import ``name``,
    with ``name`` replaced by a placeholder."""
    import json

    from airlock._formats.base import CodeReference, ReadContext
    from airlock._formats.hf_folder import HFFolderCheck
    from airlock.limits import DEFAULT_LIMITS

    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "P", "unet": [name, "UNet"]}))
    (folder / "unet").mkdir()
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "path": "", "type": f"{name}.models.T"}]))
    auto = {"base_model_class": "M", "parent_library": f"{name}.models"}
    (folder / "adapter_config.json").write_text(json.dumps({"auto_mapping": auto}))
    ctx = ReadContext(limits=DEFAULT_LIMITS, file_path=folder, root=folder)
    facts: list[tuple[str, object]] = []
    for path, fact in HFFolderCheck().check(folder, ctx):
        if isinstance(fact, CodeReference) and fact.module:
            facts.append((path, fact._replace(module=fact.module.replace(name, "<N>"))))
        else:
            facts.append((path, fact))
    return facts


def test_the_hf_folder_check_yields_the_same_facts_for_allowed_and_unknown_names(tmp_path: Path) -> None:
    """Neutral facts: whether the loader may import a library is the profile's decision, so the
    reader reports a name on the profile exactly like its near misses and an unknown name."""
    from airlock._analysis.hf_refs import HF_PROFILE
    from airlock._formats.base import CodeReference

    allowed = sorted({n for p in HF_PROFILE.values() for n in p.exact | p.packages})
    near = [f"{allowed[0]}x", f"x{allowed[0]}", allowed[0].upper(), "evil_pkg"]
    baseline = _hf_facts(tmp_path / "base", "zz_unknown")
    assert sum(isinstance(fact, CodeReference) for _, fact in baseline) == 3, baseline
    for index, name in enumerate(allowed + near):
        assert _hf_facts(tmp_path / str(index), name) == baseline, name
