"""Exposure (Carlini et al., "The Secret Sharer", USENIX Security 2019) and extraction measures.

Exposure of a canary ``s`` among the texts ``R`` of its format is ``log2|R| - log2 rank(s)``, the
rank by log-perplexity (1 = the most likely text of the format). The audit cannot score all of
``R``, so it draws ``N`` candidates uniformly from ``R`` without ``s`` and counts ``k``, the
candidates the model finds *at least as likely* as ``s`` (ties count against ``s``: exposure is
never overstated). The estimate of the fraction of ``R`` that ranks before ``s`` is
``(k + 1) / (N + 1)``, so

    exposure = log2(N + 1) - log2(k + 1)            (in [0, log2(N + 1)])

which is the exact exposure when the candidates are all of ``R`` but ``s`` (``N = |R| - 1``).
``log2(N + 1)`` is its *resolution*: a canary ranked first among ``N`` candidates reads
``log2(N + 1)`` bits whatever its true exposure beyond that. For a canary the model never saw
(exchangeable with the candidates), ``k`` is uniform on ``0..N``, hence
``P(exposure >= t) <= 2^-t``: a threshold of ``t`` bits flags such a record with probability at
most ``2^-t`` (:func:`default_threshold`).

Beyond the resolution, the Secret Sharer's extrapolation fits a distribution to the candidates'
log-perplexities and reads the canary's tail probability from it: :func:`extrapolated` fits a
normal distribution (the paper fits a skew-normal; a normal keeps this dependency-free and is
reported as an approximation, never used for the verdict).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "default_threshold",
    "edit_distance",
    "exposure",
    "extrapolated",
    "matched_prefix",
    "rank",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def rank(canary: float, others: Sequence[float]) -> int:
    """1 + how many of ``others`` (log-perplexities) are at most ``canary``'s (ties against it)."""
    return 1 + sum(1 for value in others if value <= canary)


def exposure(rank_: int, candidates: int) -> float:
    """``log2(N + 1) - log2(rank)`` for a rank among ``N`` candidates plus the canary."""
    if candidates < 1 or not 1 <= rank_ <= candidates + 1:
        raise ValueError(f"rank {rank_} among {candidates} candidates")
    return math.log2(candidates + 1) - math.log2(rank_)


def _log_normal_cdf(z: float) -> float:
    """log Phi(z), accurate in the far lower tail (where erfc underflows)."""
    if z > -30.0:
        return math.log(0.5 * math.erfc(-z / math.sqrt(2.0)))
    # Mills ratio series: Phi(z) ~ phi(z)/|z| * (1 - 1/z^2 + 3/z^4)
    series = 1.0 - 1.0 / z**2 + 3.0 / z**4
    return -0.5 * z * z - _HALF_LOG_2PI - math.log(-z) + math.log(series)


def extrapolated(canary: float, others: Sequence[float], space_bits: float) -> float | None:
    """``-log2 P(X <= canary)`` for X normal with the candidates' mean and deviation, at most
    ``space_bits``; None when the candidates do not spread (no distribution to fit)."""
    if len(others) < 2:
        return None
    mean = math.fsum(others) / len(others)
    spread = math.sqrt(math.fsum((v - mean) ** 2 for v in others) / (len(others) - 1))
    if not spread > 0.0:
        return None
    bits = -_log_normal_cdf((canary - mean) / spread) / math.log(2.0)
    return min(max(bits, 0.0), space_bits)


def default_threshold(records: int, alpha: float) -> float:
    """``log2(M / alpha)`` bits: with ``M`` records none of which the model saw, the chance that
    any is flagged is at most ``M * 2^-t = alpha`` (a union bound)."""
    if records < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"records={records}, alpha={alpha}")
    return math.log2(records / alpha)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), O(len(a) * len(b))."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def matched_prefix(got: str, expected: str) -> int:
    """How many leading characters of ``expected`` ``got`` reproduces."""
    count = 0
    for a, b in zip(got, expected, strict=False):
        if a != b:
            break
        count += 1
    return count
