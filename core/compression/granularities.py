"""What pruning removes, by name: single weights, whole output channels, or whole residual blocks.

Each `Granularity` prepares its one-time index for a model (ranks, thresholds, coupled channel groups, block costs)
and prunes with it, returning a `Pruned` graph and weights that quantization then works on. The recipe validates
against `GRANULARITIES`, the CLI and the dashboard list it: adding a granularity is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import onnx
from onnx import numpy_helper

from core.compression.blocks import BlockCost, BlockIndex, drop_blocks
from core.compression.channels import channel_graph
from core.compression.pruning import PruneIndex, prune, prune_layer
from core.compression.structured import ChannelIndex, apply_channel_removal, channel_activations
from core.compression.thresholds import ThresholdIndex
from core.errors import UnsupportedModelError
from core.model import LazyWeights, Model
from core.onnx.graph import Layer, find_prunable_layers, without_initializers
from core.onnx.macs import graph_macs

PROTOBUF_LIMIT = 2_000_000_000  # bytes: protobuf refuses messages of 2 GiB; stay clear of it
# Up to this many prunable weights a one-time ranking makes every later amount a compare (31 ms on resnet18's
# 11.7 M, the dashboard's live path); beyond it the ranking's memory outweighs that (see `uses_thresholds`).
RANKS_UP_TO = 32_000_000
CHANNEL_ACTIVATION_SAMPLES = 64  # tuning inputs the activation criterion reads

Index = PruneIndex | ThresholdIndex | ChannelIndex | BlockIndex


class PruneSettings(Protocol):
    """What a granularity reads of the recipe's pruning settings (`core.compression.recipe.PruneConfig`)."""

    amount: float
    criterion: str
    scope: str
    seed: int
    channel_multiple: int
    drop_blocks: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Pruned:
    """A model after pruning: its (possibly smaller) graph without the prunable weights, and those weights."""

    skeleton: onnx.ModelProto
    layers: tuple[Layer, ...]  # the prunable layers of that graph, with their shapes after pruning
    weights: Mapping[str, np.ndarray]  # on a large model a LazyWeights: each layer computed when read
    macs: Mapping[str, int]  # per layer, multiply-accumulates per sample of the graph as ONNX Runtime runs it
    left_whole: Mapping[str, str] = field(default_factory=dict)  # structured: layers kept whole, and why
    blocks: tuple[BlockCost, ...] = ()  # block granularity: every droppable block, its cost, and whether dropped


# (model, settings, the index prepared for them or None, layer name -> its own amount) -> the pruned model
Prune = Callable[[Model, PruneSettings, "Index | None", Mapping[str, float]], Pruned]


@dataclass(frozen=True)
class Granularity:
    name: str
    help: str
    unit: str  # what the amount is a fraction of, removed
    default_scope: str
    structural: bool  # changes the graph itself
    needs_weights_in_memory: bool  # cannot run on a large model whose weights stay on disk
    prepare: Callable[[Model, str, str, int], Index]  # (model, criterion, scope, seed) -> the one-time index
    prune: Prune
    layer_amounts: str = ""  # what a layer's own amount (or skip) prunes; empty: layers take no amount of their own


def uses_thresholds(model: Model) -> bool:
    """Large models rank nothing: ranks (4 bytes a weight) and the argsort that builds them (8 more) would cost
    3x the model; exact thresholds cost two streaming passes per amount instead (same weights pruned)."""
    return model.external_data_folder is not None or model.prunable_params > RANKS_UP_TO


def in_memory_only(model: Model, what: str) -> str | None:
    """Why `what` cannot run on this model (its weights stay memory-mapped on disk), or None when it can."""
    if model.external_data_folder is None:
        return None
    return (
        f"{what} needs the weights in memory; this model keeps {model.prunable_params * 4 / 1e9:.1f} GB of "
        "weights on disk, memory-mapped (pruning, weight-only quantization, scans and sweeps run on it)"
    )


def require_in_memory(model: Model, what: str) -> None:
    """Refuse work that needs a large model's weights in memory."""
    reason = in_memory_only(model, what)
    if reason:
        raise UnsupportedModelError(reason, model.source)


def _unstructured_index(model: Model, criterion: str, scope: str, seed: int) -> Index:
    if uses_thresholds(model):
        return ThresholdIndex.prepare(model.weights, criterion, scope, seed)
    return PruneIndex.prepare(model.weights, criterion, scope, seed)


def _unpruned(model: Model, weights: Mapping[str, np.ndarray]) -> Pruned:
    return Pruned(model.skeleton, model.layers, weights, model.macs)


def prune_weights(model: Model, settings: PruneSettings, index: Index | None, own: Mapping[str, float]) -> Pruned:
    """Weights set to zero: `settings.amount` of them, and layers with their own amount pruned at it (ranked within
    the layer; 0 keeps every weight)."""
    if uses_thresholds(model):
        return _pruned_by_thresholds(model, settings, index, own)
    weights = dict(model.weights)
    if settings.amount > 0 or any(own.values()):
        if not isinstance(index, PruneIndex):
            index = PruneIndex.prepare(model.weights, settings.criterion, settings.scope, settings.seed)
        weights = prune(weights, index, settings.amount)
    for name, amount in own.items():
        weights[name] = prune_layer(model.weights[name], index.ranks[name], amount) if amount else model.weights[name]
    return _unpruned(model, weights)


def _pruned_by_thresholds(
    model: Model, settings: PruneSettings, index: Index | None, own: Mapping[str, float]
) -> Pruned:
    """A large model's unstructured pruning: exact cuts per layer (layers with their own amount, or skipped, cut at
    that). On disk, each pruned layer is computed when it is read and never all at once."""
    weights: Mapping[str, np.ndarray] = model.weights
    if settings.amount > 0 or any(own.values()):
        if not isinstance(index, ThresholdIndex):
            index = ThresholdIndex.prepare(model.weights, settings.criterion, settings.scope, settings.seed)
        cuts = index.cuts(settings.amount)
        for name, amount in own.items():
            cuts[name] = index.cuts(amount, only=name)[name]
        if model.external_data_folder is not None:
            weights = LazyWeights(list(model.weights), lambda name: index.pruned(name, cuts[name]))
        else:
            weights = {name: index.pruned(name, cut) for name, cut in cuts.items()}
    return _unpruned(model, weights)


def _channel_index(model: Model, criterion: str, scope: str, seed: int) -> ChannelIndex:
    graph = channel_graph(model)
    return ChannelIndex.prepare(
        model.proto,
        graph,
        model.weights,
        criterion,
        seed,
        # the tuning part: the activation criterion chooses, the held-out part judges
        lambda: channel_activations(
            model.proto, graph, model.tuning_part(CHANNEL_ACTIVATION_SAMPLES)[0].inputs, model.external_data_folder
        ),
    )


def _channels(model: Model, settings: PruneSettings, index: Index | None, own: Mapping[str, float]) -> Pruned:
    """Output channels removed, with everything that reads them sliced to match."""
    if not isinstance(index, ChannelIndex):
        index = _channel_index(model, settings.criterion, settings.scope, settings.seed)
    removed = index.removed_roots(settings.amount, settings.scope, settings.channel_multiple, own)
    proto = apply_channel_removal(model.proto, index.graph, removed, model.weights)
    if model.external_data_folder is not None and proto.ByteSize() > PROTOBUF_LIMIT:
        raise UnsupportedModelError(
            f"{settings.amount:.0%} of the channels keeps {proto.ByteSize() / 1e9:.1f} GB of weights, more than one "
            "ONNX protobuf holds (2 GB); remove more channels, or prune unstructured",
            model.source,
        )
    return rebuilt(model, proto, left_whole=dict(index.left_whole))


def _block_index(model: Model, criterion: str, scope: str, seed: int) -> BlockIndex:
    require_in_memory(model, "block pruning")
    return BlockIndex.prepare(model, criterion, seed)


def _blocks(model: Model, settings: PruneSettings, index: Index | None, own: Mapping[str, float]) -> Pruned:
    """Whole residual blocks dropped: those named, or the least important `amount` of them."""
    if not isinstance(index, BlockIndex):
        index = _block_index(model, settings.criterion, settings.scope, settings.seed)
    chosen = index.chosen(settings.amount, settings.drop_blocks)
    dropped = {block.name for block in chosen}
    costs = tuple(replace(cost, dropped=cost.name in dropped) for cost in index.costs)
    return rebuilt(model, drop_blocks(model.proto, chosen), blocks=costs)


def rebuilt(model: Model, proto: onnx.ModelProto, **found) -> Pruned:
    """A structurally pruned graph split into its skeleton and its (remaining) prunable weights."""
    names = {layer.name for layer in model.layers}
    layers = tuple(layer for layer in find_prunable_layers(proto) if layer.name in names)
    initializers = {init.name: init for init in proto.graph.initializer}
    weights = {}
    for layer in layers:
        tensor = initializers[layer.name]
        if tensor.data_location == onnx.TensorProto.EXTERNAL:  # a large model's layer that kept every channel
            values = model.weights[layer.name]
        else:
            values = numpy_helper.to_array(tensor)
            values.flags.writeable = False
        weights[layer.name] = values
    skeleton = without_initializers(proto, set(weights))
    macs = graph_macs(proto, layers, model.latency_feed, model.external_data_folder)
    return Pruned(skeleton, layers, weights, macs, **found)


GRANULARITIES: dict[str, Granularity] = {
    granularity.name: granularity
    for granularity in (
        Granularity(
            "unstructured",
            "single weights set to zero: smaller gzip file, same speed on dense kernels",
            "weights set to zero",
            "global",
            False,
            False,
            _unstructured_index,
            prune_weights,
            "that layer's weights",
        ),
        Granularity(
            "channel",
            "whole output channels and neurons removed, with everything that depends on them: really faster",
            "channels removed",
            "layer",  # the same fraction in every coupled group, as Torch-Pruning defaults
            True,
            False,
            _channel_index,
            _channels,
            # coupled layers share their channels: a group is pruned by one amount
            "the channels of the layers coupled with it; of several overridden in one group, the smallest amount",
        ),
        Granularity(
            "block",
            "whole residual blocks dropped where the skip path keeps the shapes valid",
            "blocks dropped",
            "layer",
            True,
            True,
            _block_index,
            _blocks,
        ),
    )
}
