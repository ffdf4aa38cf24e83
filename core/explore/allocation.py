"""Sensitivity-aware allocation: spread a global pruning target (or a mean bit width) over the layers using the
sensitivity scan, more where it hurts less, preferring layers that carry a larger share of the parameters and MACs.

Greedy on the scan's curves (linear between scanned amounts, no drop at 0): repeatedly take the step, on any
layer, that costs the least quality per unit of (parameter share + MAC share) removed, until the target
fraction of all prunable weights is reached; the last step is cut to land on the target exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.compression.pipeline import compress
from core.compression.recipe import LayerOverride, PruneConfig, QuantConfig, Recipe
from core.errors import InvalidSettingError
from core.explore.sensitivity import Sensitivity
from core.measure.summaries import report_on_export
from core.model import Model


@dataclass(frozen=True)
class Plan:
    name: str  # "uniform", "global" or "auto"
    amounts: dict[str, float]  # per layer node: the fraction of its weights pruned
    recipe: Recipe


def _curve(scan: Sensitivity, row: int) -> list[tuple[float, float]]:
    """(amount, drop) points of one layer, starting at (0, 0), with drops made non-decreasing (noise aside)."""
    points = [(0.0, 0.0)]
    for column, setting in enumerate(scan.settings):
        kind, value = setting.split()
        drop = scan.drops[row][column]
        if kind == "prune" and drop is not None:
            points.append((float(value), max(drop, points[-1][1])))
    return sorted(points)


def allocate(model: Model, scan: Sensitivity, target: float) -> dict[str, float]:
    """Per-layer pruning amounts whose weighted total is `target` of all prunable weights."""
    PruneConfig(target)
    layers = [layer for layer in model.layers if layer.node in scan.layers]
    total_params = sum(layer.params for layer in layers)
    total_macs = max(sum(model.macs[layer.name] for layer in layers), 1)
    curves = {layer.node: _curve(scan, scan.layers.index(layer.node)) for layer in layers}
    step = dict.fromkeys(curves, 0)  # index into each layer's curve
    amounts = dict.fromkeys(curves, 0.0)
    needed = target * total_params
    removed = 0.0
    while removed < needed:
        best = None
        for layer in layers:
            curve, position = curves[layer.node], step[layer.node]
            if position + 1 >= len(curve):
                continue
            (amount, drop), (next_amount, next_drop) = curve[position], curve[position + 1]
            share = (next_amount - amount) * (layer.params / total_params + model.macs[layer.name] / total_macs)
            cost = (next_drop - drop) / share
            if best is None or cost < best[0]:
                best = (cost, layer, next_amount)
        if best is None:
            break  # every layer at its largest scanned amount
        _, layer, next_amount = best
        gained = (next_amount - amounts[layer.node]) * layer.params
        if removed + gained > needed:  # cut the last step to land on the target
            amounts[layer.node] += (needed - removed) / layer.params
            break
        amounts[layer.node] = next_amount
        step[layer.node] += 1
        removed += gained
    return {node: round(amount, 4) for node, amount in amounts.items()}


def allocate_bits(model: Model, scan: Sensitivity, target_bits: float) -> dict[str, int]:
    """Per-layer weight bits (from the scanned widths) whose parameter-weighted mean is at most `target_bits`,
    lowering first where the scan says it costs least per bit saved."""
    widths = sorted({int(setting.split()[1]) for setting in scan.settings if setting.startswith("bits ")}, reverse=True)
    if not widths:
        raise InvalidSettingError("the sensitivity scan has no bit widths to allocate from")
    if not widths[-1] <= target_bits <= widths[0]:
        raise InvalidSettingError(
            f"a mean of {target_bits} bits is outside the scanned widths {widths[-1]}-{widths[0]}"
        )
    layers = [layer for layer in model.layers if layer.node in scan.layers]
    total = sum(layer.params for layer in layers)
    level = dict.fromkeys((layer.node for layer in layers), 0)

    def drop(layer, index: int) -> float:
        column = scan.settings.index(f"bits {widths[index]}")
        return scan.drops[scan.layers.index(layer.node)][column] or 0.0

    mean = float(widths[0])
    while mean > target_bits + 1e-9:
        candidates = [
            (
                (drop(layer, level[layer.node] + 1) - drop(layer, level[layer.node]))
                / ((widths[level[layer.node]] - widths[level[layer.node] + 1]) * layer.params / total),
                layer,
            )  # fmt: skip
            for layer in layers
            if level[layer.node] + 1 < len(widths)
        ]
        if not candidates:
            break
        _, layer = min(candidates, key=lambda item: item[0])
        mean -= (widths[level[layer.node]] - widths[level[layer.node] + 1]) * layer.params / total
        level[layer.node] += 1
    return {node: widths[index] for node, index in level.items()}


def plans(model: Model, scan: Sensitivity, target: float, bits: int = 32) -> list[Plan]:
    """The uniform, global and sensitivity-aware ("auto") plans for one target, as recipes to compare."""
    quant = QuantConfig(bits)
    auto = allocate(model, scan, target)
    overrides = tuple(LayerOverride(node, amount=amount) for node, amount in auto.items() if amount > 0)
    return [
        Plan("uniform", {layer.node: target for layer in model.layers}, Recipe.for_model(model, PruneConfig(target, scope="layer"), quant)),
        Plan("global", {}, Recipe.for_model(model, PruneConfig(target, scope="global"), quant)),
        Plan("auto", auto, Recipe.for_model(model, PruneConfig(0.0), quant, overrides)),
    ]  # fmt: skip


@dataclass(frozen=True)
class ScoredPlan:
    """A plan compressed, exported and measured on the model's evaluation data."""

    plan: Plan
    metric: str  # "accuracy" or "cosine" (core.data.quality)
    quality: float
    sparsity: float  # of all prunable weights
    layer_sparsity: dict[str, float]  # per layer node


def compare_plans(model: Model, scan: Sensitivity, target: float, bits: int = 32) -> list[ScoredPlan]:
    """The uniform, global and auto plans for one target, each scored on its export."""
    scored = []
    for plan in plans(model, scan, target, bits):
        report = report_on_export(compress(model, plan.recipe))
        metric, quality = report.quality
        sparsity = {layer.node: layer.sparsity for layer in report.layers}
        scored.append(ScoredPlan(plan, metric, quality, report.totals["sparsity"], sparsity))
    return scored
