from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from core import PruneConfig, QuantConfig, Recipe, build_report, compress, export_bytes, load_model, model_from_bytes
from core.onnx.runtime import create_session, run
from tests.graphs import grouped_conv_model, structured_cnn

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _channel(amount: float, criterion: str = "l1", **options) -> Recipe:
    return Recipe(PruneConfig(amount, criterion, granularity="channel", **options))


def _kept(compressed) -> dict[str, int]:
    return {layer.name: layer.shape[layer.channel_axis] for layer in compressed.layers}


def _outputs(data: bytes, feeds) -> np.ndarray:
    return run(create_session(data), feeds)[0]


def _deadened(dead: dict[str, list[int]]) -> onnx.ModelProto:
    """structured_cnn with the listed output channels made (almost) inert: tiny filters, zero biases, and a BN
    that maps zero to zero. Removing exactly those channels must leave the outputs as they were."""
    model = structured_cnn()
    arrays = {init.name: numpy_helper.to_array(init).copy() for init in model.graph.initializer}
    for conv, channels in dead.items():
        arrays[f"{conv}.w"][channels] *= 1e-6
        arrays[f"{conv}.b"][channels] = 0
        if conv == "stem":
            arrays["bn.b"][channels] = 0
            arrays["bn.m"][channels] = 0
    del model.graph.initializer[:]
    model.graph.initializer.extend(numpy_helper.from_array(values, name) for name, values in arrays.items())
    return model


def test_removing_inert_channels_through_every_structure_keeps_the_outputs():
    # the residual group (stem, res2 and the Add) loses 2 of 8, res1 2 of 8, the concat's branches 2 of 6 and
    # 1 of 4 (the depthwise conv follows them), the head 2 of 6 (and the Gemm the matching 2 x 16 inputs)
    dead = {"stem": [1, 6], "res2": [1, 6], "res1": [0, 5], "branch_a": [2, 4], "branch_b": [3], "head": [0, 3]}
    dead["depthwise"] = [2, 4, 6 + 3]
    model = model_from_bytes(_deadened(dead).SerializeToString(), name="cnn.onnx", source="cnn.onnx")
    compressed = compress(model, _channel(0.25, scope="layer"))
    assert _kept(compressed) == {
        "stem.w": 6, "res1.w": 6, "res2.w": 6, "branch_a.w": 4, "branch_b.w": 3, "depthwise.w": 7, "head.w": 4, "fc.w": 4,
    }  # fmt: skip
    assert compressed.layers[-1].shape == (4, 4 * 16)  # the Gemm lost the flattened inputs of 2 head channels
    data = export_bytes(compressed)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    depthwise = next(node for node in onnx.load_from_string(data).graph.node if node.name == "depthwise")
    assert next(attr.i for attr in depthwise.attribute if attr.name == "group") == 7
    feeds = model.eval_set.inputs
    np.testing.assert_allclose(_outputs(data, feeds), model.reference_outputs[0], rtol=0, atol=1e-4)


def test_channel_pruning_reports_macs_channels_and_what_stayed_whole():
    model = model_from_bytes(grouped_conv_model().SerializeToString(), name="g.onnx", source="g.onnx")
    compressed = compress(model, _channel(0.5))
    report = build_report(compressed, export_bytes(compressed))
    layers = {layer.name: layer for layer in report.layers}
    assert (layers["last.w"].channels, layers["last.w"].channels_kept) == (4, 2)
    assert layers["last.w"].shape_after == [2, 8, 3, 3] and layers["out.w"].shape_after == [5, 2, 1, 1]
    assert layers["last.w"].macs == 4 * 64 * 8 * 9 and layers["last.w"].macs_after == 2 * 64 * 8 * 9
    assert report.left_whole == {
        "first": "grouped convolution 'grouped' (group=2)",
        "grouped": "grouped convolution 'grouped' (group=2)",
        "out": "is part of the graph output 'y'",
    }
    assert report.totals["macs_after"] == sum(layer.macs_after for layer in report.layers) < report.totals["macs"]
    assert _outputs(export_bytes(compressed), model.eval_set.inputs).shape == model.reference_outputs[0].shape


def test_amount_zero_is_bit_identical_and_quantization_composes(digits_cnn):
    unchanged = export_bytes(compress(digits_cnn, _channel(0.0)))
    assert np.array_equal(_outputs(unchanged, digits_cnn.eval_set.inputs), digits_cnn.reference_outputs[0])
    quantized = compress(digits_cnn, Recipe(PruneConfig(0.5, granularity="channel"), QuantConfig(8)))
    data = export_bytes(quantized)
    reference = _outputs(quantized.reference_onnx().SerializeToString(), digits_cnn.eval_set.inputs)
    np.testing.assert_allclose(_outputs(data, digits_cnn.eval_set.inputs), reference, rtol=0, atol=1e-4)
    assert all(q.values.shape == quantized.weights[name].shape for name, q in quantized.quantized.items())


def test_resnet18_half_the_channels_cuts_macs_3_75_times(resnet18):
    compressed = compress(resnet18, _channel(0.5))
    assert sum(compressed.macs.values()) == 483_149_824  # from 1,814,073,344
    kept = _kept(compressed)
    assert kept["fc.weight"] == 1000 and sorted(set(kept.values()) - {1000}) == [32, 64, 128, 256]
    assert _outputs(export_bytes(compressed), resnet18.latency_feed).shape == (1, 1000)


def test_global_scope_and_rounding_to_a_multiple_of_8(resnet18):
    rounded = _kept(compress(resnet18, _channel(0.3, scope="global", channel_multiple=8)))
    assert all(count % 8 == 0 for count in rounded.values())
    plain = _kept(compress(resnet18, _channel(0.3, scope="global")))
    assert plain != rounded and any(count % 8 for count in plain.values())
    assert all(rounded[name] >= plain[name] for name in plain)  # rounding only ever keeps more


@pytest.mark.parametrize("criterion", ["l2", "activation", "random"])
def test_every_criterion_prunes_the_same_counts_by_different_channels(criterion, digits_cnn):
    l1 = compress(digits_cnn, _channel(0.5))
    other = compress(digits_cnn, _channel(0.5, criterion, seed=3))
    assert _kept(other) == _kept(l1)
    assert any(not np.array_equal(other.weights[name], l1.weights[name]) for name in l1.weights)
    again = compress(digits_cnn, _channel(0.5, criterion, seed=3))
    assert all(np.array_equal(again.weights[name], other.weights[name]) for name in other.weights)


# densenet121 and inception_v2 scale each channel by an Unsqueeze of a constant: at their opset 9 the axes are an
# attribute and those nodes stayed unfolded ("a per-channel tensor that is not a constant"); converted to opset 13
# at load, the axes are an input, the Unsqueezes fold (683 nodes folded instead of 407) and the channels prune.
PRUNABLE_LIGHT = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "squeezenet",
    "vgg19",
    "zfnet512",
]
REFUSED_LIGHT = {"shufflenet": "grouped convolution"}


@pytest.mark.parametrize("name", PRUNABLE_LIGHT + sorted(REFUSED_LIGHT))
def test_onnx_model_zoo_graphs_prune_or_say_why(name):
    model = load_model(LIGHT / f"light_{name}.onnx")
    assert model.folded_nodes > 0  # their weights are ConstantOfShape outputs until folded
    compressed = compress(model, _channel(0.5))
    data = export_bytes(compressed)
    assert _outputs(data, model.latency_feed).shape == model.reference_outputs[0][:1].shape
    removed = sum(model.macs.values()) - sum(compressed.macs.values())
    if name in REFUSED_LIGHT:
        assert removed == 0
        assert set(compressed.left_whole) == {layer.name for layer in model.layers}  # every layer says why
        assert any(REFUSED_LIGHT[name] in reason for reason in compressed.left_whole.values())
    else:
        assert removed > 0


@pytest.mark.parametrize("amount", [0.1, 0.5])
def test_removing_channels_equals_zeroing_them_in_the_original(digits_cnn, amount):
    """The torch export folds BatchNorm into the convs, so a channel whose filters and biases are zero outputs
    exactly zero everywhere: the pruned graph must compute what the original computes with those zeroed."""
    from core.compression.pipeline import prepare_index

    recipe = _channel(amount)
    index = prepare_index(digits_cnn, recipe)
    removed = index.removed_roots(amount, "layer", 1)
    graph = index.graph
    gone = np.isin(graph.roots, list(removed))
    arrays = {init.name: numpy_helper.to_array(init).copy() for init in digits_cnn.proto.graph.initializer}
    for channel, producers in graph.producers.items():
        for producer in producers:
            if gone[channel]:
                np.moveaxis(arrays[producer.weight], producer.axis, 0)[producer.index] = 0
    for edit in graph.slices:
        if arrays[edit.initializer].ndim == 1:  # biases
            arrays[edit.initializer][gone[graph.tensors[edit.tensor].ids]] = 0
    masked = onnx.ModelProto()
    masked.CopyFrom(digits_cnn.proto)
    del masked.graph.initializer[:]
    masked.graph.initializer.extend(numpy_helper.from_array(values, name) for name, values in arrays.items())
    expected = _outputs(masked.SerializeToString(), digits_cnn.eval_set.inputs)
    pruned = _outputs(export_bytes(compress(digits_cnn, recipe)), digits_cnn.eval_set.inputs)
    np.testing.assert_allclose(pruned, expected, rtol=0, atol=1e-4)
