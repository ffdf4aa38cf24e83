"""One rule for noise, used wherever two latencies are compared: the verdict, the CLI, the sweep's fronts, the
snapshots. A speed-up is the ratio of the medians of interleaved runs, and it comes with a confidence interval
from the interleaved pairs (run i of the original beside run i of the other model, so drift on a shared machine
moves both). Where the interval does not clear 1 by MIN_EFFECT there is no measurable difference, whatever the
medians say; two results whose intervals overlap are a tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.99
# Two sessions of the very same model differ by up to ~3 % here (memory placement): in 200 A/A comparisons of 30
# pairs, 5 intervals cleared 1, none by more than 1.3 %. A difference must clear 1 by this much to be called one.
MIN_EFFECT = 0.02


def speedup_interval(original_ms: Sequence[float], other_ms: Sequence[float]) -> tuple[float, float]:
    """A CONFIDENCE interval for the speed-up, from the ratios of the interleaved pairs (run i of the original over
    run i of the other model): the order statistics a sign test gives for their median, which hold their coverage
    whatever the timings' distribution. (A bootstrap of the ratio of medians called an A/A comparison a
    difference in 4 % of runs at 99 %.) Widened where needed to hold the ratio of the medians, the figure shown."""
    pairs = min(len(original_ms), len(other_ms))
    before, after = np.asarray(original_ms[:pairs], float), np.asarray(other_ms[:pairs], float)
    ratio = float(np.median(before) / np.median(after))
    rank = _sign_test_rank(pairs)
    if rank is None:  # too few pairs for any interval at this confidence: no difference can be claimed
        return 0.0, float("inf")
    ratios = np.sort(before / after)
    low, high = float(ratios[rank]), float(ratios[pairs - 1 - rank])
    return min(low, ratio), max(high, ratio)


def _sign_test_rank(pairs: int) -> int | None:
    """The largest k (0-based) such that the k-th smallest and k-th largest of `pairs` ratios bound their median
    with at least CONFIDENCE: P(Binomial(pairs, 1/2) <= k) <= (1 - CONFIDENCE) / 2."""
    tail, rank, cumulative = (1 - CONFIDENCE) / 2, None, 0.0
    for k in range(pairs):
        cumulative += math.comb(pairs, k) / 2**pairs
        if cumulative > tail:
            break
        rank = k
    return rank


def effect(low: float, high: float) -> str:
    """ "faster", "slower" or "no faster" (no measurable difference): only an interval clear of 1 by MIN_EFFECT
    says either."""
    return "faster" if low > 1 + MIN_EFFECT else "slower" if high < 1 / (1 + MIN_EFFECT) else "no faster"


def overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Two speed-up intervals that overlap are a tie: neither is measurably faster."""
    return first[0] <= second[1] and second[0] <= first[1]
