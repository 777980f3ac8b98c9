"""Result types of a scan: verdicts, findings and reports. All frozen records (``airlock._record``:
dataclass behaviour without importing ``dataclasses`` at start-up); renderers only read them."""

from __future__ import annotations

import enum

from airlock._record import record

#: ``typing.TYPE_CHECKING`` without importing ``typing``: this module is on the path of every scan
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "SCHEMA_VERSION",
    "FileReport",
    "Finding",
    "Location",
    "Report",
    "Severity",
    "Skipped",
    "Verdict",
]

#: Version of the JSON report schema (docs/scan.md). Bumped on any incompatible change.
SCHEMA_VERSION: Final = "1.1"


class Verdict(enum.Enum):
    """What airlock concludes about a file or a whole scan. Anything not proven clean is not clean."""

    CLEAN = "CLEAN"
    SUSPICIOUS = "SUSPICIOUS"
    ERROR = "ERROR"
    MALICIOUS = "MALICIOUS"

    @property
    def exit_code(self) -> int:
        """0 clean, 1 malicious, 2 error, 3 suspicious only."""
        return _EXIT_CODES[self]

    @property
    def rank(self) -> int:
        """Order used to combine verdicts: the worst one wins (MALICIOUS > ERROR > SUSPICIOUS > CLEAN)."""
        return _RANKS[self]

    @staticmethod
    def worst(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict:
        result = Verdict.CLEAN
        for verdict in verdicts:
            # mostly the same verdict again (a tree of clean files): an identity test, no lookups
            if verdict is not result and verdict.rank > result.rank:
                result = verdict
        return result


_EXIT_CODES: Final = {Verdict.CLEAN: 0, Verdict.MALICIOUS: 1, Verdict.ERROR: 2, Verdict.SUSPICIOUS: 3}
_RANKS: Final = {Verdict.CLEAN: 0, Verdict.SUSPICIOUS: 1, Verdict.ERROR: 2, Verdict.MALICIOUS: 3}


class Severity(enum.Enum):
    """How much one finding weighs. INFO findings never change a verdict."""

    INFO = "INFO"
    SUSPICIOUS = "SUSPICIOUS"
    ERROR = "ERROR"
    MALICIOUS = "MALICIOUS"

    @property
    def verdict(self) -> Verdict:
        return _SEVERITY_VERDICT[self]


_SEVERITY_VERDICT: Final = {
    Severity.INFO: Verdict.CLEAN,
    Severity.SUSPICIOUS: Verdict.SUSPICIOUS,
    Severity.ERROR: Verdict.ERROR,
    Severity.MALICIOUS: Verdict.MALICIOUS,
}


@record
class Location:
    """Where a finding is: the file, the chain of archive members or embedded streams inside it
    (outermost first), and the byte offset inside the innermost one."""

    path: str
    members: tuple[str, ...] = ()
    offset: int | None = None

    def __str__(self) -> str:
        text = self.path
        for member in self.members:
            text += f" > {member}"
        if self.offset is not None:
            text += f" @ {self.offset}"
        return text


@record
class Finding:
    """One thing airlock found. ``rule`` is a stable identifier documented in docs/scan.md."""

    rule: str
    severity: Severity
    message: str
    location: Location
    #: the dotted name of the callable involved, e.g. ``os.system``
    callable: str | None = None
    #: one line of what would run, e.g. ``os.system('touch /tmp/x')``
    evidence: str | None = None
    #: how many times the same rule fired for the same callable in this file (first one located)
    count: int = 1


@record
class Skipped:
    """A file that was not analysed, and why. Skipped files are listed, never called clean."""

    path: str
    reason: str


@record
class FileReport:
    """The result for one file on disk (archive members are reported inside their file)."""

    path: str
    format: str | None
    verdict: Verdict
    findings: tuple[Finding, ...]
    size: int
    seconds: float
    #: Hugging Face cache: ``path`` is the snapshot link the loader opens, ``blob`` the file whose
    #: bytes were read (``blobs/<hash>``); None for every other file
    blob: str | None = None


@record
class Report:
    """The result of one scan."""

    root: str
    files: tuple[FileReport, ...]
    skipped: tuple[Skipped, ...] = ()
    #: insecure options that were in force (``--unsafe-...``), shown in every rendering
    unsafe_options: tuple[str, ...] = ()
    #: allowances added on the command line or from a policy file, shown in every rendering
    allowances: tuple[str, ...] = ()
    #: when the scan ran on verified bytes (``--lock``, ``--signature``, ``--expect``): what vouched for them
    integrity: str | None = None
    #: every path given to the scan, when it was more than one (``root`` is then the first)
    roots: tuple[str, ...] = ()

    @property
    def all_roots(self) -> tuple[str, ...]:
        """The scanned paths, in the order given."""
        return self.roots or (self.root,)

    @property
    def verdict(self) -> Verdict:
        """The worst verdict over all files. A scan that analysed nothing is an ERROR, not CLEAN."""
        if not self.files:
            return Verdict.ERROR
        return Verdict.worst([f.verdict for f in self.files])

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    def findings(self) -> tuple[Finding, ...]:
        return tuple(finding for f in self.files for finding in f.findings)
