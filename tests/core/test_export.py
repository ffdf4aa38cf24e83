from __future__ import annotations

import numpy as np
import onnx
import pytest

from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes, model_from_bytes
from core.onnx.runtime import create_session, run
from tests.graphs import conv_gemm_model


@pytest.fixture(scope="module")
def tiny():
    return model_from_bytes(conv_gemm_model().SerializeToString(), name="tiny.onnx", source="tiny.onnx")


def _outputs(proto_or_bytes, feeds):
    data = proto_or_bytes if isinstance(proto_or_bytes, bytes) else proto_or_bytes.SerializeToString()
    return run(create_session(data), feeds)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8, 32])
@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9])
def test_export_matches_the_in_memory_reference(digits_cnn, amount, bits):
    compressed = compress(digits_cnn, Recipe(PruneConfig(amount), QuantConfig(bits)))
    data = export_bytes(compressed)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    exported = _outputs(data, digits_cnn.eval_set.inputs)[0]
    reference = _outputs(compressed.reference_onnx(), digits_cnn.eval_set.inputs)[0]
    np.testing.assert_allclose(exported, reference, rtol=0, atol=1e-4)


def test_amount_zero_without_quantization_is_bit_identical(digits_cnn):
    data = export_bytes(compress(digits_cnn, Recipe()))
    original = _outputs(digits_cnn.onnx_bytes, digits_cnn.eval_set.inputs)[0]
    assert np.array_equal(_outputs(data, digits_cnn.eval_set.inputs)[0], original)


def test_quantized_export_stores_int8_with_dequantize_linear(tiny):
    proto = onnx.load_from_string(export_bytes(compress(tiny, Recipe(quant=QuantConfig(4)))))
    dequantize = [node for node in proto.graph.node if node.op_type == "DequantizeLinear"]
    assert sorted(node.output[0] for node in dequantize) == ["conv.w", "fc.w"]
    stored = {init.name: init for init in proto.graph.initializer}
    assert stored["conv.w_quantized"].data_type == onnx.TensorProto.INT8
    assert "conv.w" not in stored  # the float weight is gone, only its int8 codes remain
    assert {node.output[0]: node.attribute[0].i for node in dequantize} == {"conv.w": 0, "fc.w": 0}


def test_quantized_export_is_about_four_times_smaller(resnet18):
    data = export_bytes(compress(resnet18, Recipe(quant=QuantConfig(8))))
    assert len(data) < len(resnet18.onnx_bytes) / 3.9


def test_the_recipe_reproduces_the_same_bytes(digits_cnn):
    recipe = Recipe(PruneConfig(0.6, "random", "layer", seed=11), QuantConfig(5), "digits-cnn", digits_cnn.sha256)
    first = export_bytes(compress(digits_cnn, recipe))
    again = export_bytes(compress(digits_cnn, Recipe.from_json(recipe.to_json())))
    assert first == again


def test_compress_never_changes_the_loaded_model(tiny):
    before = {name: values.copy() for name, values in tiny.weights.items()}
    compress(tiny, Recipe(PruneConfig(0.9), QuantConfig(2)))
    assert all(np.array_equal(before[name], tiny.weights[name]) for name in before)
    with pytest.raises(ValueError, match="read-only"):
        tiny.weights["conv.w"][0, 0, 0, 0] = 1.0
