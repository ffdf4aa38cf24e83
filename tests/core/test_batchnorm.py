"""BatchNormalization folded into the convolution before it, for static int8: the same outputs, the same names,
and no float BatchNormalization left between int8 converters in the export."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes
from core.load.onnx_file import model_from_bytes
from core.measure.summaries import layer_sqnr
from core.onnx.batchnorm import fold_batch_norms


def _conv_bn_graph(seed: int = 0) -> onnx.ModelProto:
    """x -> conv_a (bias) -> bn_a -> Relu -> conv_b (no bias) -> bn_b -> y, and conv_c whose output a
    BatchNormalization and the graph output both read (not foldable)."""
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int, low: float = -1.0, high: float = 1.0) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.uniform(low, high, shape).astype(np.float32), name)

    def bn(prefix: str, channels: int) -> list[onnx.TensorProto]:
        return [tensor(f"{prefix}_scale", channels, low=0.5, high=2), tensor(f"{prefix}_offset", channels),
                tensor(f"{prefix}_mean", channels), tensor(f"{prefix}_var", channels, low=0.1, high=3)]  # fmt: skip

    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization",
            ["a", *[f"bna_{k}" for k in ("scale", "offset", "mean", "var")]],
            ["a_bn"],
            name="bn_a",
            epsilon=1e-3,
        ),  # fmt: skip
        helper.make_node("Relu", ["a_bn"], ["a_relu"], name="relu"),
        helper.make_node("Conv", ["a_relu", "wb"], ["b"], name="conv_b"),
        helper.make_node(
            "BatchNormalization", ["b", *[f"bnb_{k}" for k in ("scale", "offset", "mean", "var")]], ["y"], name="bn_b"
        ),  # fmt: skip
        helper.make_node("Conv", ["a_relu", "wc"], ["c"], name="conv_c"),
        helper.make_node(
            "BatchNormalization",
            ["c", *[f"bnc_{k}" for k in ("scale", "offset", "mean", "var")]],
            ["c_bn"],
            name="bn_c",
        ),  # fmt: skip
    ]
    initializers = [tensor("wa", 8, 3, 3, 3), tensor("ba", 8), tensor("wb", 16, 8, 1, 1), tensor("wc", 4, 8, 1, 1),
                    *bn("bna", 8), *bn("bnb", 16), *bn("bnc", 4)]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "conv_bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, 8, 8])
            for name, channels in (("y", 16), ("c", 4), ("c_bn", 4))
        ],  # fmt: skip
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_folding_keeps_the_outputs_and_the_convolutions_names():
    model = _conv_bn_graph()
    folded, count = fold_batch_norms(model)
    onnx.checker.check_model(folded, full_check=True)
    assert count == 2  # bn_c's convolution output is also a graph output: left as it is
    ops = {node.name: node for node in folded.graph.node}
    assert sorted(ops) == ["bn_c", "conv_a", "conv_b", "conv_c", "relu"]
    # names kept: the weight, the bias (conv_b had none: the BatchNormalization's offset became it), the node
    assert list(ops["conv_a"].input) == ["x", "wa", "ba"] and list(ops["conv_a"].output) == ["a_bn"]
    assert list(ops["conv_b"].input) == ["a_relu", "wb", "bnb_offset"] and list(ops["conv_b"].output) == ["y"]
    left = {init.name for init in folded.graph.initializer}
    assert not left & {"bna_scale", "bna_offset", "bna_mean", "bna_var", "bnb_scale", "bnb_mean", "bnb_var"}
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for before, after in zip(_run(model, x), _run(folded, x), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    assert fold_batch_norms(folded) == (folded, 0)  # nothing left to fold: the very same model back


def test_static_int8_leaves_no_batch_normalization_between_converters_and_matches_layers_after_it():
    model = model_from_bytes(_conv_bn_graph().SerializeToString(), name="conv-bn", source="conv-bn")
    compressed = compress(model, Recipe.for_model(model, PruneConfig(), QuantConfig(8, activations="static")))
    export = onnx.load_from_string(export_bytes(compressed))
    ops = [node.op_type for node in export.graph.node]
    assert ops.count("BatchNormalization") == 1  # bn_c, whose input is a graph output
    convs = {node.name: node for node in export.graph.node if node.op_type == "Conv"}
    assert sorted(convs) == ["conv_a", "conv_b", "conv_c"]
    assert convs["conv_a"].input[1] == "wa_DequantizeLinear_Output"  # its weight's name, quantized
    # each layer's output is compared with the reference's after its BatchNormalization, as the export computes it:
    # static int8's SQNR on a conv's output is tens of dB, not the few dB of a pre-BN/post-BN mismatch
    sqnr = {row.node: row for row in layer_sqnr(compressed, export.SerializeToString())}
    assert all(sqnr[name].output_db is not None and sqnr[name].output_db > 25 for name in convs), sqnr
