from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from core.onnx.graph import find_prunable_layers, sort_topologically
from tests.graphs import conv_gemm_model, embedding_matmul_model, relu_only_model


def test_conv_and_gemm_weights_are_prunable_biases_are_not():
    layers = find_prunable_layers(conv_gemm_model())
    assert [(layer.name, layer.op_type, layer.shape, layer.channel_axis) for layer in layers] == [
        ("conv.w", "Conv", (3, 2, 3, 3), 0),
        ("fc.w", "Gemm", (5, 48), 0),  # transB=1: rows are output channels
    ]
    assert [layer.node for layer in layers] == ["conv", "fc"]


def test_embeddings_and_tied_weights_are_never_pruned():
    layers = find_prunable_layers(embedding_matmul_model())
    assert [(layer.name, layer.op_type, layer.channel_axis) for layer in layers] == [("w", "MatMul", 1)]


def test_a_graph_without_weights_has_no_prunable_layers():
    assert find_prunable_layers(relu_only_model()) == []


def test_nodes_are_sorted_after_the_outer_values_their_subgraphs_read():
    """ONNX Runtime's quantizers sort by explicit inputs only; an If body reading `scaled` then comes too early."""
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["scaled"], [f"{name}_out"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])],
    )
    nodes = [
        helper.make_node("If", ["flag"], ["y"], name="if", then_branch=branch("then"), else_branch=branch("else")),
        helper.make_node("Mul", ["x", "x"], ["scaled"], name="mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "unsorted",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model, full_check=True)
    sort_topologically(model.graph)
    assert [node.name for node in model.graph.node] == ["mul", "if"]
    onnx.checker.check_model(model, full_check=True)
