"""Pareto sweep: a grid of settings, each compressed, exported and measured on its exported bytes for quality,
size and ONNX Runtime latency (interleaved with the original), and the points no other point beats."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from core.compression.activations import ACTIVATION_MODES
from core.compression.export import export_model, export_size
from core.compression.granularities import GRANULARITIES, require_in_memory
from core.compression.pipeline import compress, prepare_index, resolve_activation_mode
from core.compression.recipe import FLOAT_BITS, PruneConfig, QuantConfig, Recipe
from core.data.quality import measure, metric_of
from core.measure.benchmark import measure_latency
from core.measure.noise import speedup_interval
from core.model import Model

DEFAULT_AMOUNTS = (0.0, 0.25, 0.5, 0.75)
DEFAULT_BITS = (32, 8, 4)
DEFAULT_BUDGET_S = 1.0  # latency per point: enough to rank settings; the chosen one is measured properly after


@dataclass(frozen=True)
class SweepPoint:
    granularity: str
    amount: float
    bits: int
    activations: str
    metric: str  # "accuracy" or "cosine"
    quality: float
    size_bytes: int
    macs: int
    latency_ms: float  # median of the exported model
    original_latency_ms: float  # median of the original, interleaved in the same run
    speedup: float
    speedup_interval: tuple[float, float]  # its noise (core.measure.noise): points whose intervals overlap tie
    front_latency: bool = False  # not beaten on (quality, latency) by any other point beyond noise
    front_size: bool = False  # not beaten on (quality, size)

    def recipe(self, model: Model) -> Recipe:
        return Recipe.for_model(
            model,
            PruneConfig(self.amount, granularity=self.granularity),
            QuantConfig(self.bits, self.activations if self.bits != FLOAT_BITS else "none"),
        )


def pareto_front(
    points: Sequence[tuple[float, float]], spans: Sequence[tuple[float, float]] | None = None
) -> list[bool]:
    """For (quality to maximise, cost to minimise) pairs: True where no other point is at least as good on both
    and better on one. `spans`: each cost's noise interval (low, high); a cost is better than another only when
    its interval lies wholly below, so points within noise of each other tie on cost."""
    spans = spans or [(cost, cost) for _, cost in points]

    def dominates(j: int, i: int) -> bool:
        (quality_j, _), (quality_i, _) = points[j], points[i]
        no_worse = spans[j][0] <= spans[i][1]
        better = spans[j][1] < spans[i][0]
        return quality_j >= quality_i and no_worse and (quality_j > quality_i or better)

    return [not any(dominates(j, i) for j in range(len(points)) if j != i) for i in range(len(points))]


def sweep(
    model: Model,
    amounts: Sequence[float],
    bits: Sequence[int],
    granularities: Sequence[str] = ("unstructured",),
    activations: str = "none",
    budget_s: float = DEFAULT_BUDGET_S,
    threads: int | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> list[SweepPoint]:
    """Every combination, measured; a cancelled sweep returns the points that finished, fronts computed on them."""
    grid = [(granularity, amount, width) for granularity in granularities for amount in amounts for width in bits]
    for granularity, amount, width in grid:  # every setting checked before any work starts
        PruneConfig(amount, granularity=granularity)
        QuantConfig(width, activations if width != FLOAT_BITS else "none")
        if GRANULARITIES[granularity].needs_weights_in_memory and amount > 0:
            require_in_memory(model, f"{granularity} pruning")
        if width != FLOAT_BITS and ACTIVATION_MODES[mode := resolve_activation_mode(model, activations)[0]].int8:
            require_in_memory(model, f"{mode} int8 activations")
    indexes: dict[str, object] = {}
    points: list[SweepPoint] = []
    for position, (granularity, amount, width) in enumerate(grid):
        if should_stop and should_stop():
            break
        recipe = Recipe(
            PruneConfig(amount, granularity=granularity),
            QuantConfig(width, activations if width != FLOAT_BITS else "none"),
        )
        if amount > 0 and granularity not in indexes:
            indexes[granularity] = prepare_index(model, recipe)
        compressed = compress(model, recipe, indexes.get(granularity))  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory(prefix="squeezelab-sweep-") as work:  # used by exports over 2 GB
            data = export_model(compressed, Path(work))
            outputs = model.outputs_of(data)
            judge = metric_of(model)
            metric, quality = judge.name, judge.measured(measure(model, outputs))
            (original, measured), _ = measure_latency([model.runnable, data], model.latency_feed, threads=threads,
                                                      budget_s=budget_s, min_runs=10)  # fmt: skip
            interval = speedup_interval(original.samples, measured.samples)
            size = export_size(data)
        points.append(
            SweepPoint(
                granularity,
                amount,
                width,
                recipe.quant.activations,
                metric,
                quality,
                size,
                int(sum(compressed.macs.values())),
                measured.median,
                original.median,
                original.median / measured.median,
                interval,
            )  # fmt: skip
        )
        if on_point:
            on_point(points[-1])
        if progress:
            progress((position + 1) / len(grid))
    return with_fronts(points)


def with_fronts(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """The points with their Pareto-front flags computed among themselves."""
    # latency relative to the original measured beside it, with its noise: drift between points cancels out
    by_latency = pareto_front(
        [(point.quality, 1 / point.speedup) for point in points],
        [(1 / point.speedup_interval[1], 1 / point.speedup_interval[0]) for point in points],
    )
    by_size = pareto_front([(point.quality, point.size_bytes) for point in points])
    flags = zip(points, by_latency, by_size, strict=True)
    return [replace(point, front_latency=latency, front_size=size) for point, latency, size in flags]


def to_csv(points: Sequence[SweepPoint]) -> str:
    buffer = io.StringIO()
    names = [name for field in fields(SweepPoint) for name in _csv_names(field.name)]
    writer = csv.DictWriter(buffer, fieldnames=names)
    writer.writeheader()
    for point in points:
        row = asdict(point)
        row["speedup_low"], row["speedup_high"] = row.pop("speedup_interval")
        writer.writerow({key: (round(value, 6) if isinstance(value, float) else value) for key, value in row.items()})
    return buffer.getvalue()


def _csv_names(name: str) -> list[str]:
    return ["speedup_low", "speedup_high"] if name == "speedup_interval" else [name]


def best_on_front(points: Sequence[SweepPoint]) -> SweepPoint | None:
    """The fastest point on the latency front whose quality is within 1 point of the best: a sensible pick."""
    front = [point for point in points if point.front_latency]
    if not front:
        return None
    top = max(point.quality for point in front)
    close = [point for point in front if point.quality >= top - 0.01]
    return min(close, key=lambda point: point.latency_ms) if close else None
