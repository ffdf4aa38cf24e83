"""Channel pruning: score the removable channel classes once per model and criterion, then any amount is a
selection over those scores and a slice of every tensor that carries the removed channels.

The result is a smaller dense graph, so ONNX Runtime really runs fewer multiply-accumulates.
"""

from __future__ import annotations

import math
from collections import ChainMap, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from core.compression.channels import ChannelGraph, Producer
from core.errors import UnsupportedModelError
from core.onnx.tensors import intermediate_values

ACTIVATION_SAMPLES = 32  # calibration inputs read for the activation criterion


@dataclass(frozen=True)
class ChannelClass:
    root: int
    group: frozenset[str]  # the weights whose output channels are coupled in this class
    producers: tuple[Producer, ...]


def _filter_means(values: np.ndarray, axis: int, power: int) -> np.ndarray:
    """Per output channel along `axis`: mean |w| (power 1) or root-mean-square (power 2)."""
    moved = np.moveaxis(np.abs(values.astype(np.float64)), axis, 0).reshape(values.shape[axis], -1)
    return moved.mean(1) if power == 1 else np.sqrt((moved**2).mean(1))


def _norm_score(power: int) -> Callable:
    def score(classes, weights, activations, rng) -> np.ndarray:
        cache: dict[tuple[str, int], np.ndarray] = {}
        result = []
        for item in classes:
            norms = []
            for producer in item.producers:
                key = (producer.weight, producer.axis)
                if key not in cache:
                    cache[key] = _filter_means(weights[producer.weight], producer.axis, power)
                norms.append(cache[key][producer.index])
            result.append(float(np.mean(norms)))
        return np.asarray(result)

    return score


def _activation_score(classes, weights, activations, rng) -> np.ndarray:
    """Mean |activation| of each channel on calibration inputs, times its filter's mean |w|."""
    norms = _norm_score(1)(classes, weights, activations, rng)
    means = []
    for item in classes:
        values = [activations[producer.output][producer.index] for producer in item.producers]
        means.append(float(np.mean(values)))
    return norms * np.asarray(means)


def _random_score(classes, weights, activations, rng) -> np.ndarray:
    return rng.random(len(classes))


# criterion -> (classes, weights, activations, rng) -> one score per class; the lowest are removed first
CHANNEL_SCORES: dict[str, Callable] = {
    "l1": _norm_score(1),
    "l2": _norm_score(2),
    "activation": _activation_score,
    "random": _random_score,
}


def channel_activations(
    model: onnx.ModelProto, graph: ChannelGraph, inputs: dict[str, np.ndarray], external_data_folder: Path | None
):
    """Mean |value| per channel of every producer output, over the first calibration inputs."""
    outputs = sorted({p.output for producers in graph.producers.values() for p in producers})
    feeds = {name: values[:ACTIVATION_SAMPLES] for name, values in inputs.items()}
    result = {}
    for name, values in intermediate_values(model, feeds, outputs, external_data_folder).items():
        axis = graph.tensors[name].axis
        result[name] = np.moveaxis(np.abs(values.astype(np.float64)), axis, 0).reshape(values.shape[axis], -1).mean(1)
    return result


@dataclass(frozen=True, eq=False)
class ChannelIndex:
    """Scores of every removable channel class of one model under one criterion; read-only once built."""

    graph: ChannelGraph
    classes: tuple[ChannelClass, ...]
    scores: np.ndarray
    groups: Mapping[frozenset[str], np.ndarray]  # group -> indices into `classes`
    left_whole: Mapping[str, str]  # weight -> why none of its output channels can be removed

    @classmethod
    def prepare(
        cls,
        proto: onnx.ModelProto,
        graph: ChannelGraph,
        weights: Mapping[str, np.ndarray],
        criterion: str,
        seed: int,
        activations: Callable[[], dict[str, np.ndarray]],
    ) -> ChannelIndex:
        roots = graph.roots
        fixed_roots = {int(roots[channel]) for channel in graph.fixed}
        by_root: dict[int, list[Producer]] = defaultdict(list)
        for channel, producers in graph.producers.items():
            root = int(roots[channel])
            if root not in fixed_roots:
                by_root[root].extend(producers)
        classes = tuple(
            ChannelClass(root, frozenset(p.weight for p in producers), tuple(producers))
            for root, producers in sorted(by_root.items())
        )
        inline = (init for init in proto.graph.initializer if init.data_location != onnx.TensorProto.EXTERNAL)
        # the weights first, read as scored (a large model's are memory-mapped one at a time), then the rest
        all_weights = ChainMap(
            weights, {init.name: numpy_helper.to_array(init) for init in inline if init.name not in weights}
        )
        needed = activations() if criterion == "activation" and classes else {}
        scores = CHANNEL_SCORES[criterion](classes, all_weights, needed, np.random.default_rng(seed))
        groups: dict[frozenset[str], list[int]] = defaultdict(list)
        for index, item in enumerate(classes):
            groups[item.group].append(index)
        left_whole = {}
        for channel, producers in graph.producers.items():
            for producer in producers:
                if int(roots[channel]) in fixed_roots and producer.weight not in left_whole:
                    left_whole[producer.weight] = graph.fixed.get(channel) or _reason(graph, int(roots[channel]))
        for item in classes:
            for weight in item.group:
                left_whole.pop(weight, None)
        return cls(
            graph, classes, scores, {group: np.asarray(members) for group, members in groups.items()}, left_whole
        )

    def removed_roots(
        self, amount: float, scope: str, multiple: int, own: Mapping[str, float] | None = None
    ) -> set[int]:
        """The classes to remove: the lowest-scoring `amount` of each group (scope "layer"), or of all classes
        with scores normalised by their group's mean (scope "global"); each group keeps at least one class and
        a kept count rounded up to `multiple`. `own`: weight -> the amount of its coupled group instead (the
        smallest, where several of a group's layers have one); those groups stay out of the global ranking."""
        fixed = self.group_amounts(own or {})
        if (amount == 0 and not any(fixed.values())) or not self.classes:
            return set()
        wanted = {group: round(fixed[group] * len(members)) for group, members in self.groups.items() if group in fixed}
        ranked = {group: members for group, members in self.groups.items() if group not in fixed}
        if scope == "layer":
            wanted |= {group: round(amount * len(members)) for group, members in ranked.items()}
        elif ranked:
            candidates = np.sort(np.concatenate(list(ranked.values())))  # in class order: ties break as they did
            normalised = np.empty(len(self.classes))
            for members in ranked.values():
                mean = self.scores[members].mean()
                normalised[members] = self.scores[members] / mean if mean > 0 else 0.0
            order = candidates[np.argsort(normalised[candidates], kind="stable")]
            cut = set(order[: round(amount * len(candidates))].tolist())
            wanted |= {group: sum(int(m) in cut for m in members) for group, members in ranked.items()}
        removed: set[int] = set()
        for group, members in self.groups.items():
            keep = _rounded_keep(len(members) - wanted[group], len(members), multiple)
            order = members[np.argsort(self.scores[members], kind="stable")]
            removed |= {self.classes[index].root for index in order[: len(members) - keep]}
        return removed

    def group_amounts(self, own: Mapping[str, float]) -> dict[frozenset[str], float]:
        """Coupled group -> the amount its layers' own amounts give it: the smallest of them (a group's layers
        share their channels, so it is pruned by one amount)."""
        amounts: dict[frozenset[str], float] = {}
        for group in self.groups:
            given = [own[weight] for weight in group if weight in own]
            if given:
                amounts[group] = min(given)
        return amounts


def _reason(graph: ChannelGraph, root: int) -> str:
    """Why a class is fixed: the reason recorded for any of its channels."""
    for channel, reason in graph.fixed.items():
        if int(graph.roots[channel]) == root:
            return reason
    return "unknown"


def _rounded_keep(keep: int, total: int, multiple: int) -> int:
    keep = max(1, keep)
    if multiple > 1 and total >= multiple:
        keep = min(total, math.ceil(keep / multiple) * multiple)
    return keep


def apply_channel_removal(
    proto: onnx.ModelProto, graph: ChannelGraph, removed: set[int], weights: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """A new graph with the removed classes' channels sliced out of every tensor that carries them. Prunable
    weights are read from `weights` (a large model's are memory-mapped; its untouched ones stay external)."""
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    if not removed:
        return result
    removed_mask = np.zeros(len(graph.roots), bool)
    removed_mask[list(removed)] = True
    removed_mask = removed_mask[graph.roots]  # per channel id: is its class removed?

    def kept_positions(tensor: str) -> np.ndarray:
        return np.flatnonzero(~removed_mask[graph.tensors[tensor].ids])

    initializers = {init.name: init for init in result.graph.initializer}
    arrays: dict[str, np.ndarray] = {}  # read when first sliced; a slice replaces what it was cut from

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = weights[name] if name in weights else numpy_helper.to_array(initializers[name])
        return arrays[name]

    changed: set[str] = set()
    for edit in graph.slices:
        positions = kept_positions(edit.tensor)
        values = array(edit.initializer)
        if values.shape[edit.axis] != len(graph.tensors[edit.tensor].ids):
            raise UnsupportedModelError(f"internal: {edit.initializer} does not line up with {edit.tensor}")
        if len(positions) != values.shape[edit.axis]:
            arrays[edit.initializer] = np.take(values, positions, axis=edit.axis)
            changed.add(edit.initializer)
    for target, axis in graph.reshapes.items():
        shape = array(target).copy()
        shape[axis] = -1
        arrays[target] = shape
        changed.add(target)
    for position, tensor in graph.depthwise.items():
        node = result.graph.node[position]
        for attr in node.attribute:
            if attr.name == "group":
                attr.i = len(kept_positions(tensor))
    rebuilt = [
        numpy_helper.from_array(arrays[init.name], init.name) if init.name in changed else init
        for init in result.graph.initializer
    ]
    del result.graph.initializer[:]
    result.graph.initializer.extend(rebuilt)
    del result.graph.value_info[:]  # intermediate shapes changed; ONNX Runtime infers them again
    return result
