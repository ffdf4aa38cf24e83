"""Live-path cost of a new pruning amount on `resnet18`, against torch.nn.utils.prune.global_unstructured.

Both prune the same 11.7 M weights with global L1 magnitude; both are timed in this one run, so the ratio
means something on a noisy shared machine. Run: .venv/bin/python bench/live_prune.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch.nn.utils import prune as torch_prune

from core import PruneConfig, Recipe, compress, load_model, prepare_index

AMOUNTS = [0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.4, 0.6, 0.8]
TORCH_AMOUNTS = [0.3, 0.5, 0.7]


def torch_global_unstructured(weights: dict[str, np.ndarray], amount: float) -> tuple[float, int]:
    """Seconds taken and weights zeroed by torch's global L1 pruning over the same tensors."""
    holder = torch.nn.Module()
    modules = []
    for index, values in enumerate(weights.values()):
        module = torch.nn.Module()
        module.weight = torch.nn.Parameter(torch.from_numpy(values.copy()))
        holder.add_module(f"m{index}", module)
        modules.append(module)
    started = time.perf_counter()
    torch_prune.global_unstructured([(m, "weight") for m in modules], torch_prune.L1Unstructured, amount=amount)
    elapsed = time.perf_counter() - started
    return elapsed, sum(int((m.weight == 0).sum()) for m in modules)


def main() -> None:
    model = load_model("resnet18")
    print(
        f"resnet18: {model.prunable_params:,} prunable weights in {len(model.layers)} layers; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    started = time.perf_counter()
    index = prepare_index(model, Recipe(PruneConfig(0.5, "l1", "global")))
    model.macs  # noqa: B018 - also once per model: the MAC table every result carries
    print(f"one-time preparation (rank all weights, MAC table): {time.perf_counter() - started:.2f} s")

    ours, zeroed = [], {}
    for amount in AMOUNTS:
        started = time.perf_counter()
        compressed = compress(model, Recipe(PruneConfig(amount, "l1", "global")), index)
        ours.append(time.perf_counter() - started)
        zeroed[amount] = sum(int(np.count_nonzero(v == 0)) for v in compressed.weights.values())
    theirs = []
    for amount in TORCH_AMOUNTS:
        seconds, torch_zeroed = torch_global_unstructured(dict(model.weights), amount)
        theirs.append(seconds)
        print(f"  amount {amount}: squeezelab zeroed {zeroed[amount]:,}, torch zeroed {torch_zeroed:,}")
    our_median, their_median = statistics.median(ours), statistics.median(theirs)
    print(
        f"squeezelab live path, new amount: median {our_median * 1000:.1f} ms over {len(ours)} amounts "
        f"(max {max(ours) * 1000:.1f} ms)"
    )
    print(f"torch.nn.utils.prune.global_unstructured: median {their_median * 1000:.0f} ms over {len(theirs)} amounts")
    print(f"ratio: squeezelab is {their_median / our_median:.0f}x faster per new amount")
    print(f"target <= 100 ms median: {'met' if our_median <= 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
