"""Inputs made up for a model that came without data: candidate sizes until ONNX Runtime runs it, and a clear
line when none does."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from core import (
    InvalidSettingError,
    ModelLoadError,
    PruneConfig,
    QuantConfig,
    Recipe,
    compress,
    export_bytes,
    load_model,
)
from core.measure.summaries import input_notes
from core.onnx.inputs import GivenInput, hinted_sides, input_plans
from core.onnx.runtime import create_session, run
from tests.graphs import dense_detector, pooled_detector


def test_a_detector_with_symbolic_sides_runs_on_the_first_size_that_fits(tmp_path):
    path = tmp_path / "detector.onnx"
    onnx.save(pooled_detector(grid=10), path)  # 320 / 32: the second candidate side
    model = load_model(path)
    assert model.eval_set.inputs["x"].shape == (8, 3, 320, 320)
    assert model.input_plan.describe() == "x: 8x3x320x320"
    data = export_bytes(compress(model, Recipe(PruneConfig(0.5), QuantConfig(8, "static", "random"))))
    exported = onnx.load_from_string(data)
    dims = [dim.dim_param or dim.dim_value for dim in exported.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "height", "width"]  # the export stays as symbolic as the original
    assert run(create_session(data), model.latency_feed)[0].shape == (1, 5)
    assert input_notes(model) == [
        "Made-up inputs: x: 8x3x320x320. Set them with --shape and --value (in the page: the sidebar's Inputs panel)."
    ]
    given = load_model(path, given={"x": GivenInput("x", shape=(1, 3, 320, 320))})
    assert input_notes(given) == ["Inputs as given: --shape x=1x3x320x320."]


def test_a_model_no_made_up_input_runs_gets_one_line_naming_the_inputs(tmp_path):
    path = tmp_path / "odd.onnx"
    onnx.save(pooled_detector(grid=5), path)  # 160: none of 224, 320, 640
    with pytest.raises(ModelLoadError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message == (
        f"{path}: ONNX Runtime on this model failed: did not run on made-up inputs "
        "(x: 8x3x224x224; also tried 5 other sizes): set them with --shape x=... or --value x=... "
        "(the page's Inputs panel)"
    )
    details = caught.value.details.splitlines()  # ONNX Runtime's own words, one attempt after another
    assert details[1] == "ONNX Runtime said:"
    assert [line.split(":")[0] for line in details[2:]] == ["with x"] * 6
    assert "with x: 8x3x320x320: [ONNXRuntimeError]" in caught.value.details


def test_state_inputs_start_at_zero_and_a_sample_rate_at_16000():
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 128]),
        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, None, 64]),  # unnamed: a state's batch still
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "length"]),
    ]
    graph = helper.make_graph([], "vad", inputs, [])
    plans = input_plans(helper.make_model(graph), "vad.onnx")
    assert [plan.fills for plan in plans] == [
        {"input": "normal", "state": "zeros", "h0": "zeros", "sr": "16000", "tokens": fill}
        for fill in ("ones", "zeros", "small")
    ]
    first = plans[0].feeds(batch=2, seed=0)
    # "batch" names the batch wherever it appears; a state's first symbolic dim is its batch
    assert first["state"].shape == (2, 2, 128) and not first["state"].any()
    assert first["h0"].shape == (2, 2, 64) and not first["h0"].any()
    assert first["sr"].shape == () and first["sr"] == 16000
    assert first["input"].shape == (2, 16) and [plan.shapes["input"] for plan in plans] == [
        (None, n) for n in (16, 128, 512)
    ]
    assert plans[0].describe(batch=2) == (
        "input: 2x16, state: 2x2x128 = zeros, h0: 2x2x64 = zeros, sr: scalar = 16000, tokens: 2x16"
    )


def test_the_cli_takes_an_input_shape_where_no_made_up_one_runs(tmp_path, capsys):
    from core.cli import main

    path = tmp_path / "odd.onnx"
    onnx.save(pooled_detector(grid=5), path)
    out = tmp_path / "out.onnx"
    assert (
        main(["compress", str(path), "--prune", "0.5", "--shape", "x=1x3x160x160", "--out", str(out), "--no-latency"])
        == 0
    )
    assert "fidelity on 8 random inputs" in capsys.readouterr().out  # the batch axis stays the evaluation batch
    assert run(create_session(out.read_bytes()), {"x": np.zeros((1, 3, 160, 160), np.float32)})[0].shape == (1, 5)


def test_the_recipe_records_the_given_inputs_and_applying_it_reproduces_them(tmp_path):
    from core.cli import main

    path = tmp_path / "odd.onnx"
    onnx.save(pooled_detector(grid=5), path)
    first, again, recipe = tmp_path / "first.onnx", tmp_path / "again.onnx", tmp_path / "recipe.json"
    arguments = ["--prune", "0.5", "--bits", "8", "--no-latency"]
    given = ["--shape", "x=1x3x160x160", "--value", "x=0.5"]
    assert main(["compress", str(path), *arguments, *given, "--out", str(first), "--recipe", str(recipe)]) == 0
    assert json.loads(recipe.read_text())["inputs"] == [{"name": "x", "shape": [1, 3, 160, 160], "value": 0.5}]
    # without --shape the made-up sizes do not run (see above): the recipe's inputs are what make it load
    assert main(["compress", str(path), "--apply-recipe", str(recipe), "--no-latency", "--out", str(again)]) == 0
    assert again.read_bytes() == first.read_bytes()


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"name": "x", "shape": [1, 0]}, "input 'x': shape must be a list of positive whole numbers"),
        ({"name": "x", "value": "high"}, "input 'x': value must be a number"),
        ({"shape": [1]}, 'an input must be {"name": ..., "shape": [...], "value": ...}'),
    ],
)
def test_a_recipe_with_bad_inputs_is_refused_in_one_line(entry, reason):
    with pytest.raises(InvalidSettingError) as caught:
        Recipe.from_dict(Recipe().to_dict() | {"inputs": [entry]})
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["--shape", "x=1x3x160"], "--shape of 'x' does not fit its declared ?x3x?x?"),
        (["--shape", "image=1x3x160x160"], "no input named image; the model takes x"),
        (["--shape", "x=1x3xbig"], "--shape 'x=1x3xbig': expected NAME=1x3x640x640"),
        (["--value", "x=lots"], "--value 'x=lots': expected NAME=16000"),
    ],
)
def test_bad_input_settings_exit_2_with_one_line(tmp_path, capsys, arguments, reason):
    from core.cli import main

    path = tmp_path / "odd.onnx"
    onnx.save(pooled_detector(grid=5), path)
    assert main(["inspect", str(path), *arguments]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {path}: {reason}" if "expected" not in reason else f"error: {reason}"
    ]


def test_a_sample_refuses_input_settings(capsys):
    from core.cli import main

    assert main(["inspect", "digits-cnn", "--value", "image=1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: digits-cnn: comes with its own data: --shape and --value are for an ONNX model without"
    )


def test_verbose_prints_onnx_runtimes_full_message_after_the_one_line(tmp_path, capfd):
    from core.cli import main

    path = tmp_path / "odd.onnx"
    onnx.save(pooled_detector(grid=5), path)
    assert main(["inspect", str(path)]) == 2
    # read at the file descriptor, where ONNX Runtime's own log lines (from the sandbox child) would land; other
    # lines may be there too (Streamlit's warnings from app tests earlier in the same process)
    lines = capfd.readouterr().err.strip().splitlines()
    assert not [line for line in lines if ":onnxruntime:" in line]
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert main(["inspect", str(path), "--verbose"]) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    lines = lines[next(index for index, line in enumerate(lines) if line.startswith("error:")) :]
    assert lines[0].startswith(f"error: {path}: ONNX Runtime on this model failed: did not run on made-up inputs")
    assert lines[2] == "ONNX Runtime said:" and len(lines) == 9
    assert all("[ONNXRuntimeError]" in line for line in lines[3:])


def test_sizes_named_in_the_models_metadata_are_tried_after_the_usual_sides(tmp_path):
    proto = pooled_detector(grid=5)  # 160x160 only
    onnx.helper.set_model_props(proto, {"imgsz": "[160, 160]", "stride": "32", "author": "nobody 2024"})
    assert hinted_sides(proto) == [(160, 160)]
    path = tmp_path / "hinted.onnx"
    onnx.save(proto, path)
    model = load_model(path)
    assert model.input_plan.describe() == "x: 8x3x160x160"  # the fourth candidate, after 224, 320 and 640
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {"input_height": "96", "input_width": "128"})
    assert hinted_sides(proto) == [(96, 128)]


@pytest.mark.parametrize(
    "recipe",
    [
        Recipe(PruneConfig(0.5, granularity="channel")),
        Recipe(quant=QuantConfig(8, "static", "random")),
        Recipe(PruneConfig(0.5, granularity="channel"), QuantConfig(8, "dynamic")),
    ],
    ids=["channel", "static-int8", "channel+dynamic-int8"],
)
def test_symbolic_spatial_dims_survive_channel_pruning_and_int8(tmp_path, recipe):
    path = tmp_path / "dense.onnx"
    onnx.save(dense_detector(), path)
    model = load_model(path)  # measured and calibrated at 224x224, made up
    exported = onnx.load_from_string(export_bytes(compress(model, recipe)))
    dims = lambda value: [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(exported.graph.input[0]) == ["N", 3, "height", "width"]
    assert dims(exported.graph.output[0]) == ["N", 2, "out_h", "out_w"]
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 96)).astype(np.float32)  # not the size it was probed at
    assert run(create_session(exported.SerializeToString()), {"x": x})[0].shape == (2, 2, 32, 48)
    if recipe.prune.granularity == "channel":  # the channels really went
        shapes = {init.name: list(init.dims) for init in exported.graph.initializer}
        assert shapes["c1.w"][0] == 4 and shapes["c2.w"][:2] == [4, 4]
