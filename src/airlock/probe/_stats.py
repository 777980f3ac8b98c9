"""Rates with Wilson score intervals, and the regression check against a baseline report."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Z95", "Rate", "Regression", "compare", "wilson"]

#: the normal quantile of a two-sided 95% interval
Z95: Final = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int
    low: float
    high: float

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    def to_json(self) -> dict[str, Any]:
        rate = self.rate
        return {
            "successes": self.successes,
            "trials": self.trials,
            "rate": None if rate is None else round(rate, 6),
            "ci_low": round(self.low, 6),
            "ci_high": round(self.high, 6),
        }


def wilson(successes: int, trials: int, z: float = Z95) -> Rate:
    """The Wilson score interval of ``successes`` in ``trials`` (Wilson 1927): unlike the normal
    approximation it stays in [0, 1] and is not empty at 0 or ``trials`` successes. No trials:
    the interval is all of [0, 1] (nothing is known)."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return Rate(0, 0, 0.0, 1.0)
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    # exact ends at 0 and n (rounding would leave 1e-17 below 0 or above 1)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Rate(successes, trials, low, high)


@dataclass(frozen=True)
class Regression:
    family: str
    #: the baseline's rate and the upper end of its interval
    baseline_rate: float | None
    baseline_high: float
    current_rate: float | None
    reason: str


def compare(baseline: dict[str, Rate], current: dict[str, Rate]) -> tuple[Regression, ...]:
    """Families whose current success rate rose above the upper end of the baseline's 95% interval,
    and families the baseline measured that this run did not (fail closed: an unmeasured family
    cannot be shown not to have regressed). Families new in this run are not regressions.

    Fail closed for single attacks too: each attack the baseline measured and this run did not (the
    current family has fewer trials: errors, timeouts, the budget) counts as a success here. A
    target that answers 500, stalls or sends a malformed body exactly where it would have leaked
    must not pass the gate on the few replies it chose to give."""
    out = []
    for family, before in baseline.items():
        now = current.get(family)
        if before.trials == 0:
            continue
        if now is None or now.rate is None:
            out.append(Regression(family, before.rate, before.high, None, "not measured in this run"))
            continue
        missing = max(0, before.trials - now.trials)
        worst = (now.successes + missing) / (now.trials + missing)
        if worst > before.high:
            unmeasured = (
                f"; {missing} attack(s) the baseline measured were not measured in this run (errors, "
                f"timeouts, budget) and count as successes: worst case {worst:.3f}"
                if missing
                else ""
            )
            out.append(
                Regression(
                    family,
                    before.rate,
                    before.high,
                    now.rate,
                    f"success rate {now.rate:.3f} ({now.successes}/{now.trials}){unmeasured} is above the "
                    f"baseline's interval [{before.low:.3f}, {before.high:.3f}]",
                )
            )
    return tuple(out)
