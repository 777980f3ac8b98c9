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
    ctypes.pydll.LoadLibrary ctypes.CDLL importlib.import_module multiprocessing.Process""".split()
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


def _import_time_calls(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Calls of dangerous primitives that run at import: module and class bodies, decorators,
    default values and annotations, not function bodies. Names are resolved through the file's
    imports (``from os import system as s``; ``import subprocess as sp``)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def resolve(func: ast.AST) -> str | None:
        dotted = _dotted(func)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        resolved = aliases.get(head, head) + (f".{rest}" if rest else "")
        return resolved if resolved in _IMPORT_TIME_DANGER or dotted in _IMPORT_TIME_DANGER else None

    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:  # ``@os.system`` calls it with the function
                hit = None if isinstance(decorator, ast.Call) else resolve(decorator)
                if hit is not None:
                    yield hit, decorator.lineno
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # the body runs when called; decorators, defaults and annotations run now
            stack.extend(node.decorator_list)
            stack.append(node.args)
            if node.returns is not None:
                stack.append(node.returns)
            continue
        if isinstance(node, ast.Lambda):
            stack.append(node.args)
            continue
        if isinstance(node, ast.Call):
            hit = resolve(node.func)
            if hit is not None:
                yield hit, node.lineno
        stack.extend(ast.iter_child_nodes(node))


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
