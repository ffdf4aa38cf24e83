"""The one-line description of an export is read from the exported file, not from the settings that asked for it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from core import LayerOverride, PruneConfig, QuantConfig, Recipe, build_report, compress, export_bytes, model_from_bytes
from core.measure.describe import describe_export, shortfall
from tests.graphs import conv_gemm_model


def _report(model, recipe):
    compressed = compress(model, recipe)
    data = export_bytes(compressed)
    return build_report(compressed, data), onnx.load_from_string(data)


def _weights(exported: onnx.ModelProto, model) -> list[np.ndarray]:
    """The prunable layers' weights as stored (int8 codes or float), told from scales and zero points by size."""
    sizes = {layer.params for layer in model.layers}
    return [array for init in exported.graph.initializer if (array := numpy_helper.to_array(init)).size in sizes]


def _conv_channels(exported: onnx.ModelProto, model) -> int:
    stored = {init.name: init for init in exported.graph.initializer}
    nodes = {layer.node for layer in model.layers if layer.op_type == "Conv"}
    return sum(
        numpy_helper.to_array(stored[node.input[1]]).shape[0]
        for node in exported.graph.node
        if node.name in nodes and node.input[1] in stored
    )


def test_blocks_round_to_the_nearest_whole_block_a_half_down(digits_cnn):
    report, exported = _report(digits_cnn, Recipe(PruneConfig(0.5, granularity="block"), QuantConfig(8, "static")))
    assert sum(block.dropped for block in report.blocks) == 1  # 1.5 blocks asked: 1, not 2 (67 %)
    int8 = sum(values.dtype == np.int8 for values in _weights(exported, digits_cnn))
    assert int8 == 7  # the 9 layers less the 2 of the dropped block, as the description says
    assert describe_export(report).endswith(
        "; dropped 1 of 3 residual blocks; weights by layer: 7 at 8-bit, int8 activations (static)"
    )


def test_channels_removed_are_counted_in_the_file_and_a_shortfall_is_said(digits_cnn):
    report, exported = _report(digits_cnn, Recipe(PruneConfig(0.5, granularity="channel")))
    original = sum(layer.channels for layer in report.layers if layer.op_type == "Conv")
    removed = original - _conv_channels(exported, digits_cnn)
    assert f"removed {removed} of 218 output channels" in describe_export(report) and removed == 104
    assert shortfall(report) is None  # 104 of 218 is what 50 % asks, give or take a layer's rounding

    tiny = model_from_bytes(conv_gemm_model().SerializeToString(), name="tiny.onnx", source="tiny.onnx")
    report, _ = _report(tiny, Recipe(PruneConfig(0.5, granularity="channel")))
    assert shortfall(report) == (
        "Asked for 50% of the channels; removed 2 of 8 (25%): 1 layer left whole (1 layer: is part of the graph "
        "output 'y')."
    )


def test_overrides_show_in_the_description(digits_cnn):
    recipe = Recipe(PruneConfig(0.3), QuantConfig(8), overrides=(LayerOverride("/fc/Gemm", bits=4),))
    report, exported = _report(digits_cnn, recipe)
    zeros = sum(int(np.count_nonzero(values == 0)) for values in _weights(exported, digits_cnn))
    assert describe_export(report) == (
        f"{zeros / 37_840:.1%} of the prunable weights zero or removed ({37_840 - zeros:,} of 37,840 left); "
        "weights by layer: 8 at 8-bit, 1 at 4-bit"
    )
