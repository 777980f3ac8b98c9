"""Which globals a pickle may import: allowlist profiles plus explicit allowances.

Decisions, in order:

1. a dynamic global (STACK_GLOBAL on computed values) or a dunder attribute walk
   (``builtins.__dict__.get``) is DANGEROUS;
2. an exact name on an active profile is ALLOWED;
3. a name (or the object an attribute walk reaches) in the catalogue of known-dangerous
   callables is DANGEROUS, with the catalogue's label;
4. an exact name allowed explicitly is ALLOWED;
5. anything else is UNKNOWN: SUSPICIOUS, pending a policy decision.

Allowances come only from the command line (``--allow``) or a policy file named on it
(``--policy FILE``); never from the current directory or the scanned files. An allowance never
overrides a DANGEROUS decision.
"""

from __future__ import annotations

import enum
from pathlib import Path

from airlock._analysis.catalogue import lookup
from airlock._analysis.profiles import PROFILES
from airlock._record import record
from airlock.errors import UsageError

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar, Final, NamedTuple
else:
    from airlock._record import NamedTuple

__all__ = ["DEFAULT_PROFILES", "Classification", "Decision", "Policy"]

DEFAULT_PROFILES: Final = tuple(PROFILES)


class Decision(enum.Enum):
    ALLOWED = "allowed"
    DANGEROUS = "dangerous"
    UNKNOWN = "unknown"


class Classification(NamedTuple):
    decision: Decision
    #: the name the decision is about: for attribute walks, the object actually reached
    name: str
    #: why: the allowlist reason, or the catalogue category
    reason: str


def _is_dunder(part: str) -> bool:
    return len(part) > 4 and part.startswith("__") and part.endswith("__")


#: the allowlist table of each combination of profiles used so far: name -> "profile: reason"
_TABLES: dict[tuple[str, ...], dict[str, str]] = {}


def _table_for(profiles: tuple[str, ...]) -> dict[str, str]:
    table = _TABLES.get(profiles)
    if table is None:
        table = {}
        for profile in profiles:
            for entry in PROFILES[profile]:
                table[entry.name] = f"{profile}: {entry.reason}"
        _TABLES[profiles] = table
    return table


@record
class Policy:
    """An immutable policy. ``Policy()`` is the default: every profile, no extra allowances."""

    profiles: tuple[str, ...] = DEFAULT_PROFILES
    #: extra exact dotted names allowed (``module.qualname``), from ``--allow`` or a policy file
    allow: frozenset[str] = frozenset()
    #: where the allowances came from, for reports
    sources: tuple[str, ...] = ()
    #: the active profiles' allowlist (not a field: set by ``__post_init__``, shared per profile set)
    _table: ClassVar[dict[str, str]]

    def __post_init__(self) -> None:
        unknown = [p for p in self.profiles if p not in PROFILES]
        if unknown:
            raise UsageError(f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(PROFILES)}")
        for name in self.allow:
            parts = name.split(".")
            if len(parts) < 2 or not all(p.isidentifier() for p in parts):
                raise UsageError(
                    f"allowance {name!r} is not an exact dotted name like 'mypkg.layers.MyLayer'"
                )
        object.__setattr__(self, "_table", _table_for(self.profiles))

    @classmethod
    def from_file(cls, path: Path, *, extra_allow: frozenset[str] = frozenset()) -> Policy:
        """Read a TOML policy file::

        profiles = ["python", "torch", "numpy"]   # optional; default: all
        allow = ["mypkg.layers.MyLayer"]            # optional exact names
        """
        import tomllib  # only when a policy file is named

        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read policy file {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"policy file {path} is not valid TOML: {exc}") from exc
        extra = set(data) - {"profiles", "allow"}
        if extra:
            raise UsageError(f"policy file {path}: unknown key(s) {', '.join(sorted(extra))}")
        profiles = data.get("profiles", list(DEFAULT_PROFILES))
        allow = data.get("allow", [])
        if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            raise UsageError(f"policy file {path}: 'profiles' must be a list of strings")
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            raise UsageError(f"policy file {path}: 'allow' must be a list of strings")
        return cls(tuple(profiles), frozenset(allow) | extra_allow, (str(path),))

    def classify(self, module: str, qualname: str, *, dynamic: bool = False) -> Classification:
        dotted = f"{module}.{qualname}"
        if dynamic:
            return Classification(Decision.DANGEROUS, dotted, "global built from computed values")
        parts = qualname.split(".")
        if any(_is_dunder(p) for p in parts) and dotted not in self._table:
            hit = lookup(dotted)
            if hit is not None and hit[0] == dotted:
                return Classification(Decision.DANGEROUS, dotted, hit[1])
            why = "dunder attribute walk reaches interpreter internals"
            return Classification(Decision.DANGEROUS, hit[0] if hit else dotted, why)
        allowed = self._table.get(dotted)
        if allowed is not None:
            return Classification(Decision.ALLOWED, dotted, allowed)
        if len(parts) > 1:
            # An attribute walk (``torch`` + ``serialization.os.system``): name the object it reaches.
            for start in range(len(parts) - 2, -1, -1):
                hit = lookup(".".join(parts[start:]))
                if hit is not None:
                    return Classification(
                        Decision.DANGEROUS, ".".join(parts[start:]), f"{hit[1]} via {dotted}"
                    )
        hit = lookup(dotted)
        if hit is not None:
            return Classification(Decision.DANGEROUS, dotted, hit[1])
        if dotted in self.allow:  # checked after the catalogue: an allowance never overrides it
            where = f" ({', '.join(self.sources)})" if self.sources else ""
            return Classification(Decision.ALLOWED, dotted, f"allowed explicitly{where}")
        return Classification(Decision.UNKNOWN, dotted, "not on any active allowlist profile")

    def classify_dotted(self, dotted: str) -> Classification:
        """Classify a resolved dotted path (from a computed call) whose module split is unknown."""
        module, _, qualname = dotted.partition(".")
        return self.classify(module, qualname or "?")
