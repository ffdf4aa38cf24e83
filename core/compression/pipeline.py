"""Apply a recipe to a model: a new graph and new weights (the input model is never changed), and the ONNX that
stores them.

Structured pruning (channels, blocks) changes the graph itself; unstructured pruning and quantization then
work on whatever graph results, so every technique composes the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

import numpy as np
import onnx
from onnx import numpy_helper

from core.compression.activations import ACTIVATION_MODES, smooth_matmul_inputs
from core.compression.blocks import BlockCost
from core.compression.calibration import Calibration, calibration_for
from core.compression.granularities import GRANULARITIES, Index, Pruned, prune_weights, require_in_memory
from core.compression.quantization import QuantizedWeight, quantize_weight
from core.compression.recipe import FLOAT_BITS, Recipe
from core.compression.recovery import RecoveryInfo
from core.data.quality import sqnr_db
from core.errors import InvalidSettingError, UnsupportedModelError
from core.model import LazyWeights, Model
from core.onnx.graph import Layer, Store, opset_version, with_weights, without_initializers
from core.onnx.opsets import MIN_QDQ_OPSET

CONV_OPS = ("Conv", "ConvTranspose")


@dataclass(frozen=True, eq=False)
class Compressed:
    model: Model
    recipe: Recipe
    skeleton: onnx.ModelProto  # the (possibly structurally pruned) graph without its prunable weights
    layers: tuple[Layer, ...]  # the prunable layers of that graph, with their shapes after pruning
    weights: Mapping[str, np.ndarray]  # the effective float weights: pruned, and dequantized when quantized
    # (on a large model a LazyWeights: each layer computed when read)
    macs: Mapping[str, int]  # per layer, multiply-accumulates per sample of the graph as ONNX Runtime runs it
    left_whole: Mapping[str, str] = field(default_factory=dict)  # structured: layers kept whole, and why
    blocks: tuple[BlockCost, ...] = ()  # block granularity: every droppable block, its cost, and whether dropped
    quantized: dict[str, QuantizedWeight] = field(default_factory=dict)  # empty when quantization is off
    activation_mode: str = "none"  # resolved: "none", "dynamic" or "static"
    mode_reason: str = ""
    weight_sqnr: Mapping[str, float] = field(default_factory=dict)  # per quantized layer, dB
    # the quantized layers' pruned float weights (before quantization), so quantization's own error can be told
    # apart from pruning's; empty for a large model (its layers are recomputed when read)
    float_weights: Mapping[str, np.ndarray] = field(default_factory=dict)
    calibration: Calibration | None = None  # static activations: the inputs they are calibrated on
    recovery: RecoveryInfo | None = None  # set by `core.compression.recover`: the weights were trained after

    def reference_onnx(self) -> onnx.ModelProto:
        """The graph with the effective weights as float: what the export must compute."""
        return with_weights(self.skeleton, self.weights, {})

    def pruned_float_onnx(self) -> onnx.ModelProto | None:
        """The graph pruned but not quantized, where it is kept: what quantization's own error is measured against."""
        if not self.float_weights and self.quantized:
            return None
        return with_weights(self.skeleton, LazyWeights(list(self.weights), self.float_weight), {})

    def float_weight(self, name: str) -> np.ndarray:
        return self.float_weights[name] if name in self.float_weights else self.weights[name]

    def export_onnx(self, store: Store = numpy_helper.from_array) -> onnx.ModelProto:
        """The graph the user downloads: quantized weights stored as int8 + DequantizeLinear. `store` turns each
        array into its tensor (external data for large exports)."""
        floats = LazyWeights([name for name in self.weights if name not in self.quantized], self.weights.__getitem__)
        stored = {name: (q.values, q.scales, q.axis) for name, q in self.quantized.items()}
        return with_weights(self.skeleton, floats, stored, store)


def prepare_index(model: Model, recipe: Recipe) -> Index:
    """The one-time ranking for the recipe's granularity and criterion; reuse it across amounts."""
    settings = recipe.prune
    return GRANULARITIES[settings.granularity].prepare(model, settings.criterion, settings.scope, settings.seed)


def compress(model: Model, recipe: Recipe, index: Index | None = None) -> Compressed:
    _check_override_layers(model, recipe)
    quantizing = recipe.quant.enabled or any(override.bits not in (None, FLOAT_BITS) for override in recipe.overrides)
    if quantizing and opset_version(model.proto) < MIN_QDQ_OPSET:
        raise UnsupportedModelError(
            f"weight quantization needs ONNX opset >= {MIN_QDQ_OPSET}; this model uses opset {opset_version(model.proto)}"
            + (f" ({model.opset_note})" if model.opset_note else ""),
            model.source,
        )
    settings = recipe.prune
    # at amount 0 nothing is removed, but layers with their own amount are still pruned (the recipe refuses them
    # where the granularity takes none)
    prune = GRANULARITIES[settings.granularity].prune if recipe.prunes else prune_weights
    pruned = prune(model, settings, index, own_amounts(model, recipe))
    base = Compressed(model, recipe, **{name.name: getattr(pruned, name.name) for name in fields(Pruned)})
    bits = _layer_bits(model, recipe)
    if not any(width != FLOAT_BITS for width in bits.values()):
        return base
    mode, reason = resolve_activation_mode(model, recipe.quant.activations)
    if ACTIVATION_MODES[mode].int8:
        require_in_memory(model, f"{mode} int8 activations")
    keep = set(recipe.quant.keep_float)
    unknown = sorted(keep - {layer.node for layer in model.layers})
    if unknown:
        raise InvalidSettingError(f"keep_float names no prunable layer: {', '.join(unknown)}")
    if ACTIVATION_MODES[mode].smoothing and recipe.quant.smooth_alpha:
        base = _smoothed(base, recipe.quant.smooth_alpha, keep)
    lazy = isinstance(base.weights, LazyWeights)  # a large model: dequantized when read, never all at once
    quantized, sqnr, dequantized = {}, {}, {}
    for layer in base.layers:
        if layer.node not in keep and bits.get(layer.node, FLOAT_BITS) != FLOAT_BITS:
            values = base.weights[layer.name]  # read once: on a large model every read recomputes the layer
            quantized[layer.name] = quantize_weight(values, bits[layer.node], layer.channel_axis)
            effective = quantized[layer.name].dequantize()
            sqnr[layer.name] = sqnr_db(values, effective)
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
    calibration = calibration_for(model, recipe.quant.calibration) if ACTIVATION_MODES[mode].calibrated else None
    return replace(
        base,
        weights=weights,
        quantized=quantized,
        activation_mode=mode,
        mode_reason=reason,
        weight_sqnr=sqnr,
        calibration=calibration,
        float_weights={} if lazy else {name: base.weights[name] for name in quantized},
    )


def _check_override_layers(model: Model, recipe: Recipe) -> None:
    nodes = {layer.node for layer in model.layers}
    unknown = sorted(override.layer for override in recipe.overrides if override.layer not in nodes)
    if unknown:
        raise InvalidSettingError(f"overrides name no prunable layer: {', '.join(unknown)}")


def own_amounts(model: Model, recipe: Recipe) -> dict[str, float]:
    """Layer name -> the amount it is pruned at instead of the recipe's: its override's, 0 for a skipped layer."""
    return {
        layer.name: override.amount or 0.0
        for layer in model.layers
        if (override := recipe.override(layer.node)) and (override.skip or override.amount is not None)
    }


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
    choose = ACTIVATION_MODES[requested].choose
    if choose is None:
        return (
            requested,
            "weights only: activations stay float" if requested == "none" else f"{requested} was asked for",
        )
    conv = sum(model.macs[layer.name] for layer in model.layers if layer.op_type in CONV_OPS)
    return choose(conv, sum(model.macs.values()) - conv)


def _smoothed(base: Compressed, alpha: float, keep: set[str]) -> Compressed:
    """The graph with SmoothQuant scales folded in: the same float function, easier to quantize dynamically."""
    calibration = calibration_for(base.model, "sample").inputs
    proto = smooth_matmul_inputs(base.reference_onnx(), calibration, alpha, keep)
    initializers = {init.name: init for init in proto.graph.initializer}
    weights = {layer.name: numpy_helper.to_array(initializers[layer.name]) for layer in base.layers}
    return replace(base, skeleton=without_initializers(proto, set(weights)), weights=weights)
