"""Apply a recipe to a model: a new set of weights (the input model is never changed) and the ONNX that stores them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from core.config import Recipe
from core.errors import UnsupportedModelError
from core.graph import opset_version, with_weights
from core.model import Model
from core.pruning import PruneIndex, prune
from core.quantization import QuantizedWeight, quantize_weight

MIN_QDQ_OPSET = 13  # per-axis DequantizeLinear


@dataclass(frozen=True, eq=False)
class Compressed:
    model: Model
    recipe: Recipe
    weights: dict[str, np.ndarray]  # the effective float weights: pruned, and dequantized when quantized
    quantized: dict[str, QuantizedWeight]  # empty when quantization is off

    def reference_onnx(self) -> onnx.ModelProto:
        """The original graph with the effective weights as float: what the export must compute."""
        return with_weights(self.model.skeleton, self.weights, {})

    def export_onnx(self) -> onnx.ModelProto:
        """The graph the user downloads: quantized weights stored as int8 + DequantizeLinear."""
        floats = {name: values for name, values in self.weights.items() if name not in self.quantized}
        stored = {name: (q.values, q.scales, q.axis) for name, q in self.quantized.items()}
        return with_weights(self.model.skeleton, floats, stored)


def prepare_index(model: Model, recipe: Recipe) -> PruneIndex:
    """The one-time ranking for the recipe's pruning criterion; reuse it across amounts."""
    prune_config = recipe.prune
    return PruneIndex.prepare(model.weights, prune_config.criterion, prune_config.scope, prune_config.seed)


def compress(model: Model, recipe: Recipe, index: PruneIndex | None = None) -> Compressed:
    if recipe.quant.enabled and opset_version(model.proto) < MIN_QDQ_OPSET:
        raise UnsupportedModelError(
            f"weight quantization needs ONNX opset >= {MIN_QDQ_OPSET}; this model uses opset {opset_version(model.proto)}",
            model.source,
        )
    weights = dict(model.weights)
    if recipe.prune.amount > 0:
        weights = prune(weights, index or prepare_index(model, recipe), recipe.prune.amount)
    quantized: dict[str, QuantizedWeight] = {}
    if recipe.quant.enabled:
        for layer in model.layers:
            quantized[layer.name] = quantize_weight(weights[layer.name], recipe.quant.weight_bits, layer.channel_axis)
        weights = {name: q.dequantize() for name, q in quantized.items()}
    return Compressed(model, recipe, weights, quantized)
