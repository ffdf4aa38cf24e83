"""How pruning meets recovery: all at once before training (`oneshot`), or step by step while training (`gradual`,
the polynomial schedule of TF-MOT and AGP, Zhu & Gupta 2017), with masks fixed between steps or, `soft`, pruned
weights still trained and the mask chosen again at each step, only the last one permanent (soft filter pruning,
He et al. 2018).

A stepped schedule starts from the original weights and ends with the recipe's own result: the same number of zeros
in each layer (unstructured), or the same number of channels removed from each channel group (channels). Which
weights or channels those are is decided by the weights as trained, by magnitude. Plain numpy: it is data that
crosses into a sandbox child, and the training loop (`core.compression.training`) asks it for masks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from core.compression.structured import ChannelIndex


@dataclass(frozen=True)
class Schedule:
    description: str
    stepped: bool  # prunes during training, from the original weights


SCHEDULES: dict[str, Schedule] = {
    "oneshot": Schedule("prune once with the recipe, then recover the pruned model", stepped=False),
    "gradual": Schedule(
        "start from the original and prune during training, the amount rising as 1 - (1 - t)^3 over the steps "
        "(AGP); training goes on at the target after the last step",
        stepped=True,
    ),
}
DEFAULT_PRUNING_STEPS = 10
PRUNING_SPAN = 0.5  # the pruning steps share the first half of the budget; the second trains at the final masks


def amount_at(step: int, steps: int, ramp: bool) -> float:
    """The fraction of the final pruning in force after pruning step `step` of `steps` (1-based)."""
    if not ramp:
        return 1.0
    return 1.0 - (1.0 - min(step, steps) / steps) ** 3


@dataclass(frozen=True)
class ChannelCells:
    """Every weight entry that carries one removable channel class: zeroed together when the class is removed."""

    group: int
    cells: tuple[tuple[str, int, int], ...]  # (initializer, axis, position), producers and consumers alike
    producers: tuple[tuple[str, int, int], ...]  # the filters that make the channel: its magnitude is theirs


@dataclass(frozen=True)
class MaskSchedule:
    """The masks at each pruning step: unstructured (`zeros` per layer at the end) or channels (`classes`, and the
    number of classes each group loses at the end)."""

    steps: int
    ramp: bool  # gradual: the amount rises step by step; else the whole amount at every step
    soft: bool
    zeros: dict[str, int]
    classes: tuple[ChannelCells, ...] = ()
    removed: dict[int, int] | None = None  # channel group -> classes removed at the end

    def masks(self, step: int, values: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[int]]:
        """After pruning step `step`: True where each weight may be non-zero, chosen by the magnitudes of `values`
        (the weights as trained so far), and the channel classes removed (indices into `classes`)."""
        amount = amount_at(step, self.steps, self.ramp)
        if self.removed is None:
            return {name: _keep_largest(values[name], round(zeros * amount)) for name, zeros in self.zeros.items()}, []
        return self._channel_masks(amount, values)

    def _channel_masks(self, amount: float, values: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[int]]:
        members: dict[int, list[int]] = defaultdict(list)
        for index, item in enumerate(self.classes):
            members[item.group].append(index)
        removed: list[int] = []
        for group, indexes in members.items():
            count = round(self.removed.get(group, 0) * amount)
            magnitude = [_magnitude(self.classes[index], values) for index in indexes]
            removed += [indexes[i] for i in np.argsort(magnitude, kind="stable")[:count]]
        masks = {name: np.ones(array.shape, bool) for name, array in values.items()}
        for index in removed:
            for name, axis, position in self.classes[index].cells:
                if name in masks:
                    np.moveaxis(masks[name], axis, 0)[position] = False
        return masks, sorted(removed)


def _keep_largest(values: np.ndarray, zeros: int) -> np.ndarray:
    keep = np.ones(values.size, bool)
    keep[np.argsort(np.abs(values), axis=None, kind="stable")[:zeros]] = False
    return keep.reshape(values.shape)


def _magnitude(item: ChannelCells, values: dict[str, np.ndarray]) -> float:
    total = 0.0
    for name, axis, position in item.producers:
        if name in values:
            total += float(np.square(np.take(values[name], position, axis=axis)).sum())
    return total


def channel_cells(index: ChannelIndex) -> tuple[ChannelCells, ...]:
    """Every removable class of `index` with the weight entries that carry it, in the index's class order."""
    graph, classes = index.graph, index.classes
    position_of = {item.root: number for number, item in enumerate(classes)}
    group_of = {}
    for number, group in enumerate(index.groups):
        for member in index.groups[group]:
            group_of[int(member)] = number
    cells: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for edit in graph.slices:
        roots = graph.roots[graph.tensors[edit.tensor].ids]
        for position, root in enumerate(roots.tolist()):
            if root in position_of:
                cells[position_of[root]].append((edit.initializer, edit.axis, position))
    return tuple(
        ChannelCells(
            group_of[number],
            tuple(cells[number]),
            tuple((producer.weight, producer.axis, producer.index) for producer in item.producers),
        )
        for number, item in enumerate(classes)
    )


def removed_per_group(cells: tuple[ChannelCells, ...], index: ChannelIndex, roots: set[int]) -> dict[int, int]:
    """How many classes each group loses when `roots` (the recipe's choice) are removed."""
    counts: dict[int, int] = defaultdict(int)
    for item, cell in zip(index.classes, cells, strict=True):
        if item.root in roots:
            counts[cell.group] += 1
    return dict(counts)
