"""Unstructured pruning: rank every weight once per model, then any amount is a compare against the ranks.

Ranking is the slow part (a sort over all prunable weights) and is done once in `PruneIndex.prepare`; a new
amount is then `rank >= k` per layer, which zeroes exactly round(amount * n) weights, ties included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CriterionInfo:
    help: str
    granularities: tuple[str, ...] | None = None  # the granularities it ranks for; None: every one

    def applies_to(self, granularity: str) -> bool:
        return self.granularities is None or granularity in self.granularities


CRITERIA: dict[str, CriterionInfo] = {
    "l1": CriterionInfo("smallest magnitude first: |w|, a channel's mean |w|, a block's last layer"),
    "l2": CriterionInfo(
        "smallest L2 norm (root-mean-square) of a channel's filter or a block's last layer", ("channel", "block")
    ),
    "activation": CriterionInfo(
        "smallest mean |activation| x filter norm on calibration inputs (blocks: |branch| / |skip|)",
        ("channel", "block"),
    ),
    "random": CriterionInfo("uniformly at random (seeded baseline)"),
}

SCOPES: dict[str, str] = {
    "global": "one threshold over all prunable weights (channels: scores normalised per coupled group)",
    "layer": "the same fraction in every layer (channels: in every group of coupled layers)",
}

# criterion -> (weights, rng) -> a score per weight; the lowest are pruned first (unstructured granularity)
ELEMENT_SCORES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "l1": lambda weights, rng: np.abs(weights),
    "random": lambda weights, rng: rng.random(weights.shape, dtype=np.float32),
}


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Each element's position in ascending score order (a permutation, so counts are exact despite ties)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.size, dtype=np.int32 if scores.size < 2**31 else np.int64)
    ranks[order] = np.arange(scores.size, dtype=ranks.dtype)
    return ranks


@dataclass(frozen=True, eq=False)
class PruneIndex:
    """Per-layer weight ranks for one (model, criterion, scope, seed); read-only once built."""

    scope: str
    ranks: Mapping[str, np.ndarray]  # flat ranks per layer; global ranks are over all layers together
    total: int

    @classmethod
    def prepare(cls, weights: Mapping[str, np.ndarray], criterion: str, scope: str, seed: int) -> PruneIndex:
        rng = np.random.default_rng(seed)
        scores = {name: ELEMENT_SCORES[criterion](values, rng).ravel() for name, values in weights.items()}
        total = sum(score.size for score in scores.values())
        if scope == "layer":
            ranks = {name: _ranks(score) for name, score in scores.items()}
        else:
            flat = _ranks(np.concatenate(list(scores.values())))
            ranks, start = {}, 0
            for name, score in scores.items():
                ranks[name] = flat[start : start + score.size]
                start += score.size
        for array in ranks.values():
            array.flags.writeable = False
        return cls(scope, ranks, total)

    def keep_masks(self, amount: float) -> dict[str, np.ndarray]:
        """Flat boolean masks, True where the weight is kept."""
        if self.scope == "layer":
            return {name: ranks >= round(amount * ranks.size) for name, ranks in self.ranks.items()}
        cutoff = round(amount * self.total)
        return {name: ranks >= cutoff for name, ranks in self.ranks.items()}


def prune(weights: Mapping[str, np.ndarray], index: PruneIndex, amount: float) -> dict[str, np.ndarray]:
    """New arrays with the pruned weights set to zero; the inputs are not touched."""
    if amount == 0:
        return dict(weights)
    masks = index.keep_masks(amount)
    return {
        name: np.where(masks[name].reshape(values.shape), values, np.float32(0)) for name, values in weights.items()
    }


def prune_layer(values: np.ndarray, ranks: np.ndarray, amount: float) -> np.ndarray:
    """One layer pruned at its own amount, by its weights' ranks (within-layer order is kept even when the ranks
    are global)."""
    count = round(amount * ranks.size)
    if count == 0:
        return values
    cutoff = np.partition(ranks, count - 1)[count - 1]
    return np.where((ranks > cutoff).reshape(values.shape), values, np.float32(0))
