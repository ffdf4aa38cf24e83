from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from core import InvalidSettingError, PruneConfig, QuantConfig, Recipe, build_report, compress, export_bytes, load_model
from core.compression.activations import smooth_matmul_inputs
from core.compression.pipeline import resolve_activation_mode
from core.data.arrays import read_npz
from core.measure.benchmark import cpu_description, int8_sums_can_saturate
from core.measure.verdict import speed_verdict
from core.onnx.runtime import create_session, run


def _outputs(data: bytes, feeds) -> np.ndarray:
    return run(create_session(data), feeds)[0]


def _sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((reference - candidate) ** 2))


@pytest.mark.parametrize(
    ("sample", "mode", "ops"),
    [("digits-cnn", "static", {"QuantizeLinear"}), ("digits-mlp", "dynamic", {"DynamicQuantizeLinear"})],
)
def test_int8_exports_agree_with_the_fake_quant_reference(sample, mode, ops):
    model = load_model(sample)
    compressed = compress(model, Recipe(quant=QuantConfig(8, mode)))
    data = export_bytes(compressed)
    assert ops <= {node.op_type for node in onnx.load_from_string(data).graph.node}
    reference = _outputs(compressed.reference_onnx().SerializeToString(), model.eval_set.inputs)
    exported = _outputs(data, model.eval_set.inputs)
    # only the int8 activations separate them: ~48 dB per 8-bit tensor, a few layers deep; on x86 without VNNI
    # ONNX Runtime's 16-bit sums saturate (16.6 dB static, 24.1 dB dynamic on an AVX2-only EPYC) and the report says so
    assert _sqnr_db(reference, exported) > (15 if int8_sums_can_saturate(cpu_description()[1]) else 25)
    assert (reference.argmax(1) == exported.argmax(1)).mean() >= 0.98


def test_static_low_bits_store_the_n_bit_grid_in_int8(digits_cnn):
    compressed = compress(digits_cnn, Recipe(quant=QuantConfig(4, "static")))
    exported = onnx.load_from_string(export_bytes(compressed))
    stem = next(init for init in exported.graph.initializer if init.name.startswith("onnx::Conv_81_quantized"))
    codes = numpy_helper.to_array(stem)
    assert codes.dtype == np.int8
    assert all(len(np.unique(channel)) <= 15 for channel in codes)
    info = build_report(compressed, exported.SerializeToString()).quantization
    assert info.levels == 15 and info.stored_as.startswith("int8 holding a 4-bit grid (15 levels)")
    assert info.calibration == "64 inputs of the tuning part, apart from the held-out evaluation set"
    assert not info.calibration_is_random


def test_keep_float_leaves_those_layers_in_float(digits_cnn):
    keep = ("/stem/stem.0/Conv", "/fc/Gemm")
    compressed = compress(digits_cnn, Recipe(quant=QuantConfig(8, "static", keep_float=keep)))
    exported = onnx.load_from_string(export_bytes(compressed))
    produced_by = {out: node.op_type for node in exported.graph.node for out in node.output}
    floats = {init.name for init in exported.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    for node in exported.graph.node:
        if node.name in keep:
            assert node.input[1] in floats and node.input[1] not in produced_by
        elif node.op_type == "Conv":
            assert produced_by[node.input[1]] == "DequantizeLinear"
    report = build_report(compressed, exported.SerializeToString())
    assert {row.node for row in report.quantization.sqnr} == {layer.node for layer in digits_cnn.layers} - set(keep)
    assert any("2 layer(s) kept in float" in reason.text for reason in report.verdict.reasons)
    with pytest.raises(InvalidSettingError, match="keep_float names no prunable layer: /nope"):
        compress(digits_cnn, Recipe(quant=QuantConfig(8, "static", keep_float=("/nope",))))


def test_calibration_npz_is_checked_against_the_model(tmp_path, digits_cnn):
    good = tmp_path / "good.npz"
    np.savez(good, image=np.zeros((5, 1, 8, 8), np.float32))
    assert read_npz(good, digits_cnn).inputs["image"].shape == (5, 1, 8, 8)
    wrong_name = tmp_path / "name.npz"
    np.savez(wrong_name, pixels=np.zeros((5, 1, 8, 8), np.float32))
    with pytest.raises(
        InvalidSettingError, match=r"input names do not match the model \(missing image; unknown pixels\)"
    ):
        read_npz(wrong_name, digits_cnn)
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, image=np.zeros((5, 8, 8), np.float32))
    with pytest.raises(InvalidSettingError, match="input 'image' has shape 5x8x8; the model expects \\?x1x8x8"):
        read_npz(wrong_shape, digits_cnn)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, image=np.array([{"a": 1}], dtype=object))
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    for path in (pickled, text):
        with pytest.raises(InvalidSettingError, match="not an .npz of arrays"):
            read_npz(path, digits_cnn)
    with pytest.raises(InvalidSettingError, match="input names do not match"):
        compress_and_export = Recipe(quant=QuantConfig(8, "static", calibration=str(wrong_name)))
        export_bytes(compress(digits_cnn, compress_and_export))


def test_auto_picks_static_for_cnns_and_dynamic_for_transformers(digits_cnn, resnet18):
    assert resolve_activation_mode(resnet18, "auto")[0] == "static"
    assert resolve_activation_mode(digits_cnn, "auto")[0] == "static"
    mode, reason = resolve_activation_mode(load_model("minilm"), "auto")
    assert mode == "dynamic" and "MatMul/Gemm carry 100% of the MACs" in reason


def test_smoothing_keeps_the_float_function():
    model = load_model("minilm")
    smoothed = smooth_matmul_inputs(model.proto, model.eval_set.inputs, 0.7, set())
    assert sum(node.op_type == "Mul" and node.name.endswith("_smooth") for node in smoothed.graph.node) == 24
    outputs = _outputs(smoothed.SerializeToString(), model.eval_set.inputs)
    np.testing.assert_allclose(outputs, model.reference_outputs[0], rtol=0, atol=2e-4)


def _reasons(verdict) -> str:
    return " | ".join(f"{reason.effect}: {reason.text}" for reason in verdict.reasons)


def test_the_speed_verdict_for_each_case(resnet18, digits_cnn):
    vnni, avx2 = ["avx2", "avx512_vnni"], ["avx2", "fma"]
    unstructured = speed_verdict(compress(resnet18, Recipe(PruneConfig(0.5))), avx2)
    assert unstructured.expectation == "no faster" and "dense kernels" in _reasons(unstructured)
    channels = speed_verdict(compress(resnet18, Recipe(PruneConfig(0.5, granularity="channel"))), avx2)
    assert channels.expectation == "faster" and "3.75x fewer MACs" in _reasons(channels)
    weight_only = speed_verdict(compress(resnet18, Recipe(quant=QuantConfig(8))), avx2)
    assert weight_only.expectation == "slower" and "DequantizeLinear" in _reasons(weight_only)
    static = compress(resnet18, Recipe(quant=QuantConfig(8, "static")))
    assert speed_verdict(static, vnni).expectation == "faster"
    assert "this CPU has avx512_vnni" in _reasons(speed_verdict(static, vnni))
    assert "same: no VNNI on this CPU" in _reasons(speed_verdict(static, avx2))
    dynamic_cnn = speed_verdict(compress(resnet18, Recipe(quant=QuantConfig(8, "dynamic"))), avx2)
    assert "ConvInteger" in _reasons(dynamic_cnn)
    tiny = speed_verdict(compress(digits_cnn, Recipe(quant=QuantConfig(8, "static"))), vnni)
    assert tiny.expectation == "slower" and "the model is tiny (828,736 MACs per sample)" in _reasons(tiny)


def test_int8_activations_need_quantized_weights():
    with pytest.raises(InvalidSettingError, match=r"int8 activations \(static\) need quantized weights: set bits 2-8"):
        QuantConfig(32, "static")
    with pytest.raises(
        InvalidSettingError, match="unknown calibration method 'kl'; choose from minmax, entropy, percentile"
    ):
        QuantConfig(8, "static", calib_method="kl")


def test_int8_sums_saturate_only_on_x86_without_vnni():
    assert int8_sums_can_saturate(["sse4_2", "avx", "avx2", "fma"])
    assert int8_sums_can_saturate(["avx2", "avx512f", "avx512bw"])
    assert not int8_sums_can_saturate(["avx2", "avx512bw", "avx512_vnni"])
    assert not int8_sums_can_saturate(["avx2", "avx_vnni"])
    assert not int8_sums_can_saturate(["asimd", "asimddp"])


def test_the_report_says_when_this_cpu_s_int8_kernels_can_saturate(digits_cnn):
    compressed = compress(digits_cnn, Recipe(quant=QuantConfig(8, "static")))
    info = build_report(compressed, export_bytes(compressed)).quantization
    saturates = int8_sums_can_saturate(cpu_description()[1])
    assert (info.kernel_note is not None) == saturates
    if saturates:
        assert info.kernel_note.startswith("this CPU has no VNNI")
    weight_only = compress(digits_cnn, Recipe(quant=QuantConfig(8)))
    assert build_report(weight_only, export_bytes(weight_only)).quantization.kernel_note is None
