"""Policy.classify, table-driven over every allowlist profile entry and its near-miss neighbours.

An allowlist is matched on the exact dotted name only: a name that starts with an allowed name
(``torch._utils._rebuild_tensor_v2x``), ends with one, is a prefix of one, lives in another module or
walks an attribute of an allowed callable is never ALLOWED.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock._analysis.profiles import PROFILES
from airlock.errors import UsageError
from airlock.policy import DEFAULT_PROFILES, Classification, Decision, Policy

DEFAULT = Policy()
ALL_NAMES = {entry.name for entry in (e for entries in PROFILES.values() for e in entries)}


def _split(dotted: str) -> tuple[str, str]:
    module, _, qualname = dotted.rpartition(".")
    return module, qualname


def neighbours(name: str) -> list[str]:
    """Names one edit away from ``name`` that must not inherit its allowance."""
    module, qualname = _split(name)
    return [
        name + "x",  # starts with the allowed name
        name + "_v9",
        name + ".system",  # attribute reached through the allowed callable
        name[:-1],  # a prefix of the allowed name
        "x" + name,  # ends with the allowed name (same suffix)
        f"{module}x.{qualname}",  # same qualname, neighbouring module
        f"evil.{qualname}",  # same qualname, other module
        f"evil.{name}",  # the whole allowed name under another package
        f"{module}.x{qualname}",
    ]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_entry_is_allowed_with_its_reason(profile: str) -> None:
    policy = Policy(profiles=(profile,))
    for entry in PROFILES[profile]:
        result = policy.classify(*_split(entry.name))
        assert result == Classification(Decision.ALLOWED, entry.name, f"{profile}: {entry.reason}"), entry
        assert DEFAULT.classify(*_split(entry.name)).decision is Decision.ALLOWED
        # the module split the pickle chose does not matter for an exact name
        first, _, rest = entry.name.partition(".")
        assert policy.classify(first, rest).decision is Decision.ALLOWED, entry


@pytest.mark.parametrize("profile", list(PROFILES))
def test_near_miss_neighbours_are_never_allowed(profile: str) -> None:
    for entry in PROFILES[profile]:
        for near in neighbours(entry.name):
            if near in ALL_NAMES:
                continue
            result = DEFAULT.classify(*_split(near))
            assert result.decision is not Decision.ALLOWED, (entry.name, near, result)
            assert result.decision in (Decision.UNKNOWN, Decision.DANGEROUS)


@pytest.mark.parametrize(
    "near",
    [
        "torch._utils._rebuild_tensor_v2x",
        "torch._utils._rebuild_tensor_v2.x",
        "torch._utils._rebuild_tenso",
        "torch._utilsx._rebuild_tensor_v2",
        "xtorch._utils._rebuild_tensor_v2",
        "collections.OrderedDictx",
        "collections.OrderedDic",
        "builtins.lis",
        "builtins.listx",
        "numpy.core.multiarray._reconstructx",
    ],
)
def test_named_near_misses_are_unknown(near: str) -> None:
    result = DEFAULT.classify(*_split(near))
    assert result == Classification(Decision.UNKNOWN, near, "not on any active allowlist profile")


def test_profile_entries_only_count_when_their_profile_is_active() -> None:
    torch_only = Policy(profiles=("torch",))
    assert torch_only.classify("collections", "OrderedDict").decision is Decision.UNKNOWN
    assert torch_only.classify("numpy", "ndarray").decision is Decision.UNKNOWN
    assert torch_only.classify("torch._utils", "_rebuild_tensor_v2").decision is Decision.ALLOWED
    assert Policy(profiles=()).classify("torch._utils", "_rebuild_tensor_v2").decision is Decision.UNKNOWN


def test_default_policy_has_every_profile() -> None:
    assert DEFAULT.profiles == DEFAULT_PROFILES == tuple(PROFILES)


def test_dynamic_global_is_dangerous_even_when_allowed() -> None:
    result = DEFAULT.classify("collections", "OrderedDict", dynamic=True)
    assert result == Classification(
        Decision.DANGEROUS, "collections.OrderedDict", "global built from computed values"
    )


@pytest.mark.parametrize(
    ("module", "qualname", "name", "reason"),
    [
        (
            "builtins",
            "__dict__.get",
            "builtins.__dict__.get",
            "dunder attribute walk reaches interpreter internals",
        ),
        (
            "torch",
            "Tensor.__setstate__",
            "torch.Tensor.__setstate__",
            "dunder attribute walk reaches interpreter internals",
        ),
        (
            "collections",
            "OrderedDict.__init__",
            "collections.OrderedDict.__init__",
            "dunder attribute walk reaches interpreter internals",
        ),
        ("builtins", "__import__", "builtins.__import__", "import machinery"),
        ("builtins", "object.__reduce_ex__", "builtins.object.__reduce_ex__", "indirect call"),
        # a dunder walk from a catalogued name names the catalogue entry it starts from
        ("os", "__dict__.system", "os", "dunder attribute walk reaches interpreter internals"),
    ],
)
def test_dunder_walks_are_dangerous(module: str, qualname: str, name: str, reason: str) -> None:
    assert DEFAULT.classify(module, qualname) == Classification(Decision.DANGEROUS, name, reason)


@pytest.mark.parametrize("part", ["__", "___", "____", "_x_", "__x", "x__"])
def test_short_or_one_sided_underscores_are_not_dunders(part: str) -> None:
    result = DEFAULT.classify("mypkg", f"Layer.{part}")
    assert result.decision is Decision.UNKNOWN, result


def test_shortest_dunder_is_a_dunder() -> None:
    assert DEFAULT.classify("mypkg", "Layer.__x__").decision is Decision.DANGEROUS


def test_an_allowed_dunder_name_is_allowed_only_with_its_profile() -> None:
    assert DEFAULT.classify("copyreg", "__newobj__").decision is Decision.ALLOWED
    narrowed = Policy(profiles=("torch",)).classify("copyreg", "__newobj__")
    assert narrowed == Classification(
        Decision.DANGEROUS, "copyreg.__newobj__", "dunder attribute walk reaches interpreter internals"
    )


@pytest.mark.parametrize(
    ("module", "qualname", "name", "reason"),
    [
        ("os", "system", "os.system", "process creation"),
        ("builtins", "getattr", "builtins.getattr", "arbitrary attribute access"),
        (
            "torch",
            "serialization.os.system",
            "os.system",
            "process creation via torch.serialization.os.system",
        ),
        ("mypkg", "helpers.os.system", "os.system", "process creation via mypkg.helpers.os.system"),
        ("mypkg", "a.subprocess.Popen", "subprocess.Popen", "process execution via mypkg.a.subprocess.Popen"),
        ("mypkg", "builtins.exec", "builtins.exec", "code execution via mypkg.builtins.exec"),
    ],
)
def test_catalogued_and_attribute_walks_name_what_they_reach(
    module: str, qualname: str, name: str, reason: str
) -> None:
    result = DEFAULT.classify(module, qualname)
    assert result.decision is Decision.DANGEROUS
    assert result.name == name
    assert result.reason.split(" via ")[-1] == reason.rsplit(" via ", maxsplit=1)[-1]
    assert (" via " in result.reason) == (" via " in reason)


def test_walk_is_tried_from_every_start() -> None:
    # "path.join" is not catalogued; "os.path.join" (one part further left) is, through "os"
    assert DEFAULT.classify("mypkg", "a.os.path.join") == Classification(
        Decision.DANGEROUS, "os.path.join", "process execution via mypkg.a.os.path.join"
    )
    assert DEFAULT.classify("mypkg", "a.b.os.path.join").name == "os.path.join"


@pytest.mark.parametrize("attr", ["os", "sys", "types", "io", "signal", "code"])
def test_an_attribute_named_like_a_module_is_not_that_module(attr: str) -> None:
    # ``mypkg.Config.io`` is an attribute of a user class, not the io module: the walk only
    # matches dotted tails of two or more parts (``x.os.system``), never the last part alone
    assert DEFAULT.classify("mypkg", f"Config.{attr}") == Classification(
        Decision.UNKNOWN, f"mypkg.Config.{attr}", "not on any active allowlist profile"
    )


def test_walk_reaching_nothing_catalogued_is_unknown() -> None:
    assert DEFAULT.classify("mypkg", "a.b.c") == Classification(
        Decision.UNKNOWN, "mypkg.a.b.c", "not on any active allowlist profile"
    )


def test_explicit_allowance_is_exact_and_names_its_source() -> None:
    policy = Policy(allow=frozenset({"mypkg.layers.MyLayer"}), sources=("p.toml", "cli"))
    assert policy.classify("mypkg.layers", "MyLayer") == Classification(
        Decision.ALLOWED, "mypkg.layers.MyLayer", "allowed explicitly (p.toml, cli)"
    )
    assert Policy(allow=frozenset({"mypkg.L"})).classify("mypkg", "L").reason == "allowed explicitly"
    for near in [
        "mypkg.layers.MyLayerx",
        "mypkg.layers.MyLaye",
        "mypkg.layers.MyLayer.x",
        "xmypkg.layers.MyLayer",
    ]:
        assert policy.classify(*_split(near)).decision is Decision.UNKNOWN, near


@pytest.mark.parametrize(
    ("module", "qualname"),
    [("os", "system"), ("builtins", "eval"), ("mypkg", "os.system"), ("subprocess", "Popen")],
)
def test_an_allowance_never_overrides_the_catalogue(module: str, qualname: str) -> None:
    # ``mypkg`` + ``os.system`` is an attribute walk from the allowed module to os.system
    policy = Policy(allow=frozenset({f"{module}.{qualname}"}))
    assert policy.classify(module, qualname).decision is Decision.DANGEROUS


def test_an_allowance_never_overrides_a_dunder_walk() -> None:
    policy = Policy(allow=frozenset({"mypkg.L.__init__"}))
    assert policy.classify("mypkg", "L.__init__").decision is Decision.DANGEROUS


@pytest.mark.parametrize("profiles", [("nope",), ("torch", "Torch"), ("python", "")])
def test_unknown_profile_is_a_usage_error(profiles: tuple[str, ...]) -> None:
    with pytest.raises(UsageError, match="unknown profile"):
        Policy(profiles=profiles)


def test_unknown_profile_message_lists_both() -> None:
    with pytest.raises(UsageError) as caught:
        Policy(profiles=("nope", "Torch"))
    assert str(caught.value) == (
        "unknown profile(s) nope, Torch; known: python, torch, numpy, argparse, sklearn, transformers"
    )


@pytest.mark.parametrize("name", ["os", "", "a..b", "a.", ".a", "1a.b", "a.b-c", "a.b c", "a.*"])
def test_malformed_allowance_is_a_usage_error(name: str) -> None:
    with pytest.raises(UsageError, match="exact dotted name"):
        Policy(allow=frozenset({name}))


@pytest.mark.parametrize("name", ["a.b", "mypkg.layers.MyLayer", "_m._x"])
def test_wellformed_allowance(name: str) -> None:
    assert name in Policy(allow=frozenset({name})).allow


def test_classify_dotted() -> None:
    assert DEFAULT.classify_dotted("os.system").decision is Decision.DANGEROUS
    assert DEFAULT.classify_dotted("collections.OrderedDict").decision is Decision.ALLOWED
    assert DEFAULT.classify_dotted("mypkg") == Classification(
        Decision.UNKNOWN, "mypkg.?", "not on any active allowlist profile"
    )


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('profiles = ["torch"]\nallow = ["mypkg.L"]\n', encoding="utf-8")
    policy = Policy.from_file(path, extra_allow=frozenset({"other.M"}))
    assert policy.profiles == ("torch",)
    assert policy.allow == frozenset({"mypkg.L", "other.M"})
    assert policy.sources == (str(path),)
    assert policy.classify("mypkg", "L").reason == f"allowed explicitly ({path})"
    assert policy.classify("collections", "OrderedDict").decision is Decision.UNKNOWN


def test_from_file_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("", encoding="utf-8")
    policy = Policy.from_file(path)
    assert (policy.profiles, policy.allow) == (DEFAULT_PROFILES, frozenset())


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("profiles = [", "not valid TOML"),
        ("other = 1\nzz = 2", "unknown key\\(s\\) other, zz$"),
        ('profiles = "torch"', "'profiles' must be a list of strings"),
        ("profiles = [1]", "'profiles' must be a list of strings"),
        ('allow = "a.b"', "'allow' must be a list of strings"),
        ("allow = [1]", "'allow' must be a list of strings"),
        ('profiles = ["nope"]', "unknown profile"),
        ('allow = ["os"]', "exact dotted name"),
    ],
)
def test_from_file_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=match):
        Policy.from_file(path)


def test_from_file_unreadable_or_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read policy file"):
        Policy.from_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"allow = ['\xff']")
    with pytest.raises(UsageError, match="not valid TOML"):
        Policy.from_file(bad)
