"""Tiny ONNX graphs built in code, with known weights, for exact assertions."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def conv_gemm_model(seed: int = 0) -> onnx.ModelProto:
    """x[N,2,4,4] -> Conv(3 filters 2x3x3, pad 1) -> Relu -> Flatten -> Gemm(transB, 48 -> 5) -> y[N,5]."""
    rng = np.random.default_rng(seed)
    conv_w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    conv_b = rng.standard_normal(3).astype(np.float32)
    fc_w = rng.standard_normal((5, 48)).astype(np.float32)
    fc_b = rng.standard_normal(5).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
            helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
        ],
        "conv_gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [
            numpy_helper.from_array(a, n)
            for a, n in ((conv_w, "conv.w"), (conv_b, "conv.b"), (fc_w, "fc.w"), (fc_b, "fc.b"))
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def embedding_matmul_model() -> onnx.ModelProto:
    """ids[N,T] -> Gather(table) -> MatMul(W[4,6]) -> y, plus a MatMul that reuses the embedding table (tied)."""
    rng = np.random.default_rng(1)
    table = rng.standard_normal((10, 4)).astype(np.float32)
    weight = rng.standard_normal((4, 6)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
            helper.make_node("MatMul", ["e", "w"], ["y"], name="proj"),
            helper.make_node("Transpose", ["table"], ["table_t"], name="tie", perm=[1, 0]),
            helper.make_node("MatMul", ["e", "table_t"], ["logits"], name="tied_head"),
        ],
        "embedding_matmul",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "T"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 6]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "T", 10]),
        ],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def relu_only_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
