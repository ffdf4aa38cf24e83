"""The user's own data: an .npz split by a seed into a tuning part (what tunes reads it) and a held-out part
(every accuracy shown), checked before anything runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import InvalidSettingError, QuantConfig, Recipe, compress, export_bytes, load_model
from core.data.datasets import with_data
from core.measure.summaries import build_report
from core.onnx.runtime import create_session, run
from sample_models import data


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """The 359 held-out digits digits-cnn is scored on, as a user would hand them over."""
    _, _, test_x, test_y = data.digits_split()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, image=test_x, labels=test_y)
    return path


def test_an_npz_is_split_by_a_seed_and_scored_on_the_held_out_part(digits_cnn, digits_npz):
    model = with_data(digits_cnn, digits_npz)
    assert (model.data.tuning, model.data.held_out) == (287, 72)
    assert model.tuning_part(1000)[0].inputs["image"].shape[0] == 287
    _, _, test_x, test_y = data.digits_split()
    order = np.random.default_rng(0).permutation(359)
    held_out = order[287:]
    np.testing.assert_array_equal(model.eval_set.inputs["image"], test_x[held_out])
    logits = run(create_session(digits_cnn.onnx_bytes), {"image": test_x[held_out]})[0]
    expected = float(np.mean(logits.argmax(axis=1) == test_y[held_out]))
    compressed = compress(model, Recipe(quant=QuantConfig(8, "static")))
    report = build_report(compressed, export_bytes(compressed))
    assert report.accuracy.original == expected  # exactly the held-out 72, computed here independently
    assert report.quantization.calibration == "64 inputs of the tuning part, apart from the held-out evaluation set"
    assert report.model.data["held_out"] == 72 and report.model.eval_inputs == "data"
    assert (
        "Data: digits.npz (sha256 " in report.notes[-1]
        and "287 tuning and 72 held-out samples, a seeded 80%/20% split (seed 0)" in report.notes[-1]
    )


def test_the_cli_reports_accuracy_on_the_held_out_part(digits_npz, tmp_path, capsys):
    from core.cli import main

    model_path, report_path = tmp_path / "digits.onnx", tmp_path / "r.json"
    model_path.write_bytes(load_model("digits-cnn").onnx_bytes)
    arguments = ["compress", str(model_path), "--data", str(digits_npz), "--split", "0.5"]
    arguments += ["--prune", "0.3", "--bits", "8", "--out", str(tmp_path / "o.onnx"), "--report", str(report_path)]
    assert main([*arguments, "--no-latency"]) == 0
    report = json.loads(report_path.read_text())
    assert report["model"]["data"]["tuning"] == 180 and report["model"]["data"]["held_out"] == 179
    assert report["accuracy"]["samples"] == 179 and report["accuracy"]["original"] > 0.98


@pytest.mark.parametrize(
    ("arrays", "split", "reason"),
    [
        ({"pixels": np.zeros((4, 1, 8, 8), np.float32)}, 0.8, "input names do not match the model (missing image; unknown pixels); it takes image (and optional labels or targets)"),
        ({"image": np.zeros((4, 8, 8), np.float32)}, 0.8, "input 'image' has shape 4x8x8; the model expects ?x1x8x8"),
        ({"image": np.zeros((4, 1, 8, 8), np.float32), "labels": np.array([0, 1, 2])}, 0.8, "3 labels for 4 samples"),
        ({"image": np.zeros((4, 1, 8, 8), np.int64)}, 0.8, "input 'image' holds int64; the model expects float32"),
        ({"image": np.zeros((4, 1, 8, 8), np.float32), "labels": np.zeros(4, np.int64), "targets": np.zeros((4, 10))}, 0.8, "give labels or targets, not both"),
        ({"image": np.zeros((4, 1, 8, 8), np.float32), "labels": np.array([0, 1, 2, 10])}, 0.5, "labels go up to 10; the model's first output scores 10 classes"),
        ({"image": np.zeros((4, 1, 8, 8), np.float32), "labels": np.array([0.0, 1, 2, 3])}, 0.8, "labels must be one whole-number class id per sample"),
        ({"image": np.zeros((1, 1, 8, 8), np.float32)}, 0.8, "1 samples cannot be split 80%/20% into a tuning and a held-out part"),
    ],
)  # fmt: skip
def test_bad_data_is_refused_in_one_line(digits_cnn, tmp_path, arrays, split, reason):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(InvalidSettingError) as caught:
        with_data(digits_cnn, path, split)
    assert caught.value.reason == reason


def test_a_bad_split_and_an_unknown_format_are_refused(digits_cnn, digits_npz, tmp_path, capsys):
    from core.cli import main

    assert main(["inspect", "digits-cnn", "--data", str(digits_npz), "--split", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --split: the tuning fraction must be between 0 and 1, not 1.5"
    csv = tmp_path / "data.csv"
    csv.write_text("1,2,3\n")
    assert main(["inspect", "digits-cnn", "--data", str(csv)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {csv}: unknown data format .csv; use an .npz of arrays, a folder or .zip of images (ImageFolder layout), or a .txt of lines"
    )
