"""Known-dangerous callables: a *label* for things the allowlist already refuses.

This is not a denylist that decides safety: anything not on an allowlist profile is already at
least SUSPICIOUS. The catalogue only raises a global to MALICIOUS and says what it does. Entries
are exact dotted names; an entry covers the callable and any attribute reached through it
(``profile.Profile`` covers ``profile.Profile.runctx``). Module entries cover the whole module and
its submodules (``os`` covers ``os.system`` and ``os.path.join``).
"""

from __future__ import annotations

import functools

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["CATEGORY_NESTED", "DANGEROUS_MODULES", "DANGEROUS_NAMES", "NESTED_LOADERS", "lookup"]

CATEGORY_NESTED: Final = "nested deserialisation"

_EXEC: Final = "code execution"
_PROC: Final = "process execution"
_FILE: Final = "file system access"
_NET: Final = "network access"
_IMPORT: Final = "import machinery"
_ATTR: Final = "arbitrary attribute access"
_INDIRECT: Final = "indirect call"
_STATE: Final = "interpreter state"

#: Whole modules (and their submodules) whose globals have no business in a model file.
DANGEROUS_MODULES: Final[dict[str, str]] = {
    "os": _PROC, "posix": _PROC, "nt": _PROC, "subprocess": _PROC, "_posixsubprocess": _PROC,
    "pty": _PROC, "commands": _PROC, "popen2": _PROC, "multiprocessing": _PROC, "_multiprocessing": _PROC,
    "concurrent": _PROC, "asyncio": _PROC, "signal": _PROC, "_signal": _PROC, "threading": _PROC,
    "_thread": _PROC, "pexpect": _PROC, "sh": _PROC, "plumbum": _PROC, "fabric": _PROC, "paramiko": _NET,
    "socket": _NET, "_socket": _NET, "ssl": _NET, "select": _NET, "selectors": _NET, "socketserver": _NET,
    "http": _NET, "httplib": _NET, "urllib": _NET, "urllib2": _NET, "urllib3": _NET, "requests": _NET,
    "httpx": _NET, "aiohttp": _NET, "ftplib": _NET, "smtplib": _NET, "poplib": _NET, "imaplib": _PROC,
    "nntplib": _NET, "telnetlib": _NET, "xmlrpc": _NET, "webbrowser": _PROC, "wsgiref": _NET,
    "_interpreters": _EXEC, "_xxsubinterpreters": _EXEC, "interpreters": _EXEC, "_testcapi": _EXEC,
    "_testinternalcapi": _EXEC, "ctypes": _EXEC, "_ctypes": _EXEC, "cffi": _EXEC, "builtins.exec": _EXEC,
    "code": _EXEC, "codeop": _EXEC, "pdb": _EXEC, "bdb": _EXEC, "trace": _EXEC, "profile": _EXEC,
    "cProfile": _EXEC, "_lsprof": _EXEC, "timeit": _EXEC, "runpy": _EXEC, "doctest": _EXEC,
    "idlelib": _EXEC, "lib2to3": _EXEC, "pydoc": _PROC, "test": _EXEC, "unittest": _EXEC,
    "distutils": _PROC, "setuptools": _PROC, "pip": _PROC, "_pyrepl": _PROC, "ensurepip": _PROC,
    "venv": _PROC, "site": _IMPORT, "sysconfig": _STATE, "_aix_support": _PROC, "_osx_support": _PROC,
    "zipimport": _IMPORT, "importlib": _IMPORT, "imp": _IMPORT, "pkgutil": _IMPORT, "sys": _STATE,
    "gc": _STATE, "inspect": _STATE, "types": _EXEC, "marshal": CATEGORY_NESTED, "pickle": CATEGORY_NESTED,
    "_pickle": CATEGORY_NESTED, "cPickle": CATEGORY_NESTED, "pickletools": CATEGORY_NESTED,
    "cloudpickle": CATEGORY_NESTED, "dill": CATEGORY_NESTED, "shelve": CATEGORY_NESTED,
    "shutil": _FILE, "tempfile": _FILE, "glob": _FILE,
    "fileinput": _FILE, "io": _FILE, "_io": _FILE, "pathlib": _FILE, "zipfile": _FILE, "tarfile": _FILE,
    "logging.config": _EXEC, "logging.handlers": _FILE, "mmap": _FILE, "sqlite3": _FILE, "dbm": _FILE,
    "operator": _ATTR, "_operator": _ATTR, "functools": _INDIRECT, "_functools": _INDIRECT,
    "uuid._get_command_stdout": _PROC, "platform._syscmd_file": _PROC, "platform._syscmd_ver": _PROC,
    "numpy.f2py": _EXEC, "numpy.testing": _EXEC, "numpy.distutils": _PROC, "numpy.load": CATEGORY_NESTED,
    "numpy.lib.npyio": CATEGORY_NESTED, "numpy.ctypeslib": _EXEC,
    "torch.utils.bottleneck": _EXEC, "torch.utils.collect_env": _PROC, "torch.utils.cpp_extension": _EXEC,
    "torch.utils._config_module": _EXEC, "torch.utils.data.datapipes.utils.decoder": CATEGORY_NESTED,
    "torch._dynamo": _EXEC, "torch._inductor": _EXEC, "torch.fx.experimental": _EXEC,
    "torch.jit.unsupported_tensor_ops": _EXEC, "torch.testing": _EXEC, "torch.hub": _EXEC,
    "torch.serialization": CATEGORY_NESTED, "torch.load": CATEGORY_NESTED, "torch.jit": _EXEC,
    "torch.package": _EXEC, "torch.distributed": _NET, "torch.multiprocessing": _PROC,
    "torch.compile": _EXEC, "torch._ops": _EXEC, "torch.ops": _EXEC, "torch.library": _EXEC,
    "torch.storage._load_from_bytes": CATEGORY_NESTED, "joblib.load": CATEGORY_NESTED,
    "joblib.numpy_pickle.load": CATEGORY_NESTED, "joblib.numpy_pickle_compat": CATEGORY_NESTED,
    "joblib.parallel": _PROC, "joblib._parallel_backends": _PROC,
    "keras.models.load_model": CATEGORY_NESTED, "tensorflow": _EXEC, "jinja2": _EXEC,
    "yaml": CATEGORY_NESTED, "jsonpickle": CATEGORY_NESTED, "huggingface_hub": _NET,
    "transformers.dynamic_module_utils": _EXEC, "transformers.utils.hub": _NET,
    "rlcompleter": _EXEC, "tkinter": _EXEC, "_tkinter": _EXEC, "platform": _PROC, "_sitebuiltins": _PROC,
    "mailbox": _FILE, "modulefinder": _IMPORT, "sched": _INDIRECT, "atexit": _INDIRECT,
    "pandas.io.pickle": CATEGORY_NESTED, "numpy.lib._datasource": _NET, "joblib.memory": _FILE,
    "torch.export": CATEGORY_NESTED, "compileall": _FILE, "py_compile": _FILE, "zipapp": _FILE,
}  # fmt: skip

#: Exact dotted names (and everything reached through them) outside the modules above.
DANGEROUS_NAMES: Final[dict[str, str]] = {
    "builtins.eval": _EXEC, "builtins.exec": _EXEC, "builtins.compile": _EXEC,
    "builtins.__import__": _IMPORT, "builtins.open": _FILE, "builtins.getattr": _ATTR,
    "builtins.setattr": _ATTR, "builtins.delattr": _ATTR, "builtins.globals": _STATE,
    "builtins.locals": _STATE, "builtins.vars": _STATE, "builtins.breakpoint": _EXEC,
    "builtins.input": _STATE, "builtins.exit": _STATE, "builtins.quit": _STATE, "builtins.help": _PROC,
    "builtins.apply": _INDIRECT, "builtins.execfile": _EXEC, "builtins.reload": _IMPORT,
    "builtins.memoryview": _STATE, "builtins.type": _EXEC, "builtins.super": _ATTR,
    "builtins.classmethod": _EXEC, "builtins.staticmethod": _EXEC, "builtins.property": _EXEC,
    "builtins.map": _INDIRECT, "builtins.filter": _INDIRECT, "builtins.sorted": _INDIRECT,
    "builtins.max": _INDIRECT, "builtins.min": _INDIRECT, "builtins.iter": _INDIRECT,
    "builtins.next": _INDIRECT, "builtins.object.__reduce_ex__": _INDIRECT,
    "logging.FileHandler": _FILE, "logging.StreamHandler": _FILE, "logging.basicConfig": _FILE,
    "logging.Logger.manager": _STATE, "copyreg.add_extension": _STATE, "copyreg.dispatch_table": _STATE,
    "copyreg.pickle": _STATE, "codecs.open": _FILE, "linecache.getline": _FILE, "linecache.updatecache": _FILE,
    "tokenize.open": _FILE, "encodings.idna": _STATE, "base64.b64decode": CATEGORY_NESTED,
    "base64.b85decode": CATEGORY_NESTED, "binascii.a2b_base64": CATEGORY_NESTED, "codecs.decode": CATEGORY_NESTED,
    "zlib.decompress": CATEGORY_NESTED, "bz2.decompress": CATEGORY_NESTED, "lzma.decompress": CATEGORY_NESTED,
    "gzip.decompress": CATEGORY_NESTED, "gzip.open": _FILE, "bz2.open": _FILE, "lzma.open": _FILE,
    "torch.save": _FILE, "torch.from_file": _FILE, "torch.classes": _EXEC,
    "numpy.save": _FILE, "numpy.savez": _FILE, "numpy.fromfile": _FILE, "numpy.memmap": _FILE,
    "numpy.ndarray.tofile": _FILE, "numpy.loadtxt": _FILE, "numpy.genfromtxt": _FILE,
    "weakref.finalize": _INDIRECT, "itertools.starmap": _INDIRECT, "itertools.accumulate": _INDIRECT,
    "itertools.filterfalse": _INDIRECT, "itertools.dropwhile": _INDIRECT, "itertools.takewhile": _INDIRECT,
    "itertools.groupby": _INDIRECT, "uuid.getnode": _PROC, "uuid.uuid1": _PROC, "uuid._ifconfig_getnode": _PROC,
    "uuid._ip_getnode": _PROC, "uuid._arp_getnode": _PROC, "uuid._lanscan_getnode": _PROC,
    "uuid._netstat_getnode": _PROC, "pandas.read_pickle": CATEGORY_NESTED,
    "numpy.vectorize": _INDIRECT, "numpy.frompyfunc": _INDIRECT, "numpy.piecewise": _INDIRECT,
    "numpy.apply_along_axis": _INDIRECT, "numpy.apply_over_axes": _INDIRECT, "numpy.fromfunction": _INDIRECT,
    "torch.UntypedStorage.from_file": _FILE, "torch.TypedStorage.from_file": _FILE,
    "torch.storage.UntypedStorage.from_file": _FILE, "torch.storage.TypedStorage.from_file": _FILE,
    "joblib.Memory": _FILE, "numpy.lib.format.read_array": CATEGORY_NESTED,
    # joblib <= 0.9 array placeholders: joblib.load's BUILD replaces one by numpy.load(<the file
    # its state names, joined to the pickle's folder>, allow_pickle=True) (NDArrayWrapper) or a
    # zlib file read from that path (ZNDArrayWrapper): a path like ../x or /x loads a pickle
    # outside anything scanned
    "joblib.numpy_pickle.NDArrayWrapper": CATEGORY_NESTED, "joblib.numpy_pickle.ZNDArrayWrapper": _FILE,
    "joblib.numpy_pickle.load_compatibility": CATEGORY_NESTED,
    "numpy.lib._format_impl.read_array": CATEGORY_NESTED,
}  # fmt: skip

#: Callables that deserialise their first argument: constant bytes passed to them are analysed.
NESTED_LOADERS: Final = frozenset(
    {
        "pickle.loads", "_pickle.loads", "pickle._loads", "cPickle.loads", "cloudpickle.loads",
        "cloudpickle.cloudpickle.loads", "dill.loads", "dill._dill.loads", "torch.storage._load_from_bytes",
        "pickle.Unpickler", "_pickle.Unpickler",
    }
)  # fmt: skip


@functools.cache
def _derived_entries() -> dict[str, str]:
    # Loaded on first use: scans of ordinary files (every global on an allowlist) never need it.
    from airlock._analysis.catalogue_derived import DERIVED

    return DERIVED


def lookup(dotted: str) -> tuple[str, str] | None:
    """``(matched entry, category)`` when ``dotted`` or any dotted prefix of it is catalogued.

    Entries are the hand-written ones above and the derived ones (``catalogue_derived.py``,
    generated by tools/derive_catalogue.py from the pinned libraries), which list every
    importable path of a dangerous object: a re-export (``numpy.lib._npyio_impl.load`` for
    ``numpy.load``) is found under the name the pickle uses.
    """
    parts = dotted.split(".")
    derived = _derived_entries()
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        category = DANGEROUS_NAMES.get(prefix) or DANGEROUS_MODULES.get(prefix)
        if category is not None:
            return prefix, category
        reason = derived.get(prefix)
        if reason is not None:
            return prefix, reason
    return None
