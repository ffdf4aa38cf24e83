"""Large models, at a small scale: the limits that decide "large" are lowered so a 3-layer MLP takes the same path
as a multi-GB one (weights memory-mapped from external data, exact threshold pruning, export with external data).
`bench/large_model.py` measures the real thing: peak memory on a generated 537 M-parameter MLP."""

from __future__ import annotations

import zipfile

import numpy as np
import onnx
import pytest

import core.compression.export
import core.compression.granularities
import core.compression.thresholds
import core.load.onnx_file
import core.measure.summaries
from bench.large_model import generate_mlp
from core import (
    PruneConfig,
    QuantConfig,
    Recipe,
    UnsupportedModelError,
    build_report,
    compress,
    load_model,
    prepare_index,
)
from core.cli import main
from core.compression.export import export_bytes, export_model
from core.compression.pruning import PruneIndex, prune
from core.compression.recipe import LayerOverride
from core.compression.thresholds import ThresholdIndex
from core.onnx.runtime import create_session, run

WIDTH, LAYERS = 64, 3


@pytest.fixture
def mlp_file(tmp_path):
    return generate_mlp(tmp_path / "mlp", WIDTH, LAYERS)


@pytest.fixture
def on_disk(monkeypatch):
    """Every model with external data counts as large."""
    monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 0)


def _outputs(export, feeds):
    return run(create_session(export), feeds)[0]


@pytest.mark.parametrize("criterion", ["l1", "random"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_threshold_pruning_zeroes_exactly_the_weights_ranks_would(criterion, scope, monkeypatch):
    monkeypatch.setattr(core.compression.thresholds, "CHUNK", 97)  # many chunks per layer, ties across chunk borders
    rng = np.random.default_rng(1)
    weights = {
        "a": rng.standard_normal((50, 30)).astype(np.float32),
        "b": np.round(rng.standard_normal((40, 7, 3)), 1).astype(np.float32),  # many ties
        "c": np.zeros((5, 5), np.float32),
    }
    ranked = PruneIndex.prepare(weights, criterion, scope, 3)
    threshold = ThresholdIndex.prepare(weights, criterion, scope, 3)
    for amount in (0.0, 0.1, 0.33, 0.5, 0.77, 1.0):
        expected = prune(weights, ranked, amount)
        cuts = threshold.cuts(amount)
        for name in weights:
            np.testing.assert_array_equal(threshold.pruned(name, cuts[name]), expected[name])
    if criterion == "l1":  # the zeros already there are the smallest magnitudes: pruned first, counted once
        cuts = threshold.cuts(0.33)
        zeros = {name: int(np.sum(threshold.pruned(name, cuts[name]) == 0)) for name in weights}
        if scope == "global":
            assert sum(zeros.values()) == round(0.33 * sum(values.size for values in weights.values()))
        else:
            assert zeros["a"] == round(0.33 * 1500) and zeros["c"] == 25


def test_a_large_model_keeps_its_weights_on_disk_and_compresses_like_one_in_memory(mlp_file, monkeypatch):
    in_memory = load_model(mlp_file)
    monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 0)
    large = load_model(mlp_file)
    assert in_memory.external_data_folder is None and large.external_data_folder == mlp_file.parent
    weight = large.weights["fc0.weight"]
    assert isinstance(weight, np.memmap) and not weight.flags.writeable and weight.shape == (WIDTH, WIDTH)
    np.testing.assert_array_equal(large.reference_outputs[0], in_memory.reference_outputs[0])
    assert large.macs == in_memory.macs

    recipe = Recipe(PruneConfig(0.5), QuantConfig(8))
    small_result, large_result = compress(in_memory, recipe), compress(large, recipe)
    report = build_report(large_result, export_bytes(large_result))
    assert report.totals["zeros"] == round(0.5 * large.prunable_params)
    feeds = in_memory.eval_set.inputs
    np.testing.assert_array_equal(
        _outputs(export_bytes(large_result), feeds), _outputs(export_bytes(small_result), feeds)
    )
    assert (
        report.histograms["all"].compressed
        == build_report(small_result, export_bytes(small_result)).histograms["all"].compressed
    )


def test_an_export_over_the_single_file_limit_is_written_with_external_data(mlp_file, on_disk, tmp_path, monkeypatch):
    model = load_model(mlp_file)
    compressed = compress(model, Recipe(PruneConfig(0.5)))
    expected = _outputs(export_bytes(compressed), model.eval_set.inputs)
    expected_error = build_report(compressed, export_bytes(compressed)).fidelity.max_abs_error
    monkeypatch.setattr(core.compression.export, "SINGLE_FILE_LIMIT", 1000)
    with pytest.raises(UnsupportedModelError, match="the export is over 2 GB, more than one .onnx file holds"):
        export_bytes(compressed)  # one line, not protobuf's own error
    export = export_model(compressed, tmp_path / "export")
    assert export == tmp_path / "export" / "model.onnx"
    assert sorted(path.name for path in export.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert export.stat().st_size < 2000 and (export.parent / "model.onnx.data").stat().st_size >= 3 * WIDTH * WIDTH * 4
    np.testing.assert_array_equal(_outputs(export, model.eval_set.inputs), expected)
    report = build_report(compressed, export)
    assert report.size_bytes["compressed"].raw == sum(path.stat().st_size for path in export.parent.iterdir())
    assert report.fidelity.max_abs_error == expected_error


@pytest.mark.parametrize("target", ["pruned.onnx", "pruned.zip"])
def test_the_cli_writes_a_large_export_beside_its_data_or_as_a_zip(target, mlp_file, on_disk, tmp_path, monkeypatch):
    monkeypatch.setattr(core.compression.export, "SINGLE_FILE_LIMIT", 1000)
    monkeypatch.setattr(core.measure.summaries, "GZIP_UP_TO", 1000)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["compress", str(mlp_file), "--prune", "0.5", "--no-latency", "--out", str(out / target)]
    assert main(argv) == 0
    if target.endswith(".zip"):
        assert sorted(path.name for path in out.iterdir()) == ["pruned.zip"]
        with zipfile.ZipFile(out / target) as archive:
            assert archive.namelist() == ["model.onnx", "model.onnx.data"]
        reloaded = load_model(out / target, workdir=tmp_path / "work")  # a large export loads back like any upload
    else:
        assert sorted(path.name for path in out.iterdir()) == ["pruned.onnx", "pruned.onnx.data"]
        proto = onnx.load(str(out / target), load_external_data=False)
        locations = {
            entry.value for init in proto.graph.initializer for entry in init.external_data if entry.key == "location"
        }
        assert locations == {"pruned.onnx.data"}
        reloaded = load_model(out / target)
    zeros = sum(int(np.sum(np.asarray(reloaded.weights[layer.name]) == 0)) for layer in reloaded.layers)
    assert zeros == round(0.5 * LAYERS * WIDTH * WIDTH)


def test_the_cli_says_the_gzip_size_of_a_large_model_was_not_measured(mlp_file, on_disk, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(core.measure.summaries, "GZIP_UP_TO", 1000)
    assert main(["compress", str(mlp_file), "--bits", "8", "--no-latency", "--out", str(tmp_path / "q.onnx")]) == 0
    assert "gzip not measured (over 1 GiB) -> not measured (over 1 GiB)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "work"),
    [
        (["--prune", "0.5", "--granularity", "block"], "block pruning"),
        (["--bits", "8", "--activations", "dynamic"], "dynamic int8 activations"),
    ],
)
def test_work_that_needs_the_weights_in_memory_is_refused_on_a_large_model(
    flags, work, mlp_file, on_disk, tmp_path, capsys
):
    out = tmp_path / "x.onnx"
    assert main(["compress", str(mlp_file), *flags, "--no-latency", "--out", str(out)]) == 2
    notice, error = capsys.readouterr().err.strip().splitlines()
    assert notice.startswith("0.00 GB of weights stay on disk, memory-mapped from ")
    assert error.startswith(f"error: {mlp_file}: {work} needs the weights in memory; this model keeps 0.0 GB")
    assert "(pruning, weight-only quantization, scans and sweeps run on it)" in error
    assert not out.exists()


def test_the_sensitivity_scan_and_a_sweep_of_a_large_model_match_the_model_in_memory(mlp_file, monkeypatch):
    from core.explore.sensitivity import scan
    from core.explore.sweep import sweep

    in_memory = load_model(mlp_file)
    expected_scan = scan(in_memory, (0.5,), (4,))
    expected_sweep = sweep(in_memory, [0.0, 0.5], [32, 8], budget_s=0.05)
    monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 0)
    monkeypatch.setattr(
        core.compression.export, "SINGLE_FILE_LIMIT", 1000
    )  # the float points export with external data
    large = load_model(mlp_file)
    assert scan(large, (0.5,), (4,)).drops == expected_scan.drops
    points = sweep(large, [0.0, 0.5], [32, 8], budget_s=0.05)
    assert [(p.amount, p.bits, p.quality) for p in points] == [(p.amount, p.bits, p.quality) for p in expected_sweep]
    float_sizes = [(p.size_bytes, q.size_bytes) for p, q in zip(points, expected_sweep, strict=True) if p.bits == 32]
    assert all(large > small for large, small in float_sizes)  # written with external data, 64 KiB-aligned


def test_a_model_too_large_for_ranks_prunes_the_same_weights_by_thresholds(digits_cnn, monkeypatch):
    nodes = [layer.node for layer in digits_cnn.layers]
    recipe = Recipe(
        PruneConfig(0.5),
        QuantConfig(4),
        overrides=(LayerOverride(nodes[0], skip=True), LayerOverride(nodes[-1], amount=0.2, bits=8)),
    )
    ranked = compress(digits_cnn, recipe)
    monkeypatch.setattr(core.compression.granularities, "RANKS_UP_TO", 0)
    thresholded = compress(digits_cnn, recipe)
    assert isinstance(prepare_index(digits_cnn, recipe), ThresholdIndex)
    for layer in digits_cnn.layers:
        np.testing.assert_array_equal(thresholded.weights[layer.name], ranked.weights[layer.name])
    last = digits_cnn.layers[-1]
    assert int(np.sum(thresholded.quantized[last.name].values == 0)) == round(0.2 * last.params)


def test_a_large_single_file_model_moves_its_weights_to_the_cache_once(tmp_path, monkeypatch):
    single = tmp_path / "single.onnx"
    onnx.save_model(onnx.load(str(generate_mlp(tmp_path / "mlp", WIDTH, LAYERS))), single)  # weights inline
    in_memory = load_model(single)
    monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 1000)
    large = load_model(single)
    folder = large.external_data_folder
    assert folder == core.load.onnx_file.cache_dir() / "weights" / f"v1-{in_memory.sha256}"
    assert large.sha256 == in_memory.sha256  # the user's file, not our copy of its weights
    assert isinstance(large.weights["fc1.weight"], np.memmap)
    assert len(large.onnx_bytes) < 10_000 < len(in_memory.onnx_bytes)
    np.testing.assert_array_equal(large.reference_outputs[0], in_memory.reference_outputs[0])
    written = (folder / "weights.bin").stat().st_mtime_ns
    np.testing.assert_array_equal(load_model(single).weights["fc2.weight"], in_memory.weights["fc2.weight"])
    assert (folder / "weights.bin").stat().st_mtime_ns == written  # reused, not written again


def test_channel_pruning_of_a_large_model_matches_the_same_model_in_memory(mlp_file, monkeypatch):
    recipe = Recipe(PruneConfig(0.5, granularity="channel"), QuantConfig(8))
    in_memory = compress(load_model(mlp_file), recipe)
    monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 0)
    large_model = load_model(mlp_file)
    large = compress(large_model, recipe)
    assert [layer.shape for layer in large.layers] == [(32, 64), (32, 32), (64, 32)]  # the output layer keeps 64
    assert large.macs == in_memory.macs and sum(large.macs.values()) == 32 * 64 + 32 * 32 + 64 * 32
    feeds = large_model.eval_set.inputs
    np.testing.assert_array_equal(_outputs(export_bytes(large), feeds), _outputs(export_bytes(in_memory), feeds))


def test_the_in_memory_limit_can_be_lowered_from_the_environment(mlp_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SQUEEZELAB_IN_MEMORY_LIMIT", "0")
    assert load_model(mlp_file).external_data_folder == mlp_file.parent
    monkeypatch.setenv("SQUEEZELAB_IN_MEMORY_LIMIT", "1GB")
    assert main(["compress", str(mlp_file), "--no-latency", "--out", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip() == "error: SQUEEZELAB_IN_MEMORY_LIMIT: must be a whole number of bytes"
    assert not (tmp_path / "x.onnx").exists()


def test_only_prunable_weights_stay_external_so_no_location_is_resolved_elsewhere(mlp_file, on_disk, tmp_path):
    """A Constant whose tensor is external data must be read from the model's folder at load, never later from
    wherever a session happens to run."""
    proto = onnx.load(str(mlp_file), load_external_data=False)
    shift = np.arange(WIDTH, dtype=np.float32)
    with open(mlp_file.parent / "weights.bin", "ab") as data:
        offset = data.tell()
        data.write(shift.tobytes())
    value = onnx.TensorProto(name="shift", data_type=onnx.TensorProto.FLOAT, dims=[WIDTH])
    value.data_location = onnx.TensorProto.EXTERNAL
    for key, text in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(shift.nbytes))):
        value.external_data.add(key=key, value=text)
    last = proto.graph.output[0].name
    proto.graph.node.extend(
        [
            onnx.helper.make_node("Constant", [], ["shift"], value=value),
            onnx.helper.make_node("Add", [last, "shift"], ["shifted"]),
        ]
    )
    proto.graph.output[0].name = "shifted"
    onnx.save_model(proto, mlp_file)
    model = load_model(mlp_file)
    external = [
        tensor.name
        for tensor in core.load.onnx_file.all_tensors(model.proto)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    ]
    assert sorted(external) == [f"fc{index}.weight" for index in range(LAYERS)]
    assert model.folded_nodes == 1  # the Constant became an initializer, read from the model's folder
    plain = onnx.load(str(mlp_file))  # everything read into memory by onnx itself
    expected = run(create_session(plain.SerializeToString()), model.eval_set.inputs)[0]
    np.testing.assert_array_equal(model.reference_outputs[0], expected)


def test_a_large_single_file_with_a_short_tensor_is_refused_in_one_line_and_leaves_no_cache(tmp_path, monkeypatch):
    proto = onnx.load(str(generate_mlp(tmp_path / "mlp", WIDTH, LAYERS)))
    weight = next(init for init in proto.graph.initializer if init.name == "fc1.weight")
    weight.ClearField("raw_data")
    weight.float_data.extend([1.0, 2.0, 3.0])  # declares 64 x 64
    broken = tmp_path / "broken.onnx"
    onnx.save_model(proto, broken)
    monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 1000)
    with pytest.raises(core.load.onnx_file.ModelLoadError) as caught:
        load_model(broken)
    assert str(caught.value) == f"{broken}: tensor 'fc1.weight' holds a different number of values than it declares"
    assert not list((core.load.onnx_file.cache_dir() / "weights").glob(".v1-*"))  # no staging folder left behind


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("folder", "is a folder; name the file to write"),
        ("x.onnx.data", "ends in .data, the name given to an export's external data; use .onnx"),
    ],
)
def test_an_output_that_would_clash_with_an_export_is_refused_before_any_work(name, reason, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert main(["compress", "digits-mlp", "--no-latency", "--out", str(tmp_path / name)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / name}: {reason}"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder"]


def test_channel_pruning_that_keeps_more_than_a_protobuf_holds_is_refused(mlp_file, on_disk, monkeypatch):
    monkeypatch.setattr(core.compression.granularities, "PROTOBUF_LIMIT", 1000)
    with pytest.raises(UnsupportedModelError) as caught:
        compress(load_model(mlp_file), Recipe(PruneConfig(0.1, granularity="channel")))
    assert caught.value.reason.startswith("10% of the channels keeps 0.0 GB of weights, more than one ONNX protobuf")


def test_a_sweep_refuses_block_pruning_of_a_large_model_before_any_point(mlp_file, on_disk):
    from core.explore.sweep import sweep

    finished = []
    with pytest.raises(UnsupportedModelError, match="block pruning needs the weights in memory"):
        sweep(load_model(mlp_file), [0.0, 0.5], [32], ("unstructured", "block"), on_point=finished.append)
    assert finished == []


def test_a_model_whose_inline_and_external_weights_together_are_large_is_not_read_into_one_protobuf(
    tmp_path, monkeypatch
):
    """Inline weights plus a little external data: reading the data in could outgrow a protobuf, so it stays out."""
    folder = tmp_path / "mixed"
    generated = generate_mlp(tmp_path / "mlp", WIDTH, LAYERS)
    folder.mkdir()
    onnx.save_model(
        onnx.load(str(generated)), folder / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0
    )
    mixed = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for tensor in mixed.graph.initializer:
        if tensor.name.endswith(".weight"):  # the weights back inline, the biases left in w.bin
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    onnx.save_model(mixed, folder / "m.onnx")
    monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 1000)  # above the 768 bytes of biases, below the file
    model = load_model(folder / "m.onnx")
    assert model.external_data_folder == folder and not isinstance(model.weights["fc0.weight"], np.memmap)
    expected = run(create_session(onnx.load(str(generated)).SerializeToString()), model.eval_set.inputs)[0]
    np.testing.assert_array_equal(model.reference_outputs[0], expected)
