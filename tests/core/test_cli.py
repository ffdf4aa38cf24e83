from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from core.cli import main
from core.onnx.runtime import create_session, run
from tests.graphs import relu_only_model

REPO = Path(__file__).resolve().parents[2]


def _fail(argv: list[str], capsys) -> str:
    """Run the CLI expecting a user error: exit 2 and exactly one line on stderr, no traceback."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_compress_writes_a_runnable_model_a_report_and_a_recipe(tmp_path, capsys, digits_cnn):
    out, report_path, recipe_path = tmp_path / "x.onnx", tmp_path / "r.json", tmp_path / "recipe.json"
    argv = ["compress", "digits-cnn", "--prune", "0.5", "--bits", "8", "--out", str(out)]
    argv += ["--report", str(report_path), "--recipe", str(recipe_path), "--budget", "0.2"]
    assert main(argv) == 0
    assert "accuracy 99.72% ->" in capsys.readouterr().out

    report = json.loads(report_path.read_text())
    assert {"model", "settings", "layers", "size_bytes", "latency_ms", "fidelity", "accuracy"} <= report.keys()
    for which in ("original", "compressed"):
        assert {"median", "p90", "runs"} <= report["latency_ms"][which].keys()
    assert report["latency_ms"]["original"]["runs"] == report["latency_ms"]["compressed"]["runs"] >= 15
    assert report["settings"]["prune"]["amount"] == 0.5 and report["settings"]["quant"]["weight_bits"] == 8
    assert report["totals"]["zeros"] == 18_920  # exactly half of 37,840 prunable weights
    assert report["accuracy"]["original"] >= 0.97
    assert report["size_bytes"]["compressed"]["raw"] == out.stat().st_size

    logits = run(create_session(out.read_bytes()), digits_cnn.eval_set.inputs)[0]
    accuracy = float((logits.argmax(1) == digits_cnn.eval_set.labels).mean())
    assert accuracy == pytest.approx(report["accuracy"]["compressed"])

    again = tmp_path / "again.onnx"
    assert (
        main(["compress", "digits-cnn", "--apply-recipe", str(recipe_path), "--out", str(again), "--no-latency"]) == 0
    )
    assert again.read_bytes() == out.read_bytes()


def test_inspect_lists_layers_with_shapes(capsys):
    assert main(["inspect", "digits-mlp", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(row["op_type"], row["shape"]) for row in listed["layers"]] == [
        ("Gemm", [128, 64]),
        ("Gemm", [64, 128]),
        ("Gemm", [10, 64]),
    ]
    assert listed["prunable_params"] == 128 * 64 + 64 * 128 + 10 * 64


def test_bench_times_two_models_side_by_side(capsys):
    assert main(["bench", "digits-mlp", "digits-cnn", "--budget", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "latency digits-mlp: median" in out and "latency digits-cnn: median" in out and "speed-up" in out


def _bad_files(tmp_path: Path, digits_cnn) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.onnx"
    text.write_text("meeting notes, not a model\n" * 10)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(digits_cnn.onnx_bytes[:5000])
    relu = tmp_path / "relu.onnx"
    relu.write_bytes(relu_only_model().SerializeToString())
    return {
        "missing": (tmp_path / "missing.onnx", "no such file"),
        "text": (text, "not an ONNX model"),
        "truncated": (truncated, "not an ONNX model"),
        "no weights": (relu, "no prunable weights"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "no weights"])
def test_bad_model_files_exit_2_naming_the_file_and_leave_nothing(case, tmp_path, capsys, digits_cnn):
    path, reason = _bad_files(tmp_path, digits_cnn)[case]
    out = tmp_path / "out.onnx"
    line = _fail(["compress", str(path), "--out", str(out), "--report", str(tmp_path / "r.json")], capsys)
    assert line.startswith(f"error: {path}: {reason}")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out", "r.json"))) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prune", "1.0"], "error: prune amount must be in [0, 0.99], got 1.0"),
        (["--prune", "-0.1"], "error: prune amount must be in [0, 0.99], got -0.1"),
        (["--bits", "1"], "error: weight bits must be 2-8, or 32 for off; got 1"),
        (["--bits", "16"], "error: weight bits must be 2-8, or 32 for off; got 16"),
        (["--criterion", "l3"], "error: argument --criterion: invalid choice: 'l3' (choose from "),
    ],
)
def test_out_of_range_settings_exit_2(flags, message, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert _fail(["compress", "digits-cnn", *flags, "--out", str(out)], capsys).startswith(message)
    assert not out.exists()


def test_unknown_sample_lists_the_known_ones(tmp_path, capsys):
    line = _fail(["compress", "resnet81", "--out", str(tmp_path / "o.onnx")], capsys)
    assert line == "error: resnet81: unknown sample model; known samples: digits-cnn, digits-mlp, minilm, resnet18"


def test_a_recipe_for_another_model_is_refused(tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    assert (
        main(["compress", "digits-mlp", "--out", str(tmp_path / "a.onnx"), "--recipe", str(recipe), "--no-latency"])
        == 0
    )
    capsys.readouterr()
    line = _fail(["compress", "digits-cnn", "--apply-recipe", str(recipe), "--out", str(tmp_path / "b.onnx")], capsys)
    assert line == f"error: {recipe}: the recipe was made for a different model (digits-mlp)"
    assert not (tmp_path / "b.onnx").exists()


def test_the_module_entry_point_exits_2_without_a_traceback(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    result = subprocess.run(
        [sys.executable, "-m", "core", "compress", str(text), "--out", str(tmp_path / "o.onnx")],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: {text}: not an ONNX model (the protobuf does not parse; corrupt or truncated?)"
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "o.onnx").exists()


def test_exported_onnx_passes_the_full_checker(tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["compress", "digits-mlp", "--prune", "0.3", "--bits", "4", "--out", str(out), "--no-latency"]) == 0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    stored = {init.name: init.data_type for init in onnx.load(str(out)).graph.initializer}
    assert sum(dtype == onnx.TensorProto.INT8 for dtype in stored.values()) == 3 + 3  # codes and zero points


def test_channel_pruning_of_an_onnx_file_with_no_pytorch_source(tmp_path, capsys):
    from tests.graphs import structured_cnn

    model = tmp_path / "cnn.onnx"
    model.write_bytes(structured_cnn().SerializeToString())
    out, report_path = tmp_path / "small.onnx", tmp_path / "r.json"
    argv = ["compress", str(model), "--granularity", "channel", "--prune", "0.5", "--out", str(out)]
    assert main([*argv, "--report", str(report_path), "--budget", "0.2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["settings"]["prune"]["granularity"] == "channel" and report["settings"]["prune"]["scope"] == "layer"
    assert f"MACs per sample {report['totals']['macs']:,} -> {report['totals']['macs_after']:,}" in printed
    assert report["totals"]["macs_after"] < 0.5 * report["totals"]["macs"]
    assert "left whole: fc: is part of the graph output 'y'" in printed
    assert run(create_session(out.read_bytes()), {"x": np.zeros((2, 3, 8, 8), np.float32)})[0].shape == (2, 4)


def test_a_criterion_that_does_not_fit_the_granularity_exits_2(tmp_path, capsys):
    line = _fail(
        ["compress", "digits-cnn", "--criterion", "l2", "--prune", "0.5", "--out", str(tmp_path / "o.onnx")], capsys
    )
    assert line == "error: criterion 'l2' does not apply to unstructured pruning; choose from l1, random"
