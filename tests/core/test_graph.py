from __future__ import annotations

from core.onnx.graph import find_prunable_layers
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
