"""Unstructured pruning of models too large for per-weight ranks: an exact threshold found by radix selection.

`PruneIndex` keeps a rank per weight (4 bytes each) and needs an argsort (8 more bytes each) to build them: fine
for the dashboard's models, 6x the weights of a 2 GB model. Here a non-negative float32 score is read as its
uint32 bit pattern, which sorts the same way, and the k-th smallest key is found from two histograms of 2^16
bins (high half, then low half within the chosen high bin), streaming over the weights chunk by chunk. Pruning
everything below that key and the first of the keys equal to it, in layer order, zeroes exactly the same weights
as `PruneIndex`: its stable argsort breaks ties by the same order.

Pruned layers are computed when read (`LazyWeights`) and never all held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

CHUNK = 1 << 24  # elements per streamed slice: 64 MB of float32 and its temporaries, whatever the layer's size
BINS = 1 << 16


@dataclass(frozen=True)
class Cut:
    """In one layer: prune every key below `key`, and the first `ties` elements whose key equals it."""

    key: int
    ties: int


@dataclass(frozen=True, eq=False)
class ThresholdIndex:
    """Coarse histograms of the scores of one (model, criterion, scope, seed); any amount is then exact."""

    scope: str
    weights: Mapping[str, np.ndarray]
    criterion: str
    rng_states: Mapping[str, dict]  # random criterion: the generator's state before each layer's draw
    coarse: Mapping[str, np.ndarray]  # per layer: counts of (key >> 16)
    total: int

    @classmethod
    def prepare(cls, weights: Mapping[str, np.ndarray], criterion: str, scope: str, seed: int) -> ThresholdIndex:
        if criterion not in ("l1", "random"):
            raise ValueError(f"unstructured criterion {criterion!r}")
        rng = np.random.default_rng(seed)
        states = {}
        for name, values in weights.items():  # the same draws, in the same order, as PruneIndex's
            states[name] = rng.bit_generator.state
            if criterion == "random":
                rng.random(values.shape, dtype=np.float32)
        index = cls(scope, weights, criterion, states, {}, sum(values.size for values in weights.values()))
        coarse = {name: index._histogram(name, lambda keys: keys >> 16) for name in weights}
        object.__setattr__(index, "coarse", coarse)
        return index

    def _keys(self, name: str) -> Iterator[np.ndarray]:
        """The layer's scores as uint32 keys, in flat order, one chunk at a time."""
        flat = self.weights[name].reshape(-1)
        if self.criterion == "random":
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = self.rng_states[name]
            flat = rng.random(flat.size, dtype=np.float32)  # the layer's scores: one layer of memory, briefly
        for start in range(0, flat.size, CHUNK):
            chunk = flat[start : start + CHUNK]
            yield (chunk if self.criterion == "random" else np.abs(chunk)).view(np.uint32)

    def _histogram(self, name: str, bins_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Counts per bin over one layer's keys, kept as int32 where the layer allows (one per layer and model)."""
        counts = np.zeros(BINS, np.int64)
        for keys in self._keys(name):
            counts += np.bincount(bins_of(keys), minlength=BINS)
        return counts.astype(np.int32) if self.weights[name].size < 2**31 else counts

    @staticmethod
    def _summed(histograms: list[np.ndarray]) -> np.ndarray:
        total = np.zeros(BINS, np.int64)
        for counts in histograms:
            total += counts
        return total

    def cuts(self, amount: float, only: str | None = None) -> dict[str, Cut]:
        """Where to cut each layer (or just `only`, at its own amount) so exactly round(amount * n) are pruned."""
        if only is not None:
            return self._select([only], round(amount * self.weights[only].size))
        if self.scope == "layer":
            cuts = {}
            for name, values in self.weights.items():
                cuts |= self._select([name], round(amount * values.size))
            return cuts
        return self._select(list(self.weights), round(amount * self.total))

    def _select(self, names: list[str], count: int) -> dict[str, Cut]:
        if count == 0:
            return {name: Cut(0, 0) for name in names}
        cumulative = np.cumsum(self._summed([self.coarse[name] for name in names]))
        high = int(np.searchsorted(cumulative, count))
        below = int(cumulative[high - 1]) if high else 0
        fine = {
            name: self._histogram(name, lambda keys: keys[(keys >> 16) == high] & (BINS - 1))
            for name in names
            if self.coarse[name][high]  # layers with nothing in the chosen bin need no fine counts
        }
        cumulative = np.cumsum(self._summed(list(fine.values())))
        low = int(np.searchsorted(cumulative, count - below))
        below += int(cumulative[low - 1]) if low else 0
        ties_left = count - below  # keys equal to the threshold that must go too, first come first pruned
        cuts = {}
        for name in names:
            ties = min(ties_left, int(fine[name][low])) if name in fine else 0
            cuts[name] = Cut((high << 16) | low, ties)
            ties_left -= ties
        return cuts

    def pruned(self, name: str, cut: Cut) -> np.ndarray:
        """The layer with its pruned weights set to zero (a new array, or the read-only original when none is)."""
        values = self.weights[name]
        if cut.key == 0 and cut.ties == 0:
            return values
        keep = np.empty(values.size, bool)
        tied: list[np.ndarray] = []
        start = 0
        for keys in self._keys(name):
            keep[start : start + keys.size] = keys >= cut.key
            if cut.ties:
                tied.append(np.flatnonzero(keys == cut.key) + start)
            start += keys.size
        if cut.ties:
            keep[np.concatenate(tied)[: cut.ties]] = False  # the first `ties` equal to the threshold go too
        return np.where(keep.reshape(values.shape), values, np.float32(0))
