"""Accuracy recovery: the compressed graph trained on the tuning part (never the held-out part) through onnx2torch,
with its masks, removed channels and n-bit grids kept, and its weights written back into the same graph."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes, load_model, prepare_index
from core.compression import recover as recovering
from core.compression.recipe import RecoverConfig
from core.compression.recover import recover, teacher_outputs
from core.compression.schedules import MaskSchedule, amount_at
from core.data.datasets import with_data
from core.data.quality import measure, metric_of
from core.errors import InvalidSettingError, UnsupportedModelError
from sample_models import data


def _compressed(model, recipe: Recipe):
    return compress(model, recipe, prepare_index(model, recipe))


def _held_out(model, export: bytes) -> float:
    return metric_of(model).measured(measure(model, model.outputs_of(export)))


@pytest.fixture(scope="module")
def half_channels(digits_cnn):
    """digits-cnn with half its channels removed: 11.1 % held-out, at chance."""
    return _compressed(digits_cnn, Recipe(PruneConfig(0.5, granularity="channel")))


def test_masks_and_removed_channels_survive_training(digits_cnn, half_channels):
    # half the channels removed, then 40 % of what is left zeroed: both must hold after training
    recipe = Recipe(PruneConfig(0.5, granularity="channel"))
    base = _compressed(digits_cnn, recipe)
    zeroed = {name: np.where(np.abs(values) < np.quantile(np.abs(values), 0.4), 0, values)
              for name, values in base.weights.items()}  # fmt: skip
    base = replace(base, weights=zeroed)
    recovered = recover(base, RecoverConfig(seconds=30, steps=40))
    assert recovered.recovery.steps == 40
    for name, values in zeroed.items():
        after = recovered.weights[name]
        assert after.shape == values.shape  # removed channels stay removed
        assert np.all(after[values == 0] == 0)  # pruned weights stay zero
        assert not np.array_equal(after, values)  # and the others were trained
    exported = export_bytes(recovered)
    assert _held_out(digits_cnn, exported) > recovered.recovery.before + 0.15  # from 11.1 %, after 40 steps only


def test_quantized_weights_stay_on_their_grid_after_training(digits_cnn):
    base = _compressed(digits_cnn, Recipe(PruneConfig(0.3), QuantConfig(3)))  # 3 bits: codes -3..3
    recovered = recover(base, RecoverConfig(seconds=30, steps=30))
    for name, weight in recovered.quantized.items():
        assert weight.bits == 3 and np.abs(weight.values).max() <= 3
        assert len(np.unique(weight.values)) <= 7
        assert np.array_equal(recovered.weights[name], weight.dequantize())  # the export computes these
        assert np.all(weight.values[base.float_weights[name] == 0] == 0)  # pruned stays zero on the grid
        assert not np.array_equal(weight.values, base.quantized[name].values)  # trained through the grid
    assert _held_out(digits_cnn, export_bytes(recovered)) >= _held_out(digits_cnn, export_bytes(base)) - 0.01


def test_the_teacher_runs_once_per_model(digits_cnn, half_channels, monkeypatch):
    teacher = teacher_outputs(digits_cnn)
    assert teacher.shape == (1438, 10)  # every training digit, never the 359 held out

    def no_second_run(*args, **kwargs):
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(type(digits_cnn), "outputs_of", no_second_run)
    monkeypatch.setattr(recovering, "_quality", lambda model, export: 0.0)  # the held-out check runs the export
    assert recover(half_channels, RecoverConfig(seconds=10, steps=2)).recovery.tuning_samples == 1438
    assert teacher_outputs(digits_cnn) is teacher


def test_a_two_second_budget_is_kept_within_a_second(half_channels):
    recovered = recover(half_channels, RecoverConfig(seconds=2))
    assert recovered.recovery.seconds <= 3.0 and recovered.recovery.steps > 10


@pytest.mark.parametrize("method", ["distill", "finetune"])
def test_each_method_beats_no_recovery_on_the_held_out_digits(digits_cnn, half_channels, method):
    recovered = recover(half_channels, RecoverConfig(method, seconds=60, steps=400))  # steps: robust to a busy CPU
    before, after = recovered.recovery.before, _held_out(digits_cnn, export_bytes(recovered))
    assert before == pytest.approx(0.1114, abs=1e-3)  # 40 of 359: at chance
    assert after > 0.9  # 400 steps of 64 of the 1,438 training digits


def test_stop_ends_training_early_and_keeps_the_best_checkpoint(digits_cnn, half_channels):
    points = []
    stop = lambda: len(points) >= 6  # noqa: E731 - the fifth check after the start: about 5 s of 60
    recovered = recover(half_channels, RecoverConfig(seconds=60), on_point=points.append, stop=stop)
    info = recovered.recovery
    assert info.stopped and info.seconds < 40.0 and info.steps < 0.5 * info.check_every * 60
    assert points == info.curve  # the page's live curve saw every point the report keeps
    losses = [validation for _, _, validation, _ in info.curve]
    assert info.best_step == info.curve[int(np.nanargmin(losses))][0]  # the lowest validation loss is kept
    watched = [quality for _, _, _, quality in info.curve[1:-1]]
    assert watched and all(0 <= quality <= 1 for quality in watched)  # held-out accuracy, watched while training
    assert _held_out(digits_cnn, export_bytes(recovered)) > info.before + 0.5


def test_a_gradual_schedule_prunes_while_training_to_the_recipes_exact_zeros(digits_mlp):
    base = _compressed(digits_mlp, Recipe(PruneConfig(0.9)))
    recovered = recover(base, RecoverConfig(seconds=60, steps=800, schedule="gradual", pruning_steps=4))
    info = recovered.recovery
    assert (info.schedule, info.pruning_steps, info.soft) == ("gradual", 4, False)
    for name, values in base.weights.items():  # the same zeros in each layer as the recipe, chosen by training
        assert np.count_nonzero(recovered.weights[name] == 0) == np.count_nonzero(values == 0)
    masks_moved = any(
        not np.array_equal(recovered.weights[name] == 0, values == 0) for name, values in base.weights.items()
    )
    assert masks_moved  # the weights trained before they were pruned decide which go
    assert _held_out(digits_mlp, export_bytes(recovered)) > info.before + 0.3  # from 54.3 %


def test_a_soft_channel_schedule_ends_with_the_recipes_channel_counts(digits_cnn, half_channels):
    recovered = recover(half_channels, RecoverConfig(seconds=60, steps=600, soft=True, pruning_steps=3))
    assert recovered.recovery.soft
    for name, values in half_channels.weights.items():  # removed channels sliced out as the recipe slices them
        assert recovered.weights[name].shape == values.shape
    skeleton = {init.name: tuple(init.dims) for init in half_channels.skeleton.graph.initializer}
    assert {init.name: tuple(init.dims) for init in recovered.skeleton.graph.initializer} == skeleton
    assert _held_out(digits_cnn, export_bytes(recovered)) > recovered.recovery.before + 0.5


def test_the_polynomial_schedule_and_its_masks():
    assert [round(amount_at(step, 4, ramp=True), 4) for step in range(1, 5)] == [0.5781, 0.875, 0.9844, 1.0]
    assert amount_at(1, 4, ramp=False) == 1.0
    values = {"w": np.array([[0.1, -3.0], [0.5, -0.2]], np.float32)}
    schedule = MaskSchedule(steps=2, ramp=True, soft=False, zeros={"w": 2})
    first, _ = schedule.masks(1, values)  # 75 % of the way: round(2 * 0.75) = 2 zeros
    assert first["w"].tolist() == [[False, True], [True, False]]
    with pytest.raises(InvalidSettingError, match="a gradual or soft schedule needs distill or finetune"):
        RecoverConfig("correct", schedule="gradual")


def test_a_users_onnx_with_its_data_trains_in_a_sandbox_child(tmp_path):
    train_x, train_y, test_x, test_y = data.digits_split()
    arrays = tmp_path / "digits.npz"
    np.savez(arrays, image=np.concatenate([train_x, test_x]), labels=np.concatenate([train_y, test_y]))
    path = tmp_path / "digits.onnx"
    path.write_bytes(load_model("digits-cnn").onnx_bytes)
    model = with_data(load_model(str(path)), arrays)
    assert not model.is_sample
    base = _compressed(model, Recipe(PruneConfig(0.5, granularity="channel")))
    points = []  # relayed from the child; the child is told to stop through an Event
    recovered = recover(base, RecoverConfig(seconds=60), on_point=points.append, stop=lambda: len(points) >= 6)
    assert recovered.recovery.stopped and recovered.recovery.steps < 0.5 * recovered.recovery.check_every * 60
    assert recovered.recovery.tuning_samples == model.data.tuning
    assert _held_out(model, export_bytes(recovered)) > recovered.recovery.before + 0.5


def test_recovery_needs_a_tuning_part_apart_from_the_held_out_one(resnet18):
    base = _compressed(resnet18, Recipe(PruneConfig(0.3)))
    with pytest.raises(UnsupportedModelError, match="recovery trains on a tuning part apart from the held-out"):
        recover(base, RecoverConfig(seconds=2))


def test_bad_recovery_settings_are_refused_in_one_line():
    with pytest.raises(InvalidSettingError, match="unknown recovery method 'retrain'; use correct, distill, finetune"):
        RecoverConfig("retrain")
    with pytest.raises(InvalidSettingError, match=r"recovery seconds must be in \(0, 3600\], got 0"):
        RecoverConfig(seconds=0)
    with pytest.raises(InvalidSettingError, match="unknown optimizer 'lbfgs'; use adam, sgd"):
        RecoverConfig(optimizer="lbfgs")


def test_a_run_cut_short_replays_on_the_schedule_it_had_planned(digits_cnn, half_channels):
    # stopped (or out of time) after 30 of its planned steps, its learning rate had decayed over the plan, not over
    # 30 steps: the recipe records both, and the replay trains the very same weights
    calls = iter(range(10**6))
    first = recover(half_channels, RecoverConfig(seconds=30), stop=lambda: next(calls) >= 30)
    info = first.recovery
    assert info.stopped and info.steps == 30 and info.planned_steps > 30
    replay = recovering.replayable(
        Recipe(PruneConfig(0.5, granularity="channel"), recover=RecoverConfig(seconds=30)), info
    )
    assert (replay.recover.steps, replay.recover.schedule_steps) == (30, info.planned_steps)
    second = recover(half_channels, replay.recover)
    assert second.recovery.steps == 30 and not second.recovery.stopped
    for name, values in first.weights.items():
        np.testing.assert_array_equal(second.weights[name], values)
    with pytest.raises(InvalidSettingError, match="schedule_steps must be a whole number no smaller than steps"):
        RecoverConfig(steps=30, schedule_steps=20)


def test_steps_given_over_a_replayed_recipe_drop_its_recorded_plan():
    from core.cli import _parser, _recover_settings

    recorded = RecoverConfig(seconds=16, steps=30, schedule_steps=120)
    args = _parser().parse_args(["compress", "digits-cnn", "--out", "x.onnx", "--recover-steps", "300"])
    assert _recover_settings(args, recorded) == replace(recorded, steps=300, schedule_steps=None)
    args = _parser().parse_args(["compress", "digits-cnn", "--out", "x.onnx", "--recover-seconds", "20"])
    assert _recover_settings(args, recorded) == replace(recorded, seconds=20.0)  # the same steps: the same plan


def test_the_cli_recovers_records_the_settings_and_reproduces_them(tmp_path, capsys):
    from core.cli import main

    recipe, report = tmp_path / "r.json", tmp_path / "report.json"
    arguments = ["compress", "digits-cnn", "--granularity", "channel", "--prune", "0.5", "--no-latency"]
    assert main([*arguments, "--recover", "distill", "--recover-seconds", "8", "--out", str(tmp_path / "a.onnx"),
                 "--recipe", str(recipe), "--report", str(report)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "recovery: distill, " in printed and "accuracy 11.1% -> " in printed
    saved = json.loads(recipe.read_text())["recover"]
    first = json.loads(report.read_text())
    # the steps it trained are recorded, so the recipe trains them again; the time limit doubled to get there
    assert saved == {"method": "distill", "seconds": 16.0, "optimizer": "adam", "lr": None, "seed": 0,
                     "steps": first["recovery"]["steps"], "schedule": "oneshot", "pruning_steps": 10, "soft": False,
                     "batch": 64, "check_every": first["recovery"]["check_every"],
                     "schedule_steps": planned if (planned := first["recovery"]["planned_steps"]) > saved["steps"] else None}  # fmt: skip
    assert first["recovery"]["before"] == pytest.approx(0.1114, abs=1e-3) and first["accuracy"]["compressed"] > 0.5
    again = tmp_path / "again.json"
    assert main(["compress", "digits-cnn", "--apply-recipe", str(recipe), "--out", str(tmp_path / "b.onnx"),
                 "--report", str(again), "--no-latency"]) == 0  # fmt: skip
    second = json.loads(again.read_text())
    assert second["recovery"]["method"] == "distill"
    assert second["recovery"]["steps"] == first["recovery"]["steps"]
    assert second["accuracy"]["compressed"] == first["accuracy"]["compressed"]  # the same steps: the same weights
    capsys.readouterr()
    assert main(["compress", "digits-cnn", "--recover-seconds", "5", "--out", str(tmp_path / "c.onnx")]) == 2
    assert capsys.readouterr().err.strip() == "error: --recover-seconds needs --recover METHOD"


def test_correct_shifts_biases_only_and_wins_back_quantizations_offset(digits_cnn):
    base = _compressed(digits_cnn, Recipe(quant=QuantConfig(2)))  # 2-bit weights: 9.5 % held out
    corrected = recover(base, RecoverConfig("correct"))
    assert corrected.recovery.before == pytest.approx(0.0947, abs=1e-3)
    assert _held_out(digits_cnn, export_bytes(corrected)) > 0.7  # no training: one pass per layer
    for name, weight in base.quantized.items():  # the weights and their codes are untouched
        assert np.array_equal(corrected.quantized[name].values, weight.values)
        assert np.array_equal(corrected.weights[name], base.weights[name])
    from onnx import numpy_helper

    before = {init.name: numpy_helper.to_array(init) for init in base.skeleton.graph.initializer}
    after = {init.name: numpy_helper.to_array(init) for init in corrected.skeleton.graph.initializer}
    assert after.keys() == before.keys()  # no initializer added or dropped
    changed = [name for name in before if not np.array_equal(before[name], after[name])]
    assert len(changed) == corrected.recovery.steps == 7  # the biases whose shift brought the outputs closer


def test_matmul_weights_train_too(tmp_path):
    """onnx2torch keeps a MatMul's constant weight as a buffer; it is trained like a Conv's (a Paddle classifier's
    head is one: it was refused before)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    first, second = rng.standard_normal((8, 32)).astype(np.float32), rng.standard_normal((32, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")],
    )
    path, arrays = tmp_path / "mlp.onnx", tmp_path / "x.npz"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    np.savez(arrays, x=rng.standard_normal((500, 8)).astype(np.float32))
    model = with_data(load_model(str(path)), arrays)
    base = _compressed(model, Recipe(PruneConfig(0.7)))
    recovered = recover(base, RecoverConfig(seconds=4))
    for name in ("w1", "w2"):
        assert np.all(recovered.weights[name][base.weights[name] == 0] == 0)
        assert not np.array_equal(recovered.weights[name], base.weights[name])
    assert _held_out(model, export_bytes(recovered)) > recovered.recovery.before  # cosine to the original


def test_what_torchs_exporter_writes_into_transformers_converts_and_runs_as_onnx_runtime_runs_it():
    """Clip with an empty max input, Flatten at the input's rank and GreaterOrEqual-16, as in minilm's graph: the
    converted module computes what ONNX Runtime computes, and its MatMul weight trains."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from core.compression.training import trainable_module
    from core.onnx.runtime import create_session, run

    weight = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Clip", ["x", "low", ""], ["clipped"]),
        helper.make_node("MatMul", ["clipped", "w"], ["y"]),
        helper.make_node("GreaterOrEqual", ["y", "low"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["mask"], ["flat"], axis=2),  # [n, 3] at axis 2: [n * 3, 1]
    ]
    graph = helper.make_graph(
        nodes, "exported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["m", 1])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array(0.1, np.float32), "low")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    expected = run(create_session(data), {"x": x})
    net, names, trainable = trainable_module(data)
    import torch

    with torch.no_grad():
        y, flat = net(torch.from_numpy(x))
    assert names == ["x"] and set(trainable) == {"w"}
    np.testing.assert_allclose(y.numpy(), expected[0], rtol=1e-5, atol=1e-6)
    assert flat.shape == (15, 1) and np.array_equal(flat.numpy(), expected[1])
