from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import prune as torch_prune

from core.compression.pruning import PruneIndex, prune


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {
        "a": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
        "b": (rng.standard_normal((10, 64)) * 0.01).astype(np.float32),  # small magnitudes: global pruning eats it
        "c": np.round(rng.standard_normal((7, 13)), 1).astype(np.float32),  # many ties
    }
    weights["c"][0, :5] = 0.0  # weights that are already zero
    return weights


def _zeros(weights: dict[str, np.ndarray]) -> dict[str, int]:
    return {name: int(np.count_nonzero(values == 0)) for name, values in weights.items()}


@pytest.mark.parametrize("criterion", ["l1", "random"])
@pytest.mark.parametrize("amount", [0.0, 0.1, 0.333, 0.5, 0.9, 0.99])
def test_layer_scope_prunes_the_exact_fraction_of_every_layer(criterion, amount):
    weights = _weights()
    index = PruneIndex.prepare(weights, criterion, "layer", seed=3)
    masks = index.keep_masks(amount)
    pruned = prune(weights, index, amount)
    for name, values in weights.items():
        assert abs(int(np.count_nonzero(~masks[name])) - amount * values.size) <= 0.5
        expected_zeros = np.count_nonzero(~masks[name] | (values.ravel() == 0))
        assert np.count_nonzero(pruned[name] == 0) == expected_zeros


@pytest.mark.parametrize("amount", [0.05, 0.25, 0.5, 0.75, 0.95])
def test_global_l1_prunes_the_exact_fraction_overall_and_smallest_first(amount):
    weights = _weights()
    pruned = prune(weights, PruneIndex.prepare(weights, "l1", "global", seed=0), amount)
    total = sum(values.size for values in weights.values())
    zeros = sum(_zeros(pruned).values())
    assert abs(zeros - amount * total) <= 1
    kept = np.concatenate([np.abs(pruned[n][pruned[n] != 0]) for n in weights])
    removed = np.concatenate([np.abs(weights[n][(pruned[n] == 0)]) for n in weights])
    assert removed.max() <= kept.min()


def test_global_l1_matches_torch_global_unstructured():
    weights = _weights()
    modules = []
    for values in weights.values():
        module = torch.nn.Module()
        module.weight = torch.nn.Parameter(torch.from_numpy(values.copy()))
        modules.append(module)
    torch_prune.global_unstructured([(m, "weight") for m in modules], torch_prune.L1Unstructured, amount=0.6)
    ours = prune(weights, PruneIndex.prepare(weights, "l1", "global", seed=0), 0.6)
    for module, name in zip(modules, weights, strict=True):
        assert int((module.weight == 0).sum()) == int(np.count_nonzero(ours[name] == 0))


def test_global_pruning_can_collapse_a_small_layer():
    weights = _weights()
    pruned = prune(weights, PruneIndex.prepare(weights, "l1", "global", seed=0), 0.5)
    assert np.count_nonzero(pruned["b"]) == 0  # every |w| in b is ~100x smaller than elsewhere


def test_random_criterion_is_seeded():
    weights = _weights()
    first = prune(weights, PruneIndex.prepare(weights, "random", "global", seed=7), 0.5)
    again = prune(weights, PruneIndex.prepare(weights, "random", "global", seed=7), 0.5)
    other = prune(weights, PruneIndex.prepare(weights, "random", "global", seed=8), 0.5)
    assert all(np.array_equal(first[n], again[n]) for n in weights)
    assert not all(np.array_equal(first[n], other[n]) for n in weights)


def test_pruning_returns_new_arrays_and_leaves_the_input_alone():
    weights = _weights()
    copies = {name: values.copy() for name, values in weights.items()}
    pruned = prune(weights, PruneIndex.prepare(weights, "l1", "layer", seed=0), 0.8)
    assert all(np.array_equal(weights[n], copies[n]) for n in weights)
    assert all(pruned[n] is not weights[n] for n in weights)
    surviving = {n: pruned[n][pruned[n] != 0] for n in weights}
    assert all(np.isin(surviving[n], weights[n]).all() for n in weights)  # kept weights are unchanged values
