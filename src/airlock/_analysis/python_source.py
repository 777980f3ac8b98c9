"""Judging a Python file a loader imports (``PythonSource`` facts from the Hugging Face folder
check): the file is remote code (``hf.remote-code``, SUSPICIOUS); the calls of dangerous
primitives that run at import time — module and class bodies,
decorators, default values and annotations, not function bodies — are ``hf.remote-code``
MALICIOUS; a file that does not parse is ``hf.python-parse`` ERROR. The source is parsed with
``ast``, never compiled or run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Final

from airlock._formats.base import Issue, PythonSource
from airlock.results import Severity

__all__ = ["analyse_python"]

#: calls that have no business running when a modeling file is imported
_IMPORT_TIME_DANGER: Final = frozenset(
    """os.system os.popen os.execv os.execve os.execl os.execle os.execlp os.execlpe os.execvp os.execvpe
    os.spawnl os.spawnle os.spawnlp os.spawnlpe os.spawnv os.spawnve os.spawnvp os.spawnvpe os.posix_spawn
    os.posix_spawnp os.fork os.forkpty os.kill os.remove os.unlink os.rmdir os.removedirs os.startfile
    posix.system posix.popen pty.spawn subprocess.run subprocess.Popen subprocess.call
    subprocess.check_call subprocess.check_output subprocess.getoutput subprocess.getstatusoutput
    exec eval compile __import__ breakpoint builtins.exec builtins.eval builtins.compile builtins.__import__
    runpy.run_path runpy.run_module code.interact socket.socket socket.create_connection
    urllib.request.urlopen urllib.request.urlretrieve http.client.HTTPConnection
    http.client.HTTPSConnection requests.get requests.post requests.request httpx.get httpx.post
    webbrowser.open shutil.rmtree shutil.move pickle.loads pickle.load marshal.loads marshal.load
    dill.loads dill.load torch.load ctypes.CDLL ctypes.PyDLL ctypes.cdll.LoadLibrary
    ctypes.pydll.LoadLibrary ctypes.CDLL importlib.import_module multiprocessing.Process
    asyncio.create_subprocess_exec asyncio.create_subprocess_shell asyncio.open_connection
    torch.utils.cpp_extension.load torch.utils.cpp_extension.load_inline torch.ops.load_library
    torch.classes.load_library torch.jit.load numpy.load pandas.read_pickle
    huggingface_hub.hf_hub_download huggingface_hub.snapshot_download
    importlib.util.spec_from_file_location importlib.util.module_from_spec importlib.machinery.SourceFileLoader
    importlib.machinery.SourcelessFileLoader importlib.machinery.ExtensionFileLoader zipimport.zipimporter""".split()
)
#: modules that exist to run processes, reach the network, unpickle or load native code: any use of
#: them at import time (bound by an import of the file) is reported, whatever the member
_DANGER_NAMESPACES: Final = frozenset(
    """subprocess pty posix nt _posixsubprocess socket ssl ctypes _ctypes cffi pickle _pickle marshal
    shelve dill cloudpickle runpy code codeop multiprocessing urllib.request http.client ftplib smtplib
    telnetlib poplib imaplib xmlrpc requests httpx aiohttp urllib3 webbrowser asyncio.subprocess""".split()
)


def analyse_python(fact: PythonSource) -> Iterator[Issue]:
    """The findings for one Python file the loader would import: executable code needing a
    policy decision (SUSPICIOUS, allowed by ``--allow module.Class``), and what it runs on import."""
    name, source = fact.name, fact.source
    yield Issue(
        "hf.remote-code",
        Severity.SUSPICIOUS,
        f"{name}: Python file in a model folder; trust_remote_code imports and runs such files (executable code)",
        callable=name.removesuffix(".py"),
    )
    try:
        tree = ast.parse(source, filename=name)  # parsed, never compiled or run
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        yield Issue("hf.python-parse", Severity.ERROR, f"{name}: does not parse as Python: {exc}")
        return
    for call, line in _import_time_calls(tree):
        yield Issue(
            "hf.remote-code",
            Severity.MALICIOUS,
            f"{name}: calls {call} when imported (line {line}); a modeling file has no reason to",
            callable=call,
            evidence=ast.get_source_segment(source.decode("utf-8", "replace"), _line_node(tree, line))
            or call,
        )


#: modules whose use as a value (``m = os``, ``getattr(os, name)``) is reported: those that exist
#: for danger, and the ones that hold exec and process calls. Not ``torch``, ``numpy``, ``shutil``:
#: ``getattr(torch, dtype_name)`` is how modeling code reads a dtype from its config.
_VALUE_MODULES: Final = _DANGER_NAMESPACES | {"os", "posix", "nt", "builtins", "importlib", "sys"}
#: the most parts of any name above (``torch.utils.cpp_extension.load_inline``)
_MAX_SEGMENTS: Final = max(
    n.count(".") + 1 for n in _IMPORT_TIME_DANGER | _DANGER_NAMESPACES | _VALUE_MODULES
)
#: modules whose ``import *`` can bind a dangerous name
_STAR_MODULES: Final = (
    frozenset(".".join(n.split(".")[:i]) for n in _IMPORT_TIME_DANGER for i in range(1, n.count(".") + 1))
    | _DANGER_NAMESPACES
    | _VALUE_MODULES
)
#: reflection that reaches any module or builtin by a computed name
#: (``vars`` with an argument is an object's attributes: only ``vars()``, the module's globals, counts)
_REFLECTION: Final = frozenset({"sys.modules", "__builtins__", "globals", "locals", "sys._getframe"})
#: attributes that lead from any object to module globals, builtins or every class
_REFLECTIVE_ATTRS: Final = frozenset(
    "__globals__ __builtins__ __subclasses__ __import__ f_globals f_builtins f_back gi_frame".split()
)


def _import_time_calls(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Uses of dangerous primitives that run at import: module and class bodies, decorators,
    default values and annotations, and the bodies of the file's own functions and classes that
    import-time code names. Names are resolved through the file's imports (``from os import
    system as s``; ``import subprocess as sp``).

    A primitive *referenced* at import time is reported like a call (outside review 17): ``f =
    os.system``, ``map(os.system, ...)``, ``os.system.__call__``, ``getattr(os, "system")``,
    ``[os.system][0]``, ``p.os.system`` all call it without a call node naming it. So are a module
    holding one used as a value (``m = os``, ``getattr(os, name)``) and reflection that reaches
    any name (``sys.modules``, ``__builtins__``, ``globals()``, ``vars()``, ``__dict__`` ...)."""
    aliases: dict[str, str] = {}
    imported: set[str] = set()
    stars: set[str] = set()
    # the file's own functions and classes by name, in any scope (a name may mean any of them)
    defs: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):  # one pass: imports and definitions
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                imported.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name == "*":  # from os import *: every free name may be os.<name>
                    if node.module in _STAR_MODULES:  # a fixed set: a name costs O(1) lookups
                        stars.add(node.module)
                    continue
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                imported.add(alias.asname or alias.name)

    def hit(dotted: str) -> str | None:
        head = dotted.partition(".")[0]
        if head not in aliases and head not in imported and head not in defs:
            for module in stars:
                found = one(f"{module}.{dotted}", module.partition(".")[0])
                if found is not None:
                    return found
        return one(dotted, head)

    def one(dotted: str, head: str) -> str | None:
        # every name judged has at most _MAX_SEGMENTS parts: windows are bounded by it, so a chain
        # of n attributes costs O(n), not O(n**3)
        rest = dotted.partition(".")[2]
        parts = (aliases.get(head, head) + (f".{rest}" if rest else "")).split(".")
        prefixes = [".".join(parts[:j]) for j in range(1, min(len(parts), _MAX_SEGMENTS) + 1)]
        if (head in imported or head in stars_heads) and any(p in _DANGER_NAMESPACES for p in prefixes):
            return ".".join(parts[: _MAX_SEGMENTS + 1])
        for prefix in prefixes:  # os.system, os.system.__call__
            if prefix in _IMPORT_TIME_DANGER or prefix in _REFLECTION:
                return prefix
        for i in range(1, len(parts) - 1):  # p.os.system: a module re-exported by another
            for j in range(i + 2, min(len(parts), i + _MAX_SEGMENTS) + 1):
                if ".".join(parts[i:j]) in _IMPORT_TIME_DANGER:
                    return ".".join(parts[i:j])
        if head in imported:
            for j, prefix in enumerate(prefixes, 1):  # the module itself as a value, or os.__dict__
                if prefix in _VALUE_MODULES and (j == len(parts) or parts[j].startswith("__")):
                    return ".".join(parts[: j + 1])
        reflective = [part for part in parts[1:] if part in _REFLECTIVE_ATTRS]
        return f"{'.'.join(parts[: _MAX_SEGMENTS + 1])} (reflection)" if reflective else None

    stars_heads = {module.partition(".")[0] for module in stars}
    seen: set[int] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # the body runs when called (walked once import-time code names the function);
            # decorators, defaults and annotations run now
            stack.extend(node.decorator_list)
            stack.append(node.args)
            if node.returns is not None:
                stack.append(node.returns)
            continue
        if isinstance(node, ast.Subscript) and _own_module_entry(node):
            continue  # sys.modules[__name__] = ..., globals()["__file__"]: the module's own entry
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "vars"
            and not node.args
            and "vars" not in defs
            and "vars" not in aliases
        ):
            yield "vars", node.lineno
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            target = _dotted(node.args[0]) if node.args else None
            name = node.args[1] if len(node.args) > 1 else None
            if target is not None and isinstance(name, ast.Constant) and isinstance(name.value, str):
                found = hit(f"{target}.{name.value}")  # getattr(os, "system") is os.system
                if found is not None:
                    yield found, node.lineno
                    continue
                stack.extend(defs.get(target.partition(".")[0], []))
                continue
            elif target is not None and name is not None:
                found = hit(target)
                if found is not None:
                    yield found, node.lineno
        dotted = _dotted(node) if isinstance(node, ast.Name | ast.Attribute) else None
        if dotted is not None:
            found = hit(dotted)
            if found is not None:
                yield found, getattr(node, "lineno", 0)
                continue
            for part in dotted.split("."):
                for definition in defs.get(part, []):
                    if id(definition) not in seen:  # the file's own code named now may run now
                        seen.add(id(definition))
                        stack.extend(_bodies(definition))
            continue  # a chain's inner names are the chain, judged as a whole
        if isinstance(node, ast.Attribute):
            # make().a.b: no part of the chain is a dotted name (its base is not a name), so it
            # is walked down to its base once (linear in its length); a method named may run now
            while isinstance(node, ast.Attribute):
                for definition in defs.get(node.attr, []):
                    if id(definition) not in seen:
                        seen.add(id(definition))
                        stack.extend(_bodies(definition))
                node = node.value
            stack.append(node)
            continue
        stack.extend(ast.iter_child_nodes(node))


#: a module's own entries, read or replaced by lazy-module code (transformers' ``__init__.py``)
_OWN_ENTRIES: Final = frozenset({"__name__", "__file__", "__spec__", "__doc__", "__package__", "__path__"})


def _own_module_entry(node: ast.Subscript) -> bool:
    """``sys.modules[__name__]`` or ``globals()["__file__"]``: reflection on the module itself,
    not on a name chosen by data (``sys.modules['os']``, ``globals()[x]`` stay findings)."""
    key = node.slice
    own = (isinstance(key, ast.Name) and key.id == "__name__") or (
        isinstance(key, ast.Constant) and key.value in _OWN_ENTRIES
    )
    target = node.value
    table = _dotted(target) == "sys.modules" or (
        isinstance(target, ast.Call)
        and isinstance(target.func, ast.Name)
        and target.func.id in {"globals", "vars"}
        and not target.args
    )
    return own and table


def _bodies(definition: ast.AST) -> list[ast.AST]:
    """What may run once a function or class is named: a function's body; a class's body and
    every method's (instantiating, subclassing or using it runs ``__init__``, ``__init_subclass__``,
    ``__set_name__``, a metaclass's ``__new__`` ...)."""
    if isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef):
        return list(definition.body)
    if not isinstance(definition, ast.ClassDef):
        return []
    nodes: list[ast.AST] = list(definition.body)
    for item in definition.body:  # Python calls the special methods by itself; others when named
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("__"):
            nodes.extend(item.body)
    return nodes


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _line_node(tree: ast.Module, line: int) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.lineno == line:
            return node
    return tree
