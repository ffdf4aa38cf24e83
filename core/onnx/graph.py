"""Reading and rebuilding ONNX graphs: which initializers are prunable weights, and along which axis."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# For each op: (input index, weight rank) -> axis of the weight that indexes output channels, or None when that
# input is not a weight this tool prunes. Biases, norms and embeddings never appear here, so they are never pruned.
AxisRule = Callable[[onnx.NodeProto, int, int], "int | None"]


def _conv_axis(node: onnx.NodeProto, index: int, rank: int) -> int | None:
    return 0 if index == 1 else None


def _conv_transpose_axis(node: onnx.NodeProto, index: int, rank: int) -> int | None:
    # ConvTranspose weights are (C_in, C_out / group, k...): output channels run along axis 1.
    return 1 if index == 1 else None


def _gemm_axis(node: onnx.NodeProto, index: int, rank: int) -> int | None:
    if index != 1:
        return None
    trans_b = next((attr.i for attr in node.attribute if attr.name == "transB"), 0)
    return 0 if trans_b else 1


def _matmul_axis(node: onnx.NodeProto, index: int, rank: int) -> int | None:
    if index == 1:
        return rank - 1  # B is (..., K, N): N output columns
    if index == 0 and rank == 2:
        return 0  # a constant A (M, K) produces M output rows
    return None


PRUNABLE_OPS: dict[str, AxisRule] = {
    "Conv": _conv_axis,
    "ConvTranspose": _conv_transpose_axis,
    "Gemm": _gemm_axis,
    "MatMul": _matmul_axis,
}


@dataclass(frozen=True)
class Layer:
    """One prunable weight tensor and the node that consumes it."""

    name: str  # initializer name, unique in the graph
    node: str  # consuming node's name (readable: torch exports name nodes after modules)
    op_type: str
    shape: tuple[int, ...]
    channel_axis: int

    @property
    def params(self) -> int:
        return int(np.prod(self.shape))

    @property
    def out_channels(self) -> int:
        return self.shape[self.channel_axis]


def node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node: the main graph's, those of subgraphs (If, Loop, Scan bodies) at any depth, and functions'."""

    def of_graph(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
        for node in graph.node:
            yield node
            for attr in node.attribute:
                for sub in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
                    yield from of_graph(sub)

    yield from of_graph(model.graph)
    for function in model.functions:
        yield from function.node


def _names_used_in_subgraphs(graph: onnx.GraphProto) -> set[str]:
    used: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subgraphs:
                for sub_node in sub.node:
                    used.update(sub_node.input)
                used |= _names_used_in_subgraphs(sub)
    return used


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder the nodes so each comes after everything it reads, counting the outer values its If/Loop/Scan
    bodies read. ONNX Runtime's quantizers re-sort a graph by explicit inputs only, which can move a node above
    the node whose output its subgraph uses; the ONNX checker then refuses the graph."""
    produced_by = {name: index for index, node in enumerate(graph.node) for name in node.output if name}
    needs = []
    for node in graph.node:
        reads = set(node.input)
        for attr in node.attribute:
            for sub in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
                reads |= {name for sub_node in sub.node for name in sub_node.input}
                reads |= _names_used_in_subgraphs(sub)
        needs.append({produced_by[name] for name in reads if name in produced_by} - {len(needs)})
    # depth-first (with a stack: graphs run to thousands of nodes), in the original order where nothing forces
    # another; a node is placed once everything it needs is
    placed: list[int] = []
    done: set[int] = set()
    for start in range(len(graph.node)):
        stack = [start]
        while stack:
            index = stack[-1]
            if index in done:
                stack.pop()
                continue
            waiting = sorted(needs[index] - done)
            if not waiting:
                done.add(index)
                placed.append(index)
                stack.pop()
            elif len(stack) > len(graph.node):
                raise ValueError("the graph has a cycle")
            else:
                stack.extend(reversed(waiting))
    nodes = [graph.node[index] for index in placed]
    del graph.node[:]
    graph.node.extend(nodes)


def find_prunable_layers(model: onnx.ModelProto) -> list[Layer]:
    """Float32 initializers of rank >= 2 whose every consumer uses them as a weight on the same axis, in graph order."""
    graph = model.graph
    graph_inputs = {value.name for value in graph.input}  # an initializer that is also an input can be overridden
    candidates = {
        init.name: tuple(init.dims)
        for init in graph.initializer
        if init.data_type == TensorProto.FLOAT and len(init.dims) >= 2 and init.name not in graph_inputs
    }
    for name in _names_used_in_subgraphs(graph):
        candidates.pop(name, None)

    axes: dict[str, set[int | None]] = {}
    first_consumer: dict[str, tuple[int, onnx.NodeProto]] = {}
    for position, node in enumerate(graph.node):
        rule = PRUNABLE_OPS.get(node.op_type)
        for index, input_name in enumerate(node.input):
            if input_name not in candidates:
                continue
            axis = rule(node, index, len(candidates[input_name])) if rule else None
            axes.setdefault(input_name, set()).add(axis)
            first_consumer.setdefault(input_name, (position, node))

    layers = []
    for name, axis_set in axes.items():
        if len(axis_set) != 1 or None in axis_set:
            continue  # used as a non-weight somewhere (an embedding Gather, an Add): pruning it would change more
        position, node = first_consumer[name]
        layers.append(
            (position, Layer(name, node_name(node, position), node.op_type, candidates[name], axis_set.pop()))
        )
    return [layer for _, layer in sorted(layers, key=lambda item: item[0])]


def opset_version(model: onnx.ModelProto) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 1)


def without_initializers(model: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """A copy of the model with the named initializers removed: the skeleton new weights are added to."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    kept = [init for init in skeleton.graph.initializer if init.name not in names]
    del skeleton.graph.initializer[:]
    skeleton.graph.initializer.extend(kept)
    return skeleton


def unique_name(base: str, taken: set[str]) -> str:
    name, suffix = base, 1
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    taken.add(name)
    return name


def all_names(graph: onnx.GraphProto) -> set[str]:
    names = {init.name for init in graph.initializer} | {value.name for value in graph.input}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        if node.name:
            names.add(node.name)
    return names


# Turns an array into the named initializer: numpy_helper.from_array, or a writer of external data.
Store = Callable[[np.ndarray, str], onnx.TensorProto]


def with_weights(
    skeleton: onnx.ModelProto,
    float_weights: Mapping[str, np.ndarray],
    quantized_weights: Mapping[str, tuple[np.ndarray, np.ndarray, int]],
    store: Store = numpy_helper.from_array,
) -> onnx.ModelProto:
    """The skeleton with float weights as initializers and quantized ones as int8 + DequantizeLinear (QDQ).

    `quantized_weights` maps a weight name to (int8 values, float32 per-channel scales, channel axis); the
    DequantizeLinear output takes the weight's original name, so consumers are untouched.
    """
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    graph = model.graph
    taken = all_names(graph) | set(float_weights) | set(quantized_weights)
    graph.initializer.extend(store(values, name) for name, values in float_weights.items())
    dequantize_nodes = []
    for name, (values, scales, axis) in quantized_weights.items():
        values_name = unique_name(f"{name}_quantized", taken)
        scale_name = unique_name(f"{name}_scale", taken)
        zero_name = unique_name(f"{name}_zero_point", taken)
        graph.initializer.extend(
            [
                store(values, values_name),
                store(scales.astype(np.float32), scale_name),
                store(np.zeros(scales.shape, np.int8), zero_name),
            ]
        )
        dequantize_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [values_name, scale_name, zero_name],
                [name],
                name=unique_name(f"{name}_DequantizeLinear", taken),
                axis=axis,
            )
        )
    # Dequantize nodes depend only on initializers, so putting them first keeps the graph topologically sorted.
    nodes = dequantize_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model
