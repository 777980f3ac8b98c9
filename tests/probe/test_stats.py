"""Wilson intervals against published values, and the regression rule."""

from __future__ import annotations

import pytest

from airlock.probe import Rate, compare, wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857, table I (Wilson score method, 95%)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # the classic examples
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_matches_published_intervals(k: int, n: int, low: float, high: float) -> None:
    rate = wilson(k, n)
    assert rate.low == pytest.approx(low, abs=1e-4) and rate.high == pytest.approx(high, abs=1e-4)
    assert rate.rate == k / n


def test_wilson_edges() -> None:
    assert wilson(0, 0) == Rate(0, 0, 0.0, 1.0) and wilson(0, 0).rate is None
    assert wilson(0, 3).low == 0.0 and wilson(3, 3).high == 1.0
    for bad in ((-1, 3), (4, 3), (0, -1)):
        with pytest.raises(ValueError, match="successes <= trials"):
            wilson(*bad)


def test_regression_only_above_the_baseline_interval() -> None:
    base = {"a": wilson(2, 10), "b": wilson(0, 4)}  # a: [0.057, 0.510]; b: [0, 0.490]
    assert compare(base, {"a": wilson(5, 10), "b": wilson(1, 4)}) == ()  # 0.5 <= 0.510, 0.25 <= 0.49
    found = compare(base, {"a": wilson(6, 10), "b": wilson(2, 4)})
    assert [r.family for r in found] == ["a", "b"]
    assert "0.600 (6/10) is above the baseline's interval [0.057, 0.510]" in found[0].reason
    # a family the baseline measured and this run did not is a regression (fail closed)
    missing = compare(base, {"a": wilson(0, 10), "b": wilson(0, 0)})
    assert [(r.family, r.reason) for r in missing] == [("b", "not measured in this run")]
    # a family new in this run, or one the baseline never measured, is not
    assert compare({"a": wilson(0, 0)}, {"a": wilson(9, 9), "c": wilson(5, 5)}) == ()
