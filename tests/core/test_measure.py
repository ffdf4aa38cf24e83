from __future__ import annotations

import numpy as np
import pytest

from core import PruneConfig, QuantConfig, Recipe, build_report, compress, export_bytes, model_from_bytes
from core.measure.benchmark import compare_latency, cpu_description
from tests.graphs import conv_gemm_model


@pytest.fixture(scope="module")
def tiny():
    return model_from_bytes(conv_gemm_model().SerializeToString(), name="tiny.onnx", source="tiny.onnx")


def test_macs_follow_the_real_output_shapes(tiny):
    # Conv: 3 x 4 x 4 outputs, each a 2x3x3 dot product; Gemm: 5 outputs, each over 48 inputs.
    assert tiny.macs == {"conv.w": 3 * 4 * 4 * 2 * 3 * 3, "fc.w": 5 * 48}


def test_report_counts_zeros_exactly_and_flags_collapsed_layers(tiny):
    compressed = compress(tiny, Recipe(PruneConfig(0.5, "l1", "layer")))
    report = build_report(compressed, export_bytes(compressed))
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["conv.w"].zeros == 27 and by_name["fc.w"].zeros == 120
    assert by_name["conv.w"].sparsity == 0.5 and by_name["fc.w"].bits == 32
    assert report.totals["zeros"] == 147 and report.totals["nonzero"] == 294 - 147
    assert report.collapsed_layers == []

    # global pruning of a layer whose weights are all tiny empties it
    small = conv_gemm_model()
    conv = next(init for init in small.graph.initializer if init.name == "conv.w")
    conv.raw_data = (np.frombuffer(conv.raw_data, np.float32) * 1e-4).astype(np.float32).tobytes()
    model = model_from_bytes(small.SerializeToString(), name="small.onnx", source="small.onnx")
    compressed = compress(model, Recipe(PruneConfig(0.2, "l1", "global")))  # 59 of 294: all 54 conv weights
    report = build_report(compressed, export_bytes(compressed))
    assert report.collapsed_layers == ["conv"]
    assert [layer.collapsed for layer in report.layers] == [True, False]


def test_histograms_share_edges_and_count_every_weight(tiny):
    compressed = compress(tiny, Recipe(PruneConfig(0.5), QuantConfig(3)))
    report = build_report(compressed, export_bytes(compressed))
    for name, histogram in report.histograms.items():
        params = 294 if name == "all" else next(layer.params for layer in tiny.layers if layer.name == name)
        assert len(histogram.edges) == len(histogram.original) + 1
        assert sum(histogram.original) == sum(histogram.compressed) == params
    assert report.histograms["all"].edges[0] == -report.histograms["all"].edges[-1]


def test_fidelity_of_an_unchanged_model_is_perfect_and_flags_random_inputs(tiny):
    compressed = compress(tiny, Recipe())
    report = build_report(compressed, export_bytes(compressed))
    assert report.fidelity.inputs == "random" and report.fidelity.samples == 8
    assert report.fidelity.top1_agreement == 1.0 and report.fidelity.max_abs_error == 0.0
    assert report.fidelity.cosine_min == pytest.approx(1.0)
    assert report.accuracy is None
    assert any("random inputs" in note for note in report.notes)


def test_digits_accuracy_before_and_after(digits_cnn):
    assert digits_cnn.eval_set.labels is not None and len(digits_cnn.eval_set.labels) == 359
    compressed = compress(digits_cnn, Recipe(quant=QuantConfig(8)))
    report = build_report(compressed, export_bytes(compressed))
    assert report.accuracy.original >= 0.97
    assert abs(report.accuracy.compressed - report.accuracy.original) <= 0.01  # 8-bit weights barely matter
    assert report.fidelity.top1_agreement >= 0.99


def test_latency_is_interleaved_with_equal_runs_and_records_the_environment(tiny):
    latency = compare_latency(tiny.onnx_bytes, tiny.onnx_bytes, tiny.latency_feed, min_runs=10, budget_s=0.05)
    assert latency.original.runs == latency.compressed.runs >= 10
    for stats in (latency.original, latency.compressed):
        assert stats.p10 <= stats.median <= stats.p90 and len(stats.samples) == stats.runs
    _, flags = cpu_description()
    assert latency.environment.cpu_flags == flags and latency.environment.threads >= 1
    assert latency.environment.onnxruntime.count(".") >= 1


def test_quantization_codes_cover_the_grid_and_count_every_weight(tiny):
    compressed = compress(tiny, Recipe(PruneConfig(0.5, "l1", "layer"), QuantConfig(3)))
    codes = build_report(compressed, export_bytes(compressed)).quantization_codes
    assert codes["all"].codes == [-3, -2, -1, 0, 1, 2, 3]
    assert sum(codes["conv.w"].counts) == 54 and sum(codes["fc.w"].counts) == 240 and sum(codes["all"].counts) == 294
    assert codes["conv.w"].counts[3] >= 27 and codes["fc.w"].counts[3] >= 120  # pruned weights sit on code 0
    assert build_report(compress(tiny, Recipe()), tiny.onnx_bytes).quantization_codes == {}
