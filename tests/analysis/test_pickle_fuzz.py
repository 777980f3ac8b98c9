"""Property tests: no input makes the pickle machine or the scan do anything but report.

Random bytes, truncations and bit flips of real fixtures only ever end in FormatError (or
LimitError) from the machine, never another exception, and a broken file is never CLEAN.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airlock
from airlock._analysis.pickle_vm import Machine
from airlock.limits import Limits
from tests.fixtures.attacks import ATTACKS

_SEEDS: list[bytes] = [
    pickle.dumps({"a": [1, 2.5, "x", b"y", None, True], "b": (1, 2), "c": {3, 4}}, protocol=p)
    for p in range(6)
]
_SMALL = Limits(max_pickle_opcodes=100_000, max_memo_entries=10_000, max_stack_items=10_000)


def _attack_bytes(tmp: Path) -> list[bytes]:
    out = []
    for attack in ATTACKS:
        # second-pickle: its first pickle alone is a complete, ordinary pickle, so a cut there is clean.
        if attack.id in ("byte-padding", "opcode-padding", "second-pickle"):
            continue
        out.append(attack.build(tmp, tmp / "pwned").read_bytes())
    return out


def _run(data: bytes) -> None:
    result = Machine(memoryview(data), _SMALL).run(0)
    # The machine never raises: errors are recorded on the result, and are always FormatErrors.
    if result.error is not None:
        assert isinstance(result.error, airlock.FormatError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _run(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_SEEDS), st.data())
def test_truncated_and_flipped(seed: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(seed)))
    _run(seed[:cut])
    index = data.draw(st.integers(0, len(seed) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(seed)
    flipped[index] ^= 1 << bit
    _run(bytes(flipped))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_scan_of_mutated_attacks_never_crashes_nor_says_clean_when_broken(
    tmp_path: Path, data: st.DataObject
) -> None:
    corpus = _attack_bytes(tmp_path)
    seed = data.draw(st.sampled_from(corpus))
    cut = data.draw(st.integers(1, len(seed) - 1))
    path = tmp_path / "mutant.pkl"
    path.write_bytes(seed[:cut])
    report = airlock.scan(path)
    # A truncated pickle never reaches STOP: it is never clean.
    assert report.verdict is not airlock.Verdict.CLEAN
    index = data.draw(st.integers(0, len(seed) - 1))
    flipped = bytearray(seed)
    flipped[index] ^= 0xFF
    path.write_bytes(bytes(flipped))
    airlock.scan(path)  # must return a report, whatever the verdict


def test_limits_stop_padding_before_the_machine_runs_away(tmp_path: Path) -> None:
    data = b"\x80\x04" + b"N0" * 300_000 + b"N."
    result = Machine(memoryview(data), _SMALL).run(0)
    assert isinstance(result.error, airlock.LimitError)
    assert "max_pickle_opcodes" in str(result.error)
    path = tmp_path / "padded.pkl"
    path.write_bytes(data)
    report = airlock.scan(path, limits=_SMALL)
    assert report.verdict is airlock.Verdict.ERROR
    assert any(f.rule == "limit.exceeded" for f in report.findings())


def test_deep_nesting_is_bounded(tmp_path: Path) -> None:
    # 200,000 nested lists: the graph is built iteratively and rendering is depth-bounded
    data = b"\x80\x04" + b"]" * 1 + b"(]" * 200_000 + b"e" * 200_000 + b"."
    path = tmp_path / "deep.pkl"
    path.write_bytes(data)
    report = airlock.scan(path)
    assert report.verdict in (airlock.Verdict.CLEAN, airlock.Verdict.ERROR)


def test_every_truncation_of_every_attack_is_never_clean(tmp_path: Path) -> None:
    """Exhaustive, not sampled: each prefix of each attack fixture is MALICIOUS or an error."""
    corpus = _attack_bytes(tmp_path)
    path = tmp_path / "prefix.pkl"
    for seed in corpus:
        for cut in range(1, len(seed)):
            path.write_bytes(seed[:cut])
            verdict = airlock.scan(path).verdict
            assert verdict is not airlock.Verdict.CLEAN, (seed[:cut], verdict)
