"""Constant folding at load: nodes whose inputs are all constants become initializers.

Why: many exported graphs compute weights at run time (`ConstantOfShape` in the onnx package's model zoo
graphs, `Identity` copies of shared biases in torch exports, `Constant` shape tensors before `Reshape`).
Pruning and quantization work on initializers, so those values must be initializers first. Each node is
evaluated once with the onnx reference implementation, which knows every standard op.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

# Ops that must never be folded: random ones differ per run, and these read no inputs but are not constant.
NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
# Initializers are only folded into a result of at most this many elements, so folding never blows up a model
# (an Expand of a scalar into a huge activation-sized tensor would).
MAX_FOLDED_ELEMENTS = 200_000_000
MIN_IR_FOR_PRIVATE_INITIALIZERS = 4


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute)


def fold_constants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A folded copy of `model` and the number of nodes folded (0: the model is returned unchanged).

    Only the initializers a foldable node reads are turned into arrays; every other initializer is kept as the
    tensor it was (a large model's weights stay external: they feed Conv/Gemm/MatMul, never a foldable node),
    so folding never copies them.
    Initializers that are also graph inputs (required before IR version 4) are treated as constants: the
    export is a new model, and letting a caller override a weight is not something it needs to keep.
    """
    graph = model.graph
    # External tensors (a large model's weights) are never read here: a node that needs one is not folded.
    initializers = {init.name: init for init in graph.initializer if init.data_location != onnx.TensorProto.EXTERNAL}
    computed: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        return computed[name] if name in computed else numpy_helper.to_array(initializers[name])

    graph_outputs = {output.name for output in graph.output}
    folded_nodes, kept_nodes = 0, []
    for node in graph.node:
        foldable = (
            node.domain in ("", "ai.onnx")
            and node.op_type not in NEVER_FOLD
            and not _has_subgraph(node)
            and all(name == "" or name in initializers or name in computed for name in node.input)
            and not any(name in graph_outputs for name in node.output)
        )
        if foldable:
            values = _evaluate(node, {name: value(name) for name in node.input if name})
            if values is not None:
                computed.update(values)
                folded_nodes += 1
                continue
        kept_nodes.append(node)
    if not folded_nodes:
        return model, 0

    used = {name for node in kept_nodes for name in node.input} | graph_outputs
    used |= _names_used_in_subgraphs(kept_nodes)
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    new_graph = folded.graph
    del new_graph.node[:]
    new_graph.node.extend(kept_nodes)
    kept = [init for init in new_graph.initializer if init.name not in computed and init.name in used]
    del new_graph.initializer[:]
    new_graph.initializer.extend(kept)
    new_graph.initializer.extend(
        numpy_helper.from_array(np.asarray(values), name) for name, values in computed.items() if name in used
    )
    # Inputs that are now constants stop being inputs; their stale shape entries go with them.
    constants = {init.name for init in graph.initializer} | computed.keys()
    constant_inputs = [value for value in new_graph.input if value.name not in constants]
    del new_graph.input[:]
    new_graph.input.extend(constant_inputs)
    kept_info = [value for value in new_graph.value_info if value.name not in constants]
    del new_graph.value_info[:]
    new_graph.value_info.extend(kept_info)
    folded.ir_version = max(folded.ir_version, MIN_IR_FOR_PRIVATE_INITIALIZERS)
    return folded, folded_nodes


def _evaluate(node: onnx.NodeProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The node's outputs, or None when the reference implementation cannot evaluate it (then it stays)."""
    try:
        results = ReferenceEvaluator(node).run(None, inputs)
    except Exception:  # noqa: BLE001 - an op the reference evaluator lacks simply stays in the graph
        return None
    if any(np.asarray(value).size > MAX_FOLDED_ELEMENTS for value in results):
        return None
    return {name: np.asarray(value) for name, value in zip(node.output, results, strict=True) if name}


def _names_used_in_subgraphs(nodes: list[onnx.NodeProto]) -> set[str]:
    used: set[str] = set()
    for node in nodes:
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                used |= {name for sub_node in sub.node for name in sub_node.input}
                used |= _names_used_in_subgraphs(list(sub.node))
    return used
