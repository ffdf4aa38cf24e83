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


def _conv(name: str, x: str, y: str, out_c: int, in_c: int, rng, *, group: int = 1, k: int = 3) -> tuple:
    """A Conv node with its weight and bias initializers (pad keeps the spatial size)."""
    weight = rng.standard_normal((out_c, in_c // group, k, k)).astype(np.float32) * 0.3
    bias = rng.standard_normal(out_c).astype(np.float32) * 0.1
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, pads=[k // 2] * 4, group=group)
    return node, [numpy_helper.from_array(weight, f"{name}.w"), numpy_helper.from_array(bias, f"{name}.b")]


def structured_cnn(seed: int = 0) -> onnx.ModelProto:
    """Every structure channel pruning must follow, on x[N,3,8,8] -> y[N,4]:

    stem conv(3->8) -> BN -> Relu = s
    residual: conv(8->8) -> Relu -> conv(8->8) -> Add(s) -> Relu = r
    branches: conv(8->6) = a, conv(8->4) = b, Concat(a, b) = c (10 channels)
    depthwise conv(10->10, group 10) -> Relu = d
    conv(10->6) -> MaxPool(2) -> Flatten -> Gemm(6*4*4 -> 4) = y
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def add(pair):
        nodes.append(pair[0])
        inits.extend(pair[1])

    add(_conv("stem", "x", "stem_out", 8, 3, rng))
    bn = [
        rng.uniform(0.5, 1.5, 8),
        rng.standard_normal(8) * 0.1,
        rng.standard_normal(8) * 0.1,
        rng.uniform(0.5, 1.5, 8),
    ]
    inits += [
        numpy_helper.from_array(v.astype(np.float32), f"bn.{n}") for v, n in zip(bn, ["s", "b", "m", "v"], strict=True)
    ]
    nodes.append(
        helper.make_node("BatchNormalization", ["stem_out", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn_out"], name="bn")
    )
    nodes.append(helper.make_node("Relu", ["bn_out"], ["s"], name="stem_relu"))
    add(_conv("res1", "s", "res1_out", 8, 8, rng))
    nodes.append(helper.make_node("Relu", ["res1_out"], ["res1_relu"], name="res1_relu"))
    add(_conv("res2", "res1_relu", "res2_out", 8, 8, rng))
    nodes.append(helper.make_node("Add", ["res2_out", "s"], ["sum"], name="residual_add"))
    nodes.append(helper.make_node("Relu", ["sum"], ["r"], name="res_relu"))
    add(_conv("branch_a", "r", "a", 6, 8, rng, k=1))
    add(_conv("branch_b", "r", "b", 4, 8, rng))
    nodes.append(helper.make_node("Concat", ["a", "b"], ["c"], name="concat", axis=1))
    add(_conv("depthwise", "c", "dw_out", 10, 10, rng, group=10))
    nodes.append(helper.make_node("Relu", ["dw_out"], ["dw_relu"], name="dw_relu"))
    add(_conv("head", "dw_relu", "head_out", 6, 10, rng))
    nodes.append(
        helper.make_node("MaxPool", ["head_out"], ["pooled"], name="pool", kernel_shape=[2, 2], strides=[2, 2])
    )
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1))
    fc_w = rng.standard_normal((4, 6 * 4 * 4)).astype(np.float32) * 0.2
    inits += [numpy_helper.from_array(fc_w, "fc.w"), numpy_helper.from_array(np.zeros(4, np.float32), "fc.b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes,
        "structured_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def grouped_conv_model(seed: int = 0) -> onnx.ModelProto:
    """x[N,3,8,8] -> conv(3->8) -> grouped conv(8->8, group 2) -> conv(8->4) -> GlobalAveragePool -> Flatten -> y"""
    rng = np.random.default_rng(seed)
    pairs = [
        _conv("first", "x", "f", 8, 3, rng),
        _conv("grouped", "f", "g", 8, 8, rng, group=2),
        _conv("last", "g", "l", 4, 8, rng),
    ]
    nodes = [pair[0] for pair in pairs] + [
        helper.make_node("Relu", ["l"], ["lr"], name="relu"),
        helper.make_node("Conv", ["lr", "out.w"], ["o"], name="out", kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["o"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["y"], name="flatten"),
    ]
    inits = [init for pair in pairs for init in pair[1]]
    inits.append(numpy_helper.from_array(rng.standard_normal((5, 4, 1, 1)).astype(np.float32), "out.w"))
    graph = helper.make_graph(
        nodes,
        "grouped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def pooled_detector(grid: int) -> onnx.ModelProto:
    """x[N,3,H,W] -> MaxPool(32, stride 32) + a [1,3,grid,grid] constant -> Flatten -> Gemm: runs only where
    H/32 == W/32 == grid, as a detector's head only fits its backbone's stride."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    bias = helper.make_tensor("anchors", TensorProto.FLOAT, [1, 3, grid, grid], rng.standard_normal(3 * grid * grid))
    weight = helper.make_tensor("head", TensorProto.FLOAT, [5, 3 * grid * grid], rng.standard_normal(15 * grid * grid))
    nodes = [
        helper.make_node("MaxPool", ["x"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Add", ["pooled", "anchors"], ["shifted"]),
        helper.make_node("Flatten", ["shifted"], ["flat"]),
        helper.make_node("Gemm", ["flat", "head"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "detector", [x], [y], [bias, weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dense_detector(seed: int = 0) -> onnx.ModelProto:
    """x[N,3,height,width] -> Conv(8, stride 2) -> Relu -> Conv(8) -> Relu -> Conv(2, 1x1) -> y[N,2,h,w]: a dense
    prediction head, whose spatial dims stay symbolic from input to output, as a text detector's do."""
    rng = np.random.default_rng(seed)
    weights = {
        "c1.w": rng.standard_normal((8, 3, 3, 3)),
        "c2.w": rng.standard_normal((8, 8, 3, 3)) * 0.3,
        "head.w": rng.standard_normal((2, 8, 1, 1)) * 0.3,
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1.w"], ["a"], name="c1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["ar"], name="r1"),
        helper.make_node("Conv", ["ar", "c2.w"], ["b"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["br"], name="r2"),
        helper.make_node("Conv", ["br", "head.w"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "dense_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "height", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "out_h", "out_w"])],
        [numpy_helper.from_array(array.astype(np.float32), name) for name, array in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
