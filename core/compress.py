"""Apply a recipe to a model: a new graph and new weights (the input model is never changed), and the ONNX that
stores them.

Structured pruning (channels, blocks) changes the graph itself; unstructured pruning and quantization then
work on whatever graph results, so every technique composes the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import numpy_helper

from core.activations import choose_mode, smooth_matmul_inputs
from core.blocks import BlockCost, BlockIndex, drop_blocks
from core.calibration import Calibration, calibration_for
from core.config import FLOAT_BITS, Recipe
from core.errors import InvalidSettingError, UnsupportedModelError
from core.graph import Layer, Store, find_prunable_layers, opset_version, with_weights, without_initializers
from core.macs import graph_macs
from core.model import Model
from core.pruning import PruneIndex, prune, prune_layer
from core.quantization import QuantizedWeight, quantize_weight
from core.structured import ChannelIndex, apply_channel_removal, channel_activations
from core.thresholds import LazyWeights, ThresholdIndex

MIN_QDQ_OPSET = 13  # per-axis DequantizeLinear
PROTOBUF_LIMIT = 2_000_000_000  # bytes: protobuf refuses messages of 2 GiB; stay clear of it
# Up to this many prunable weights a one-time ranking makes every later amount a compare (31 ms on resnet18's
# 11.7 M, the dashboard's live path); beyond it the ranking's memory outweighs that (see `uses_thresholds`).
RANKS_UP_TO = 32_000_000

Index = PruneIndex | ThresholdIndex | ChannelIndex | BlockIndex


@dataclass(frozen=True, eq=False)
class Compressed:
    model: Model
    recipe: Recipe
    skeleton: onnx.ModelProto  # the (possibly structurally pruned) graph without its prunable weights
    layers: tuple[Layer, ...]  # the prunable layers of that graph, with their shapes after pruning
    weights: Mapping[str, np.ndarray]  # the effective float weights: pruned, and dequantized when quantized
    # (on a large model a LazyWeights: each layer computed when read)
    quantized: dict[str, QuantizedWeight]  # empty when quantization is off
    macs: Mapping[str, int]  # per layer, multiply-accumulates per sample of the graph as ONNX Runtime runs it
    left_whole: Mapping[str, str] = field(default_factory=dict)  # structured: layers kept whole, and why
    blocks: tuple[BlockCost, ...] = ()  # block granularity: every droppable block, its cost, and whether dropped
    activation_mode: str = "none"  # resolved: "none", "dynamic" or "static"
    mode_reason: str = ""
    weight_sqnr: Mapping[str, float] = field(default_factory=dict)  # per quantized layer, dB
    calibration: Calibration | None = None  # static activations: the inputs they are calibrated on

    def reference_onnx(self) -> onnx.ModelProto:
        """The graph with the effective weights as float: what the export must compute."""
        return with_weights(self.skeleton, self.weights, {})

    def export_onnx(self, store: Store = numpy_helper.from_array) -> onnx.ModelProto:
        """The graph the user downloads: quantized weights stored as int8 + DequantizeLinear. `store` turns each
        array into its tensor (external data for large exports)."""
        floats = LazyWeights([name for name in self.weights if name not in self.quantized], self.weights.__getitem__)
        stored = {name: (q.values, q.scales, q.axis) for name, q in self.quantized.items()}
        return with_weights(self.skeleton, floats, stored, store)


def prepare_index(model: Model, recipe: Recipe) -> Index:
    """The one-time ranking for the recipe's granularity and criterion; reuse it across amounts."""
    settings = recipe.prune
    if settings.granularity == "block":
        require_in_memory(model, "block pruning")
    if settings.granularity == "channel":
        graph = model.channel_graph
        return ChannelIndex.prepare(
            model.proto,
            graph,
            model.weights,
            settings.criterion,
            settings.seed,
            lambda: channel_activations(model.proto, graph, model.eval_set.inputs, model.external_data_folder),
        )
    if settings.granularity == "block":
        return BlockIndex.prepare(model, settings.criterion, settings.seed)
    if uses_thresholds(model):
        return ThresholdIndex.prepare(model.weights, settings.criterion, settings.scope, settings.seed)
    return PruneIndex.prepare(model.weights, settings.criterion, settings.scope, settings.seed)


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


def _structurally_pruned(model: Model, recipe: Recipe, index: Index | None) -> Compressed:
    settings = recipe.prune
    expected = BlockIndex if settings.granularity == "block" else ChannelIndex
    if not isinstance(index, expected):
        index = prepare_index(model, recipe)
    left_whole: dict[str, str] = {}
    blocks: tuple[BlockCost, ...] = ()
    if isinstance(index, BlockIndex):
        chosen = index.chosen(settings.amount, settings.drop_blocks)
        proto = drop_blocks(model.proto, chosen)
        dropped = {block.name for block in chosen}
        blocks = tuple(replace(cost, dropped=cost.name in dropped) for cost in index.costs)
    else:
        assert isinstance(index, ChannelIndex)
        removed = index.removed_roots(settings.amount, settings.scope, settings.channel_multiple)
        proto = apply_channel_removal(model.proto, index.graph, removed, model.weights)
        left_whole = dict(index.left_whole)
        if model.external_data_folder is not None and proto.ByteSize() > PROTOBUF_LIMIT:
            raise UnsupportedModelError(
                f"{settings.amount:.0%} of the channels keeps {proto.ByteSize() / 1e9:.1f} GB of weights, more than one "
                "ONNX protobuf holds (2 GB); remove more channels, or prune unstructured",
                model.source,
            )
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
    return Compressed(model, recipe, skeleton, layers, weights, {}, macs, left_whole, blocks)


def compress(model: Model, recipe: Recipe, index: Index | None = None) -> Compressed:
    _check_override_layers(model, recipe)
    quantizing = recipe.quant.enabled or any(override.bits not in (None, FLOAT_BITS) for override in recipe.overrides)
    if quantizing and opset_version(model.proto) < MIN_QDQ_OPSET:
        raise UnsupportedModelError(
            f"weight quantization needs ONNX opset >= {MIN_QDQ_OPSET}; this model uses opset {opset_version(model.proto)}",
            model.source,
        )
    settings = recipe.prune
    if settings.active and settings.granularity != "unstructured":
        base = _structurally_pruned(model, recipe, index)
    elif uses_thresholds(model):
        base = _pruned_by_thresholds(model, recipe, index)
    else:
        weights = dict(model.weights)
        if settings.amount > 0:
            if not isinstance(index, PruneIndex):
                index = prepare_index(model, recipe)
            assert isinstance(index, PruneIndex)
            weights = prune(weights, index, settings.amount)
        weights = _apply_pruning_overrides(model, recipe, weights, index)
        base = Compressed(model, recipe, model.skeleton, model.layers, weights, {}, model.macs)
    bits = _layer_bits(model, recipe)
    if not any(width != FLOAT_BITS for width in bits.values()):
        return base
    mode, reason = resolve_activation_mode(model, recipe.quant.activations)
    if mode != "none":
        require_in_memory(model, f"{mode} int8 activations")
    keep = set(recipe.quant.keep_float)
    unknown = sorted(keep - {layer.node for layer in model.layers})
    if unknown:
        raise InvalidSettingError(f"keep_float names no prunable layer: {', '.join(unknown)}")
    if mode == "dynamic" and recipe.quant.smooth_alpha:
        base = _smoothed(base, recipe.quant.smooth_alpha, keep)
    lazy = isinstance(base.weights, LazyWeights)  # a large model: dequantized when read, never all at once
    quantized, sqnr, dequantized = {}, {}, {}
    for layer in base.layers:
        if layer.node not in keep and bits.get(layer.node, FLOAT_BITS) != FLOAT_BITS:
            values = base.weights[layer.name]  # read once: on a large model every read recomputes the layer
            quantized[layer.name] = quantize_weight(values, bits[layer.node], layer.channel_axis)
            effective = quantized[layer.name].dequantize()
            sqnr[layer.name] = weight_sqnr_db(values, effective)
            if not lazy:
                dequantized[layer.name] = effective
    if lazy:
        unchanged = base.weights
        weights = LazyWeights(
            list(unchanged), lambda name: quantized[name].dequantize() if name in quantized else unchanged[name]
        )
    else:
        weights = base.weights | dequantized
    # resolved once here: the export calibrates on it and the report describes it
    calibration = calibration_for(model, recipe.quant.calibration) if mode == "static" else None
    return replace(
        base,
        weights=weights,
        quantized=quantized,
        activation_mode=mode,
        mode_reason=reason,
        weight_sqnr=sqnr,
        calibration=calibration,
    )


def _pruned_by_thresholds(model: Model, recipe: Recipe, index: Index | None) -> Compressed:
    """A large model's unstructured pruning: exact cuts per layer (layers with their own amount, or skipped, cut at
    that). On disk, each pruned layer is computed when it is read and never all at once."""
    settings = recipe.prune
    own = {
        layer.name: override.amount or 0.0
        for layer in model.layers
        if (override := recipe.override(layer.node)) and (override.skip or override.amount is not None)
    }
    weights: Mapping[str, np.ndarray] = model.weights
    if settings.amount > 0 or any(own.values()):
        if not isinstance(index, ThresholdIndex):
            index = prepare_index(model, recipe)
        assert isinstance(index, ThresholdIndex)
        cuts = index.cuts(settings.amount)
        for name, amount in own.items():
            cuts[name] = index.cuts(amount, only=name)[name]
        if model.external_data_folder is not None:
            weights = LazyWeights(list(model.weights), lambda name: index.pruned(name, cuts[name]))
        else:
            weights = {name: index.pruned(name, cut) for name, cut in cuts.items()}
    return Compressed(model, recipe, model.skeleton, model.layers, weights, {}, model.macs)


def _check_override_layers(model: Model, recipe: Recipe) -> None:
    nodes = {layer.node for layer in model.layers}
    unknown = sorted(override.layer for override in recipe.overrides if override.layer not in nodes)
    if unknown:
        raise InvalidSettingError(f"overrides name no prunable layer: {', '.join(unknown)}")


def _apply_pruning_overrides(model: Model, recipe: Recipe, weights: dict, index: Index | None) -> dict:
    """Layers with their own amount are pruned at it (ranked within the layer); skipped layers keep every weight."""
    own = [(layer, recipe.override(layer.node)) for layer in model.layers if recipe.override(layer.node)]
    if not own:
        return weights
    if any(override.amount for _, override in own) and not isinstance(index, PruneIndex):
        index = prepare_index(model, recipe)
    weights = dict(weights)
    for layer, override in own:
        if override.skip or override.amount is not None:
            weights[layer.name] = model.weights[layer.name]
        if override.amount:
            assert isinstance(index, PruneIndex)
            weights[layer.name] = prune_layer(model.weights[layer.name], index.ranks[layer.name], override.amount)
    return weights


def _layer_bits(model: Model, recipe: Recipe) -> dict[str, int]:
    """Each layer's weight bits: the recipe's, or its override's (skip: float)."""
    bits = {}
    for layer in model.layers:
        override = recipe.override(layer.node)
        width = recipe.quant.weight_bits
        if override is not None and override.skip:
            width = FLOAT_BITS
        elif override is not None and override.bits is not None:
            width = override.bits
        bits[layer.node] = width
    return bits


def resolve_activation_mode(model: Model, requested: str) -> tuple[str, str]:
    """The activation mode to use, and why (`auto` decides by where the model's MACs are)."""
    if requested != "auto":
        return requested, f"{requested} was asked for"
    conv = sum(model.macs[layer.name] for layer in model.layers if layer.op_type in ("Conv", "ConvTranspose"))
    return choose_mode(conv, sum(model.macs.values()) - conv)


def weight_sqnr_db(original: np.ndarray, quantized: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; infinite when quantization changed nothing."""
    signal = float(np.sum(original.astype(np.float64) ** 2))
    noise = float(np.sum((original.astype(np.float64) - quantized) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise) if signal > 0 else float("-inf")


def _smoothed(base: Compressed, alpha: float, keep: set[str]) -> Compressed:
    """The graph with SmoothQuant scales folded in: the same float function, easier to quantize dynamically."""
    calibration = calibration_for(base.model, "sample").inputs
    proto = smooth_matmul_inputs(base.reference_onnx(), calibration, alpha, keep)
    initializers = {init.name: init for init in proto.graph.initializer}
    weights = {layer.name: numpy_helper.to_array(initializers[layer.name]) for layer in base.layers}
    return replace(base, skeleton=without_initializers(proto, set(weights)), weights=weights)
