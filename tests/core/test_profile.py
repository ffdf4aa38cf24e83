"""'Why isn't it faster?': ONNX Runtime's own profile of both models, tied to layers, and findings that hold only
when their condition does."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes, load_model
from core.measure.findings import FINDINGS, compare
from core.measure.profile import NodeTime, Profile, layer_names, profile_against_original
from core.measure.report import LayerStats


def _tiny_graph() -> bytes:
    """Conv -> Relu -> Flatten -> MatMul: ONNX Runtime fuses the Relu into the Conv."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "conv.weight"),
        numpy_helper.from_array(rng.standard_normal((8 * 6 * 6, 10)).astype(np.float32), "fc.weight"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc.weight"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], weights)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_tiny_graph_profiles_node_by_node_after_fusion_and_its_times_add_up(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(_tiny_graph())
    model = load_model(str(path))  # a user's file: profiled in a sandbox child
    names = layer_names(model)
    assert names.weights == {"conv.weight": "conv", "fc.weight": "fc"}
    assert names.outputs == {"c": "conv", "r": "conv", "y": "fc"}  # the Relu's output: fused into the conv
    original, again = profile_against_original(model, model.runnable, budget_s=0.2)
    for profile in (original, again):
        ops = {node.op_type for node in profile.nodes}
        conv = [node for node in profile.nodes if node.layer == "conv"]
        # the Relu is fused into the convolution: a FusedConv, or on CPUs with wide vectors a blocked-layout Conv
        assert "Relu" not in ops and [node.op_type for node in conv] in (["FusedConv"], ["Conv (NCHWc)"])
        assert [node.name for node in profile.nodes if node.layer == "fc"] == ["fc"]
        assert all(node.ms > 0 for node in profile.nodes) and profile.runs >= 10 and profile.threads == 1
        assert 0 < profile.kernel_ms <= profile.median_ms  # the kernels are inside the timed run
        assert sum(profile.by_op_type().values()) == pytest.approx(profile.kernel_ms)
        assert profile.outside_ms == pytest.approx(profile.median_ms - profile.kernel_ms)
    assert sorted(node.name for node in original.nodes) == sorted(node.name for node in again.nodes)


def test_weight_only_quantization_shows_dequantize_linear_time_and_the_finding(digits_cnn):
    compressed = compress(digits_cnn, Recipe.for_model(digits_cnn, PruneConfig(), QuantConfig(8)))
    original, export = profile_against_original(digits_cnn, export_bytes(compressed), budget_s=0.5)
    dequantize = [node for node in export.nodes if node.op_type == "DequantizeLinear"]
    assert not any(node.op_type == "DequantizeLinear" for node in original.nodes)
    assert len(dequantize) == len(digits_cnn.layers) and all(node.reads_weights and node.ms > 0 for node in dequantize)
    assert {node.layer for node in dequantize} == {layer.node for layer in digits_cnn.layers}  # each tied to its layer
    from core.measure.summaries import summarize_weights

    comparison = compare(original, export, summarize_weights(compressed).layers)
    finding = next(finding for finding in comparison.findings if finding.key == "dequantize")
    assert finding.text.startswith(f"Weight-only DequantizeLinear costs {sum(node.ms for node in dequantize):.3f} ms")
    assert finding in comparison.explaining()
    assert dict((op, after) for op, _, after in comparison.op_types)["DequantizeLinear"] > 0


def test_static_int8_shows_quantized_kernels(digits_cnn):
    compressed = compress(digits_cnn, Recipe.for_model(digits_cnn, PruneConfig(), QuantConfig(8, "static")))
    _, export = profile_against_original(digits_cnn, export_bytes(compressed), budget_s=0.3)
    ops = {node.op_type for node in export.nodes}
    assert "QLinearConv" in ops and not ops & {"Conv", "FusedConv"}
    convs = [node for node in export.nodes if node.op_type == "QLinearConv"]
    assert {node.layer for node in convs} == {layer.node for layer in digits_cnn.layers if layer.op_type == "Conv"}


def _profile(nodes: list[NodeTime], outside: float = 0.0, threads: int = 1, spread: float = 0.0,
             flushed: dict[str, float] | None = None) -> Profile:  # fmt: skip
    median = sum(node.ms for node in nodes) + outside
    return Profile(nodes, median, spread * median, 20, threads, [median] * 20, flushed_by_op=flushed)


def _layer(node: str, sparsity: float = 0.0, bits: int = 32, channels_kept: int = 8) -> LayerStats:
    return LayerStats(node, node, "Conv", [8, 3, 3, 3], 216, int(216 * sparsity), sparsity, bits, 1000, False,
                      channels=8, channels_kept=channels_kept, macs_after=1000 * channels_kept // 8)  # fmt: skip


BASE = [NodeTime("a", "FusedConv", 1.0, "a"), NodeTime("b", "FusedConv", 1.0, "b")]

# each finding: (original nodes, export nodes, layer stats, keep_float, the export's options) where it holds
HOLDS = {
    "dequantize": (BASE, [*BASE, NodeTime("a_dq", "DequantizeLinear", 0.4, "a", True, ["Conv"])], None, ()),
    "unfused": (BASE, [*BASE, NodeTime("q", "QuantizeLinear", 0.2, None, False, ["Softmax"])], None, ()),
    "conv_integer": (BASE, [NodeTime("a", "ConvInteger", 2.5, "a"), BASE[1]], None, ()),
    "zeros": (BASE, BASE, [_layer("a", sparsity=0.7), _layer("b")], ()),
    "kernel_changed": (BASE, [NodeTime("a", "Conv", 1.5, "a"), BASE[1]], None, ()),
    "float_dominates": (
        BASE,
        [BASE[0], NodeTime("b", "QLinearConv", 0.3, "b")],
        [_layer("a"), _layer("b", bits=8)],
        ("a",),
    ),  # fmt: skip
    "untouched": (
        [*BASE, NodeTime("s", "Softmax", 1.0)],
        [NodeTime("a", "FusedConv", 0.3, "a"), NodeTime("b", "FusedConv", 0.3, "b"), NodeTime("s", "Softmax", 1.0)],
        None,
        (),
    ),  # fmt: skip
    "layout": (BASE, [*BASE, NodeTime("t", "Transpose", 0.3)], None, ()),
    "overhead": (BASE, BASE, None, (), {"outside": 1.0}),
    "threads": (BASE, BASE, None, (), {"threads": 2, "spread": 0.5}),
    # Softmax profiled again with denormals flushed: 1.0 -> 0.1 ms
    "denormals": (
        [*BASE, NodeTime("s", "Softmax", 0.5)],
        [*BASE, NodeTime("s", "Softmax", 0.5)],
        None,
        (),
        {"flushed": {"FusedConv": 2.0, "Softmax": 0.05}},
    ),  # fmt: skip
}


@pytest.mark.parametrize("key", list(FINDINGS))
def test_each_finding_holds_only_when_its_condition_does(key):
    before, after, stats, keep, *options = HOLDS[key]
    found = compare(_profile(before), _profile(after, **(options[0] if options else {})), stats, keep).findings
    assert [finding.key for finding in found] == [key]
    absent = compare(_profile(before), _profile(BASE), [_layer("a"), _layer("b")], ()).findings
    assert absent == []  # nothing changed: no finding holds


def test_the_denormals_finding_gives_both_times_and_the_option_that_flushes_them():
    before = [*BASE, NodeTime("s", "Softmax", 6.4)]
    after = _profile(before, flushed={"FusedConv": 2.0, "Softmax": 0.6})
    (finding,) = [found for found in compare(_profile(before), after).findings if found.key == "denormals"]
    assert finding.text.startswith("Softmax takes 6.400 ms per run computing on denormal floats")
    assert "with denormals flushed to zero, 0.600 ms" in finding.text
    assert "session.set_denormal_as_zero = 1" in finding.text
    # a gain under 30 % of the op's time is not named
    found = compare(_profile(before), _profile(before, flushed={"FusedConv": 2.0, "Softmax": 5.0})).findings
    assert "denormals" not in {finding.key for finding in found}


def masked_softmax_graph() -> onnx.ModelProto:
    """scores + a mask of float32's lowest value on 7 of every 8 positions, then Softmax: a masked attention."""
    mask = np.zeros((1, 4, 64, 64), np.float32)
    mask[..., 8:] = np.finfo(np.float32).min
    nodes = [helper.make_node("Conv", ["x", "w"], ["scores"], name="conv"),
             helper.make_node("Add", ["scores", "mask"], ["masked"], name="add"),
             helper.make_node("Softmax", ["masked"], ["y"], name="softmax", axis=-1)]  # fmt: skip
    graph = helper.make_graph(
        nodes, "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 64, 64])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1), "w"),
         numpy_helper.from_array(mask, "mask")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_softmax_heavy_export_is_profiled_again_with_denormals_flushed_in_a_child_of_its_own(tmp_path):
    path = tmp_path / "masked.onnx"
    onnx.save(masked_softmax_graph(), path)
    model = load_model(str(path))
    original, export = profile_against_original(model, model.runnable, budget_s=0.4)
    assert original.flushed_by_op is None and not export.flush_denormals
    assert set(export.flushed_by_op) == set(export.by_op_type()) and export.flushed_by_op["Softmax"] > 0
    # asked for, both models are profiled flushed, and nothing is profiled twice
    original, export = profile_against_original(model, model.runnable, budget_s=0.2, flush_denormals=True)
    assert original.flush_denormals and export.flush_denormals and export.flushed_by_op is None


def test_what_changed_most_pairs_a_layers_renamed_nodes_and_keeps_unowned_nodes_apart():
    # dynamic int8 replaces layer a's MatMul by renamed nodes: a is compared whole, not shown as vanished
    before = [NodeTime("a", "MatMul", 1.0, "a"), NodeTime("s", "Softmax", 0.5)]
    after = [NodeTime("a_quant", "DynamicQuantizeMatMul", 0.3, "a"), NodeTime("x_q", "DynamicQuantizeLinear", 0.1, "a"),
             NodeTime("s", "Softmax", 0.45), NodeTime("t", "Transpose", 0.2)]  # fmt: skip
    changes = compare(_profile(before), _profile(after)).top_changes
    assert changes == [("a", "MatMul -> DynamicQuantizeMatMul", 1.0, pytest.approx(0.4)), ("t", "Transpose", 0.0, 0.2),
                       ("s", "Softmax", 0.5, 0.45)]  # fmt: skip


def test_a_layer_far_off_its_mac_ratio_is_named_with_the_profiles_reason():
    stats = [_layer("a", channels_kept=4), _layer("b", channels_kept=4)]  # half the MACs each
    after = [NodeTime("a", "FusedConv", 0.5, "a"), NodeTime("b", "FusedConv", 0.55, "b"),
             NodeTime("b_dq", "DequantizeLinear", 0.3, "b", True)]  # fmt: skip
    layers = {row.layer: row for row in compare(_profile(BASE), _profile(after), stats).layers}
    assert layers["a"].mac_ratio == 0.5 and layers["a"].measured_ratio == 0.5 and layers["a"].reason is None
    assert layers["b"].measured_ratio == pytest.approx(0.85)
    assert layers["b"].reason == "0.300 ms of its 0.850 ms converts int8 to float or back"


@pytest.mark.parametrize("block", [16, 8])  # AVX-512F, AVX2
def test_a_convolution_that_leaves_the_blocked_layout_is_told_to_round_its_channels(monkeypatch, block):
    monkeypatch.setattr("core.measure.findings.nchwc_block", lambda: block)
    before = [NodeTime("a_nchwc", "Conv (NCHWc)", 0.06, "a")]
    after = [NodeTime("a", "Conv", 0.39, "a")]
    (finding,) = compare(_profile(before), _profile(after), [_layer("a", channels_kept=5)]).findings
    assert finding.key == "kernel_changed" and finding.text == (
        "1 layer(s) run on another, slower kernel than before: a ran as Conv (NCHWc) in 0.060 ms, now as Conv in "
        "0.390 ms: 5 of 8 channels kept, and ONNX Runtime's blocked layout (NCHWc) takes channel counts in multiples "
        f"of its block, {block} on this CPU; keep a multiple of {block} channels (channel multiple {block}: "
        f"`--channel-multiple {block}`)."
    )


def test_the_verdict_names_the_findings_that_explain_a_wrong_expectation():
    comparison = compare(_profile(BASE), _profile(BASE, outside=3.0))
    assert comparison.effect == "slower"
    assert comparison.verdict_check("faster") == (
        "expected faster; measured slower (0.40x in the profiled runs); the expectation missed it, explained by: "
        "overhead"
    )
    assert comparison.verdict_check("slower").endswith("measured slower (0.40x in the profiled runs); why: overhead")
    faster = compare(_profile(BASE, outside=3.0), _profile(BASE))
    assert faster.verdict_check("faster") == "expected faster; measured faster (2.50x in the profiled runs)"
    assert faster.verdict_check("slower").endswith("the expectation missed it, and no finding explains it")


def test_the_profile_command_prints_the_table_and_writes_its_json(tmp_path, capsys, digits_cnn):
    from core.cli import main

    recipe = tmp_path / "r.json"
    recipe.write_text(Recipe.for_model(digits_cnn, PruneConfig(), QuantConfig(8)).to_json())
    out = tmp_path / "p.json"
    assert main(["profile", "digits-cnn", "--recipe", str(recipe), "--json", str(out), "--budget", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "DequantizeLinear" in printed and "- [dequantize] Weight-only DequantizeLinear costs" in printed
    data = json.loads(out.read_text())
    assert set(data) == {"original", "compressed", "op_types", "top_changes", "layers", "findings"}
    assert set(data["compressed"]) == {"nodes", "median_ms", "spread_ms", "runs", "threads", "samples", "kernel_ms",
                                       "outside_ms", "flush_denormals", "flushed_by_op"}  # fmt: skip
    assert set(data["compressed"]["nodes"][0]) == {"name", "op_type", "ms", "layer", "reads_weights", "feeds"}
    assert {"layer", "mac_ratio", "measured_ratio", "sparsity", "bits", "reason"} <= set(data["layers"][0])
    assert {finding["key"] for finding in data["findings"]} >= {"dequantize"}
    assert len(data["layers"]) == len(digits_cnn.layers)


def test_the_profile_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    from core.cli import main

    assert main(["profile", "digits-cnn"]) == 2
    assert (
        capsys.readouterr().err.strip() == "error: give the compressed model: COMPRESSED.onnx or --recipe RECIPE.json"
    )
    other = tmp_path / "other.onnx"
    onnx.save(onnx.load_from_string(_tiny_graph()), other)
    assert main(["profile", "digits-cnn", str(other)]) == 2
    assert "takes other inputs than digits-cnn; cannot run both on the same feed" in capsys.readouterr().err


def test_an_int8_export_given_as_a_file_is_profiled_and_timed_against_its_original(tmp_path, capsys, digits_cnn):
    # a static int8 export has no float weights left: it is only run, never loaded as a model to compress
    from core.cli import main

    export = tmp_path / "int8.onnx"
    compressed = compress(digits_cnn, Recipe.for_model(digits_cnn, PruneConfig(), QuantConfig(8, activations="static")))
    export.write_bytes(export_bytes(compressed))
    out = tmp_path / "p.json"
    assert main(["profile", "digits-cnn", str(export), "--json", str(out), "--budget", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "QLinearConv" in printed
    layers = json.loads(out.read_text())["layers"]
    assert len(layers) == len(digits_cnn.layers) and all(row["measured_ratio"] is not None for row in layers)
    # no recipe to read: what the layers were left with is not known, and not made up
    assert {(row["mac_ratio"], row["sparsity"], row["bits"]) for row in layers} == {(None, None, None)}
    assert main(["bench", "digits-cnn", str(export), "--budget", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "latency int8.onnx: median" in printed and "speed-up (median ratio): " in printed


def test_the_html_report_carries_the_profile_when_one_was_taken(digits_cnn):
    from core.measure.summaries import build_report
    from core.present.html_report import render

    compressed = compress(digits_cnn, Recipe.for_model(digits_cnn, PruneConfig(), QuantConfig(8)))
    report = build_report(compressed, export_bytes(compressed))
    comparison = compare(_profile(BASE), _profile(HOLDS["dequantize"][1]))
    page = render(report, comparison)
    assert "<h2>Where the time goes</h2>" in page and "Where the time goes: ms per run by op type" in page
    assert "- [dequantize] Weight-only DequantizeLinear costs 0.400 ms per run (17% of" in page
    assert "Where the time goes" not in render(report)
