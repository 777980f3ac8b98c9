"""Catalogue lookup as a table: exact entries, dotted-prefix coverage, no match on a bare text prefix.

The walk of every entry against the pinned environment (a misspelt module fails) lives in
tests/analysis/test_catalogue.py::test_every_entry_names_something_real (not repeated here: it
imports half the ecosystem). These tests pin the lookup rules themselves.
"""

from __future__ import annotations

import pytest

from airlock._analysis.catalogue import (
    CATEGORY_NESTED,
    DANGEROUS_MODULES,
    DANGEROUS_NAMES,
    NESTED_LOADERS,
    lookup,
)
from airlock._analysis.catalogue_derived import DERIVED

CATEGORIES = {
    "code execution",
    "process execution",
    "file system access",
    "network access",
    "import machinery",
    "arbitrary attribute access",
    "indirect call",
    "interpreter state",
    CATEGORY_NESTED,
}


def _is_dotted(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


@pytest.mark.parametrize("table", [DANGEROUS_MODULES, DANGEROUS_NAMES], ids=["modules", "names"])
def test_every_hand_written_entry_is_found_as_itself(table: dict[str, str]) -> None:
    for name, category in table.items():
        assert _is_dotted(name), name
        assert category in CATEGORIES, (name, category)
        hit = lookup(name)
        assert hit is not None and hit[0] == name, (name, hit)
        # and covers what is reached through it
        below = lookup(name + ".anything")
        assert below is not None and below[0] == name, (name, below)
        # but not a longer name that only starts with the same text (unless that is an entry too)
        if name + "x" not in table and name + "x" not in DERIVED:
            longer = lookup(name + "x")
            assert longer is None or longer[0] != name, (name, longer)


#: Modules that must stay catalogued as whole modules (a dropped or misspelt entry fails here even
#: when the derived table still names some of their members). Kept by hand, on purpose.
REQUIRED_MODULES = {
    "os": "process execution", "posix": "process execution", "subprocess": "process execution",
    "pty": "process execution", "multiprocessing": "process execution", "asyncio": "process execution",
    "socket": "network access", "ssl": "network access", "http": "network access", "urllib": "network access",
    "requests": "network access", "ftplib": "network access", "smtplib": "network access",
    "ctypes": "code execution", "code": "code execution", "runpy": "code execution", "pdb": "code execution",
    "timeit": "code execution", "types": "code execution", "importlib": "import machinery",
    "zipimport": "import machinery", "sys": "interpreter state", "gc": "interpreter state",
    "marshal": CATEGORY_NESTED, "pickle": CATEGORY_NESTED, "_pickle": CATEGORY_NESTED, "shelve": CATEGORY_NESTED,
    "shutil": "file system access", "tempfile": "file system access", "pathlib": "file system access",
    "io": "file system access", "operator": "arbitrary attribute access", "functools": "indirect call",
    "torch.hub": "code execution", "torch.jit": "code execution", "torch.serialization": CATEGORY_NESTED,
    "numpy.f2py": "code execution", "jinja2": "code execution", "yaml": CATEGORY_NESTED,
}  # fmt: skip
REQUIRED_NAMES = {
    "builtins.eval": "code execution", "builtins.exec": "code execution", "builtins.compile": "code execution",
    "builtins.__import__": "import machinery", "builtins.open": "file system access",
    "builtins.getattr": "arbitrary attribute access", "builtins.setattr": "arbitrary attribute access",
    "builtins.globals": "interpreter state", "builtins.breakpoint": "code execution",
    "copyreg.add_extension": "interpreter state", "torch.save": "file system access",
    "numpy.memmap": "file system access", "codecs.decode": CATEGORY_NESTED, "zlib.decompress": CATEGORY_NESTED,
}  # fmt: skip


@pytest.mark.parametrize(("name", "category"), sorted({**REQUIRED_MODULES, **REQUIRED_NAMES}.items()))
def test_required_entries_are_hand_written_and_cover_their_members(name: str, category: str) -> None:
    table = DANGEROUS_NAMES if name in REQUIRED_NAMES else DANGEROUS_MODULES
    assert table.get(name) == category
    # a member no derived entry names is still covered, by the hand-written entry itself
    assert lookup(f"{name}.airlock_unlisted_member") == (name, category)


def test_names_win_over_modules_at_the_same_prefix() -> None:
    # builtins.exec is in both tables with the same category; names are checked first
    assert DANGEROUS_NAMES["builtins.exec"] == DANGEROUS_MODULES["builtins.exec"]
    assert lookup("builtins.exec") == ("builtins.exec", "code execution")


def test_every_derived_entry_is_found_as_itself() -> None:
    assert len(DERIVED) > 100
    for name, reason in DERIVED.items():
        assert _is_dotted(name), name
        hit = lookup(name)
        assert hit is not None, name
        # a hand-written entry covering a shorter prefix may name it first; never a longer one
        assert name == hit[0] or name.startswith(hit[0] + "."), (name, hit)
        assert reason


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [
        ("os", ("os", "process execution")),
        ("os.path.join", ("os", "process execution")),
        ("posix.system", ("posix", "process execution")),
        ("subprocess.Popen", ("subprocess", "process execution")),
        ("socket.create_connection", ("socket", "network access")),
        ("builtins.eval", ("builtins.eval", "code execution")),
        ("builtins.getattr", ("builtins.getattr", "arbitrary attribute access")),
        ("builtins.exec.x", ("builtins.exec", "code execution")),
        ("torch.utils.collect_env.x", ("torch.utils.collect_env", "process execution")),
        ("logging.config.dictConfig", ("logging.config", "code execution")),
        ("numpy.load", ("numpy.load", CATEGORY_NESTED)),
        ("numpy.loadtxt.x", ("numpy.loadtxt", "file system access")),
        ("pickle.loads", ("pickle", CATEGORY_NESTED)),
        ("operator.attrgetter", ("operator", "arbitrary attribute access")),
        ("functools.partial", ("functools", "indirect call")),
    ],
)
def test_known_answers(dotted: str, expected: tuple[str, str]) -> None:
    hit = lookup(dotted)
    assert hit is not None
    if hit[0] in DERIVED:
        # the derived table names re-exports and members more precisely: the longest prefix wins
        assert hit[0] == dotted or dotted.startswith(hit[0] + ".")
        assert hit[0].startswith(expected[0])
        assert hit[1] == DERIVED[hit[0]]
    else:
        assert hit == expected


@pytest.mark.parametrize(
    "dotted",
    [
        "osx",
        "osx.system",
        "xos.system",
        "mypkg.os",  # ``os`` only as the first part counts; walks are the policy's job
        "torch.loadx",
        "builtins.print",
        "builtins.evalx",
        "logging.getLogger",
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "numpy.core.multiarray._reconstruct",
        "",
    ],
)
def test_not_catalogued(dotted: str) -> None:
    assert lookup(dotted) is None


def test_nested_loaders_are_catalogued_nested() -> None:
    for name in NESTED_LOADERS:
        hit = lookup(name)
        assert hit is not None, name
        assert hit[1].startswith(CATEGORY_NESTED), (name, hit)
