"""Derive the catalogue of dangerous callables from the pinned libraries' code.

Writes src/airlock/_analysis/catalogue_derived.py: every importable callable (function, class,
method) of the standard library, numpy, torch, scikit-learn, joblib, transformers, accelerate and
their common dependencies whose body reaches, within ``MAX_DEPTH`` calls, one of the *sinks*
below (code execution, process creation, native-library loading, import by name, another
unpickler/loader, network access, a file write), with the reason (the sink and the call chain).
Every other importable path of the same object (re-exports: ``numpy.load`` is
``numpy.lib._npyio_impl.load``) is listed too, so the catalogue names the object under any name a
pickle can import it by. The scanner only reads the generated data: verdicts never depend on
what is installed at scan time.

How a body "reaches" a sink: the bytecode of the function (and of the functions, lambdas and
comprehensions nested in it) is read with ``dis``; every global it loads, and every attribute
chain on a global module or class (``os.path.join``, ``subprocess.Popen``), is resolved in the
function's own globals to an object; calls of ``open``-like functions count as file writes when
the function holds a write-mode constant (``"w"``, ``"wb"``, ``"a"``, ...). Calls through
``self``/arguments are not followed (no types): the derivation under-approximates, and the
hand-written entries in catalogue.py stay.

Run (offline, in the pinned dev environment; a few minutes):
    PYTHONPATH=src .venv/bin/python tools/derive_catalogue.py
"""

from __future__ import annotations

import argparse
import builtins
import dis
import importlib
import inspect
import io
import pkgutil
import re
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "src" / "airlock" / "_analysis" / "catalogue_derived.py"
MAX_DEPTH = 3

EXEC = "code execution"
PROC = "process creation"
NATIVE = "native library loading"
IMPORT = "import by name"
NESTED = "nested deserialisation"
NET = "network access"
WRITE = "file write"

#: The sinks: what a callable must not reach. Dotted names resolved in the pinned environment.
SINKS: dict[str, str] = {
    **dict.fromkeys(["builtins.exec", "builtins.eval", "builtins.compile", "types.FunctionType",
                     "types.CodeType", "runpy.run_path", "runpy.run_module", "runpy._run_code",
                     "code.InteractiveInterpreter.runsource", "code.InteractiveInterpreter.runcode",
                     "code.interact", "timeit.Timer", "cProfile.Profile.runctx", "profile.Profile.runctx",
                     "pdb.run", "bdb.Bdb.run", "trace.Trace.runctx", "typing.ForwardRef._evaluate",
                     "rlcompleter.Completer.complete", "torch.fx.graph_module._exec_with_source"], EXEC),
    **dict.fromkeys(["os.system", "os.popen", "os.execv", "os.execve", "os.execl", "os.execle",
                     "os.execlp", "os.execlpe", "os.execvp", "os.execvpe", "os.spawnv", "os.spawnve",
                     "os.spawnl", "os.spawnle", "os.spawnlp", "os.spawnlpe", "os.spawnvp", "os.spawnvpe",
                     "os.posix_spawn", "os.posix_spawnp", "os.fork", "os.forkpty", "pty.spawn",
                     "pty.fork", "subprocess.Popen", "_posixsubprocess.fork_exec",
                     "multiprocessing.Process", "multiprocessing.context.BaseContext.Process",
                     "webbrowser.open"], PROC),
    **dict.fromkeys(["ctypes.CDLL", "ctypes.PyDLL", "ctypes.LibraryLoader.LoadLibrary", "_ctypes.dlopen",
                     "_imp.create_dynamic", "importlib.machinery.ExtensionFileLoader",
                     "torch._ops._Ops.load_library", "torch._classes._Classes.load_library",
                     "numpy.ctypeslib.load_library"], NATIVE),
    **dict.fromkeys(["builtins.__import__", "importlib.import_module", "importlib.__import__",
                     "importlib._bootstrap._gcd_import", "importlib.util.spec_from_file_location",
                     "importlib.util.module_from_spec", "pkgutil.resolve_name", "pydoc.locate",
                     "zipimport.zipimporter"], IMPORT),
    **dict.fromkeys(["pickle.load", "pickle.loads", "pickle.Unpickler", "pickle._load", "pickle._loads",
                     "pickle._Unpickler", "_pickle.load", "_pickle.loads", "_pickle.Unpickler",
                     "marshal.load", "marshal.loads", "shelve.open", "torch.load",
                     "torch.serialization.load", "torch.jit.load", "numpy.load", "joblib.load",
                     "cloudpickle.load", "cloudpickle.loads", "yaml.load", "yaml.unsafe_load",
                     "yaml.full_load"], NESTED),
    **dict.fromkeys(["socket.socket", "socket.create_connection", "socket.create_server",
                     "urllib.request.urlopen", "urllib.request.urlretrieve", "urllib.request.OpenerDirector.open",
                     "http.client.HTTPConnection", "http.client.HTTPSConnection", "ftplib.FTP",
                     "smtplib.SMTP", "poplib.POP3", "imaplib.IMAP4", "telnetlib.Telnet",
                     "xmlrpc.client.ServerProxy", "requests.request", "requests.Session.request",
                     "urllib3.PoolManager.request", "huggingface_hub.hf_hub_download",
                     "huggingface_hub.snapshot_download"], NET),
    **dict.fromkeys(["os.write", "os.rename", "os.renames", "os.replace", "os.remove", "os.unlink",
                     "os.rmdir", "os.removedirs", "os.mkdir", "os.makedirs", "os.symlink", "os.link",
                     "os.chmod", "os.chown", "os.truncate", "os.ftruncate", "os.mkfifo", "os.mknod",
                     "os.utime", "shutil.copyfile", "shutil.copy", "shutil.copy2", "shutil.copytree",
                     "shutil.move", "shutil.rmtree", "shutil.make_archive", "shutil.unpack_archive",
                     "tempfile.mkstemp", "tempfile.mkdtemp", "tempfile.NamedTemporaryFile",
                     "pathlib.Path.write_text", "pathlib.Path.write_bytes", "pathlib.Path.touch",
                     "pathlib.Path.mkdir", "pathlib.Path.unlink", "pathlib.Path.rename",
                     "pathlib.Path.replace", "pathlib.Path.symlink_to", "pathlib.Path.rmdir",
                     "pathlib.Path.chmod", "gzip.GzipFile", "bz2.BZ2File", "lzma.LZMAFile",
                     "zipfile.ZipFile.write", "zipfile.ZipFile.writestr", "tarfile.TarFile.extractall",
                     "tarfile.TarFile.add", "zipfile.ZipFile.extractall", "mmap.mmap",
                     "fsspec.core.OpenFile", "fsspec.core.open_files", "fsspec.spec.AbstractFileSystem.open",
                     "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt",
                     "numpy.memmap", "numpy.ndarray.tofile", "numpy.ndarray.dump",
                     "torch.save", "torch.serialization.save", "torch.from_file",
                     "torch.UntypedStorage.from_file", "joblib.dump",
                     "logging.FileHandler"], WRITE),
}  # fmt: skip

#: ``open``-like callables: a file write when the calling function holds a write-mode constant.
OPENERS = ["builtins.open", "io.open", "_io.open", "codecs.open", "gzip.open", "bz2.open", "lzma.open",
           "pathlib.Path.open", "tarfile.open", "os.open", "os.fdopen"]  # fmt: skip
_WRITE_MODE = re.compile(r"^[rwxabt+]{1,3}$")

#: Packages walked, with their submodules (``None``: the standard library's top-level names).
PACKAGES = ["numpy", "torch", "sklearn", "joblib", "transformers", "accelerate", "fsspec", "scipy",
            "safetensors", "huggingface_hub", "tokenizers", "requests", "urllib3", "yaml",
            "cloudpickle", "filelock", "tqdm", "packaging", "jinja2", "networkx", "sympy",
            "threadpoolctl", "psutil", "regex"]  # fmt: skip
#: Submodule names not imported: tests, demos, side effects on import, optional backends that
#: need what is not installed, and the parts of transformers that are one module per model.
SKIP = re.compile(
    r"(^|\.)(tests?|testing|_testing|conftest|benchmarks?|__main__|setup|antigravity|this|idlelib|"
    r"tkinter|turtle|turtledemo|lib2to3|ensurepip|pydoc_data|_pyrepl|msilib|winreg|_winapi|msvcrt|"
    r"distutils|f2py|_distributor_init|__pyinstaller|_vendor|vendored|conftest)($|\.)"
    r"|^transformers\.models\.(?!auto($|\.))|^transformers\.(kernels|quantizers|integrations)\."
    r"|^torch\.(_inductor|_dynamo|testing|onnx|distributed|_functorch|ao|_export|export|fx\.experimental|"
    r"utils\.benchmark|utils\.tensorboard|contrib|_numpy|_prims|_refs|_decomp|_higher_order_ops|"
    r"_subclasses|sparse|nested|masked|backends|xpu|mps|mtia|cuda|_lazy|compiler|_library|package|"
    r"profiler|_logging|_strobelight|_vendor|jit\._|utils\._sympy|_custom_op)"
    r"|^scipy\.(?!io($|\.)|linalg\._|_lib\._)|^sympy\.(?!core\.sympify)"
)
MAX_MODULES_PER_PACKAGE = 1500
#: package -> the module whose ``__all__`` names it re-exports lazily
LAZY_REEXPORTS = {"transformers": "transformers.models.auto"}


def _modules() -> Iterator[types.ModuleType]:
    seen: set[str] = set()

    def load(name: str) -> types.ModuleType | None:
        if name in seen or SKIP.search(name):
            return None
        seen.add(name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stdout, sys.stdout = sys.stdout, io.StringIO()
                try:
                    return importlib.import_module(name)
                finally:
                    sys.stdout = stdout
        except BaseException:  # optional backends fail to import in many ways
            return None

    for name in sorted(sys.stdlib_module_names):
        module = load(name)
        if module is not None:
            yield module
            yield from _submodules(module, load, 200)
    for name in PACKAGES:
        module = load(name)
        if module is not None:
            yield module
            yield from _submodules(module, load, MAX_MODULES_PER_PACKAGE)


def _submodules(module: types.ModuleType, load: Any, limit: int) -> Iterator[types.ModuleType]:
    """Submodules, depth first, importing only names SKIP lets through (``pkgutil.walk_packages``
    would import every package it passes to find its children)."""
    count = 0
    stack = [module]
    while stack:
        current = stack.pop()
        path = getattr(current, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.iter_modules(path, current.__name__ + "."):
            if count >= limit:
                return
            sub = load(info.name)
            if sub is not None:
                count += 1
                yield sub
                if info.ispkg:
                    stack.append(sub)


def _members(module: types.ModuleType) -> Iterator[tuple[str, Any]]:
    """(dotted path, object) for every function, class and method importable from ``module``."""
    for name, obj in list(vars(module).items()):
        if name.startswith("__"):
            continue
        path = f"{module.__name__}.{name}"
        if inspect.isclass(obj):
            yield path, obj
            for attr, member in list(vars(obj).items()):
                if attr.startswith("__") and attr not in ("__reduce__", "__setstate__", "__call__"):
                    continue
                func = member.__func__ if isinstance(member, classmethod | staticmethod) else member
                if callable(func) and not inspect.isclass(func):
                    yield f"{path}.{attr}", func
        elif callable(obj) and not isinstance(obj, types.ModuleType):
            yield path, obj


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except BaseException:  # noqa: S112 - not importable: try a shorter module name
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _references(func: Any) -> tuple[list[Any], bool]:
    """Objects the function's bytecode loads from globals (following attribute chains on modules
    and classes), and whether it holds a write-mode constant."""
    try:
        func = inspect.unwrap(func)
    except (ValueError, TypeError):
        return [], False
    code = getattr(func, "__code__", None)
    globs = getattr(func, "__globals__", None)
    if not isinstance(code, types.CodeType) or not isinstance(globs, dict):
        return [], False
    found: list[Any] = []
    write_mode = False
    builtin_ns = vars(builtins)
    for co in _code_objects(code):
        for const in co.co_consts:
            if isinstance(const, str) and _WRITE_MODE.match(const) and any(c in const for c in "wax+"):
                write_mode = True
        current: Any = None
        for ins in dis.get_instructions(co):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                name = ins.argval
                current = globs.get(name, builtin_ns.get(name))
                if current is not None:
                    found.append(current)
            elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and current is not None:
                if isinstance(current, types.ModuleType) or inspect.isclass(current):
                    try:
                        current = inspect.getattr_static(current, ins.argval)
                    except AttributeError:
                        current = None
                    if isinstance(current, classmethod | staticmethod):
                        current = current.__func__
                    if current is not None:
                        found.append(current)
                else:
                    current = None
            else:
                current = None
    return found, write_mode


def derive() -> tuple[dict[str, str], int]:
    sinks: dict[int, tuple[str, str]] = {}
    keep: list[Any] = []
    for dotted, category in SINKS.items():
        obj = _resolve(dotted)
        if obj is not None:
            sinks[id(obj)] = (dotted, category)
            keep.append(obj)
    openers = {id(o) for o in (_resolve(d) for d in OPENERS) if o is not None}

    paths: dict[int, list[str]] = {}
    objects: dict[int, Any] = {}
    classes: list[tuple[str, type]] = []
    modules = 0
    for module in _modules():
        modules += 1
        for path, obj in _members(module):
            key = id(obj)
            objects[key] = obj
            paths.setdefault(key, []).append(path)
            if inspect.isclass(obj):
                classes.append((path, obj))
    for package, source in LAZY_REEXPORTS.items():
        # Lazy packages (transformers) re-export names on first access: list the ones we walked.
        try:
            pkg, src = importlib.import_module(package), importlib.import_module(source)
        except ImportError:
            continue
        for name in getattr(src, "__all__", ()):
            obj = getattr(src, name, None)
            if obj is not None and getattr(pkg, name, None) is obj:
                paths.setdefault(id(obj), []).append(f"{package}.{name}")
                if inspect.isclass(obj):
                    classes.append((f"{package}.{name}", obj))

    # reason[id] = (category, chain)
    reason: dict[int, tuple[str, str]] = {k: (c, d) for k, (d, c) in sinks.items()}
    edges: dict[int, tuple[list[int], bool]] = {}
    for key, obj in list(objects.items()):
        target = obj.__init__ if inspect.isclass(obj) and "__init__" in vars(obj) else obj
        refs, write_mode = _references(target)
        edges[key] = ([id(r) for r in refs], write_mode)
        for ref in refs:
            objects.setdefault(id(ref), ref)
    for key, (refs, write_mode) in edges.items():
        if key not in reason and write_mode and any(r in openers for r in refs):
            reason[key] = (WRITE, "open(..., write mode)")
    for _ in range(MAX_DEPTH):
        new: dict[int, tuple[str, str]] = {}
        for key, (refs, _write) in edges.items():
            if key in reason:
                continue
            for ref in refs:
                if ref in reason and ref != key:
                    category, chain = reason[ref]
                    if ref not in sinks:
                        chain = f"{min(paths.get(ref, ['?']), key=len)} -> {chain}"
                    new[key] = (category, chain)
                    break
        if not new:
            break
        reason.update(new)

    # Methods a class inherits: ``AutoModel.from_pretrained`` is the base class's function.
    for path, cls in classes:
        for name in dir(cls):
            try:
                member = inspect.getattr_static(cls, name)
            except AttributeError:
                continue
            func = member.__func__ if isinstance(member, classmethod | staticmethod) else member
            key = id(func)
            if key in reason and f"{path}.{name}" not in paths.get(key, []) and not name.startswith("__"):
                paths.setdefault(key, []).append(f"{path}.{name}")

    out: dict[str, str] = {}
    for key, (category, chain) in reason.items():
        for path in paths.get(key, []):
            found = _resolve(path)
            if getattr(found, "__func__", found) is not objects.get(key):
                continue  # not importable under this name (a module whose __name__ differs)
            if key in sinks:
                sink = sinks[key][0]
                out[path] = category if path == sink else f"{category}: same object as {sink}"
            else:
                out[path] = f"{category}: reaches {chain}"
    return dict(sorted(out.items())), modules


def write(entries: dict[str, str], modules: int) -> str:
    lines = [
        '"""Generated by tools/derive_catalogue.py from the pinned libraries; do not edit.',
        "",
        f"{len(entries)} callables (from {modules} modules) whose body reaches code execution, process",
        "creation, native-library loading, import by name, another loader, network access or a file",
        'write, each with the reason. See docs/scan.md ("Catalogue").',
        '"""',
        "",
        "from typing import Final",
        "",
        "DERIVED: Final[dict[str, str]] = {",
    ]
    lines += [f"    {name!r}: {why!r}," for name, why in entries.items()]
    lines += ["}  # fmt: skip", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    entries, modules = derive()
    args.out.write_text(write(entries, modules))
    print(f"{len(entries)} entries from {modules} modules -> {args.out}")


if __name__ == "__main__":
    main()
