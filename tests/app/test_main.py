from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from core import PruneConfig, QuantConfig, Recipe, SqueezeError, compress, export_bytes
from core.onnx.runtime import create_session, run
from tests.graphs import conv_gemm_model, pooled_detector

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


class Downloads(dict):
    """File name -> bytes; `on_click`: the files made only when their button is clicked."""

    def __init__(self) -> None:
        super().__init__()
        self.on_click: set[str] = set()


@pytest.fixture
def downloads(monkeypatch) -> Downloads:
    """What the page offers for download, by file name: captured where Streamlit stores it. A file made when its
    button is clicked (a callable) is made here as a click would."""
    served = Downloads()
    original = MemoryMediaFileStorage.load_and_get_id
    deferred = MediaFileManager.add_deferred

    def capture(self, path_or_data, mimetype, kind, filename=None):
        if filename:
            served[filename] = path_or_data if isinstance(path_or_data, bytes) else path_or_data.encode()
        return original(self, path_or_data, mimetype, kind, filename)

    def capture_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        if file_name:
            data = data_callable()
            served[file_name] = data if isinstance(data, bytes) else data.encode()
            served.on_click.add(file_name)
        return deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", capture)
    monkeypatch.setattr(MediaFileManager, "add_deferred", capture_deferred)
    return served


def _app() -> AppTest:
    app = AppTest.from_file(MAIN, default_timeout=180)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _tables(app: AppTest) -> list:
    """The read-only tables (the overrides editor is a data editor, listed among dataframes too)."""
    return [table for table in app.dataframe if not (table.key or "").startswith("overrides_")]


def _model_uploader(app: AppTest):
    """The model uploader: its key changes after each upload, which empties it."""
    return next(uploader for uploader in app.file_uploader if uploader.key.startswith("upload:"))


def _metrics(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def test_the_page_starts_on_digits_cnn_with_every_view(downloads):
    app = _app()
    assert app.selectbox(key="model_choice").value.startswith("digits-cnn")
    assert _metrics(app) == {
        "Size on disk": "0.16 MB",
        "Non-zero weights": "37,840",
        "MACs per sample": "829 k",
        "Accuracy": "99.7%",
        "Median latency": "—",
    }
    titles = [chart.proto.spec for chart in app.get("plotly_chart")]
    assert len(titles) == 2 and "Per-layer sparsity" in titles[0] and "Weights of all layers" in titles[1]
    assert len(_tables(app)) == 1 and _tables(app)[0].value.shape == (9, 11)  # no layer left whole: no column for why
    # the browser fetches a drawn download's bytes at once, and the server gzips them (resnet18's 45 MB took longer
    # than the rest of a move): the large files are made when their button is clicked, not on each move
    assert downloads.on_click == {"digits-cnn-squeezed.onnx", "digits-cnn-report.json", "digits-cnn-report.html"}
    assert set(downloads) == downloads.on_click | {"digits-cnn-recipe.json"}
    assert "Download report.html" in [button.label for button in app.get("download_button")]
    # the gzip size comes last, in the Export section and the size metric's hover
    size = next(metric for metric in app.metric if metric.label == "Size on disk")
    assert "being measured" not in size.proto.help and size.proto.help.startswith("gzip: ")
    assert any(caption.value.startswith("Compressed with gzip (level 1): ") for caption in app.caption)


def test_moving_the_sliders_changes_sparsity_accuracy_and_size(downloads, digits_cnn):
    app = _app()
    app.slider(key="prune_percent").set_value(50).run()
    assert _metrics(app)["Non-zero weights"] == "18,920"  # exactly half of 37,840
    app.select_slider(key="weight_bits").set_value(4).run()
    metrics = _metrics(app)
    assert metrics["Size on disk"] == "0.05 MB"
    assert not app.exception
    # the quantization levels panel appears, with the 15 codes of the 4-bit grid
    codes = [chart for chart in app.get("plotly_chart") if "Quantization levels" in chart.proto.spec]
    assert len(codes) == 1 and "15 levels of the 4-bit grid" in codes[0].proto.spec

    data = downloads["digits-cnn-squeezed.onnx"]
    expected = export_bytes(
        compress(digits_cnn, Recipe(PruneConfig(0.5), QuantConfig(4), "digits-cnn", digits_cnn.sha256))
    )
    assert data == expected
    logits = run(create_session(data), digits_cnn.eval_set.inputs)[0]
    accuracy = float((logits.argmax(1) == digits_cnn.eval_set.labels).mean())
    assert metrics["Accuracy"] == f"{accuracy:.1%}"


def test_two_sessions_on_different_settings_keep_their_own_results(downloads, digits_cnn):
    first, second = _app(), _app()
    first.slider(key="prune_percent").set_value(70).run()
    first_model = downloads["digits-cnn-squeezed.onnx"]
    second.select_slider(key="weight_bits").set_value(8).run()
    second_model = downloads["digits-cnn-squeezed.onnx"]
    first.run()  # a rerun of the first session after the second one changed its settings
    assert _metrics(first)["Non-zero weights"] == f"{37_840 - round(0.7 * 37_840):,}"
    eight_bit = compress(digits_cnn, Recipe(quant=QuantConfig(8)))
    nonzero = sum(int(np.count_nonzero(values)) for values in eight_bit.weights.values())
    assert 37_000 < nonzero < 37_840  # 8-bit rounding sends the smallest weights to zero
    assert _metrics(second)["Non-zero weights"] == f"{nonzero:,}"
    assert downloads["digits-cnn-squeezed.onnx"] == first_model != second_model
    outputs = [run(create_session(data), digits_cnn.eval_set.inputs)[0] for data in (first_model, second_model)]
    assert not np.allclose(outputs[0], outputs[1])
    # the shared cached model was never changed by either session
    from app import cache

    shared = cache.model("digits-cnn")
    assert all(np.array_equal(shared.weights[name], digits_cnn.weights[name]) for name in digits_cnn.weights)
    assert not any(values.flags.writeable for values in shared.weights.values())


def test_a_corrupt_upload_shows_the_reason_and_keeps_the_model():
    app = _app()
    app.slider(key="prune_percent").set_value(30).run()
    _model_uploader(app).set_value(("notes.onnx", b"my meeting notes, not a model", "application/octet-stream"))
    app.run()
    assert not app.exception
    assert [error.value for error in app.error] == [
        "notes.onnx: not an ONNX model (the protobuf does not parse; corrupt or truncated?)"
    ]
    assert app.selectbox(key="model_choice").value.startswith("digits-cnn")
    assert _metrics(app)["Non-zero weights"] == f"{37_840 - round(0.3 * 37_840):,}"
    assert _model_uploader(app).value is None  # emptied: it does not name notes.onnx beside digits-cnn's page


def test_an_uploaded_onnx_becomes_the_model_with_random_inputs_flagged():
    app = _app()
    _model_uploader(app).set_value(("tiny.onnx", conv_gemm_model().SerializeToString(), "application/octet-stream"))
    app.run()
    assert not app.exception and not app.error
    assert app.selectbox(key="model_choice").value == "tiny.onnx (uploaded)"
    assert _metrics(app)["Non-zero weights"] == "294"
    assert any("seeded random inputs" in warning.value for warning in app.warning)


def test_measuring_latency_fills_the_panel_and_the_headline():
    app = _app()
    app.slider(key="latency_budget").set_value(1).run()
    app.button(key="measure_panel").click().run()
    assert not app.exception
    assert _metrics(app)["Median latency"].endswith(" ms")
    assert any("runs" in markdown.value and "median" in markdown.value for markdown in app.markdown)
    assert any("ONNX Runtime latency per run" in chart.proto.spec for chart in app.get("plotly_chart"))


def test_channel_granularity_shrinks_the_graph_and_its_macs(downloads, digits_cnn):
    app = _app()
    app.selectbox(key="granularity").set_value("channel").run()
    assert [option.split(":")[0] for option in app.selectbox(key="criterion").options] == [
        "l1",
        "l2",
        "activation",
        "random",
    ]
    app.slider(key="prune_percent").set_value(50).run()
    assert not app.exception
    data = downloads["digits-cnn-squeezed.onnx"]
    expected = compress(digits_cnn, Recipe(PruneConfig(0.5, granularity="channel"), model="digits-cnn"))
    assert data == export_bytes(expected)
    macs_after = sum(expected.macs.values())
    assert macs_after < 0.4 * sum(digits_cnn.macs.values())
    metric = next(m for m in app.metric if m.label == "MACs per sample")
    assert metric.value == f"{macs_after / 1e3:.3g} k" and metric.delta.startswith("-")
    assert len(data) < 0.45 * len(digits_cnn.onnx_bytes)
    assert any(
        "Expected on this CPU: should run faster" in box.value and "fewer MACs" in box.value for box in app.success
    )
    # kept channels rounded up to 16, the block of ONNX Runtime's NCHWc kernels with AVX-512
    app.select_slider(key="channel_multiple").set_value(16).run()
    rounded = compress(
        digits_cnn, Recipe(PruneConfig(0.5, granularity="channel", channel_multiple=16), model="digits-cnn")
    )
    assert downloads["digits-cnn-squeezed.onnx"] == export_bytes(rounded) and not app.exception
    assert sum(rounded.macs.values()) > macs_after


def test_block_granularity_lists_each_blocks_cost_and_drops_the_picked_one():
    app = _app()
    app.selectbox(key="granularity").set_value("block").run()
    blocks = _tables(app)[0].value
    assert list(blocks["block"]) == ["/block1/Add", "/block2/Add", "/block3/Add"]
    assert list(blocks["accuracy without it"]) == ["15.6%", "57.4%", "100.0%"]  # on the first 256 tuning digits
    app.multiselect(key="drop_blocks").set_value(["/block3/Add"]).run()
    assert not app.exception
    assert list(_tables(app)[0].value["dropped"]) == [False, False, True]
    assert _metrics(app)["Accuracy"] == "98.9%"


def test_resnet18_8_bits_auto_chooses_static_says_faster_and_measures_it():
    app = _app()
    resnet = next(option for option in app.selectbox(key="model_choice").options if option.startswith("resnet18"))
    app.selectbox(key="model_choice").set_value(resnet).run()
    app.select_slider(key="weight_bits").set_value(8).run()
    app.selectbox(key="activations").set_value("auto").run()
    assert not app.exception
    assert any(md.value.startswith("**static** (convolutions carry 100% of the MACs") for md in app.markdown)
    verdict = next(box.value for box in app.success)
    assert verdict.startswith("**Expected on this CPU: should run faster.**") and "static QDQ" in verdict
    app.slider(key="latency_budget").set_value(2).run()
    app.button(key="measure_panel").click().run()
    assert not app.exception
    measured = next(md.value for md in app.markdown if md.value.startswith("The compressed model ran"))
    assert "faster" in measured and "Expected beforehand: faster; the measurement **confirms** it." in measured


def test_settings_a_model_cannot_take_show_the_reason_and_keep_the_page(tmp_path, monkeypatch):
    import core.onnx.opsets

    def refuse(model, version):
        raise RuntimeError("No Adapter For Gemm")

    monkeypatch.setattr(core.onnx.opsets.version_converter, "convert_version", refuse)  # opset 11 stays 11
    app = _app()
    old = conv_gemm_model()
    old.opset_import[0].version = 11  # per-axis DequantizeLinear needs opset 13
    _model_uploader(app).set_value(("old.onnx", old.SerializeToString(), "application/octet-stream")).run()
    app.select_slider(key="weight_bits").set_value(8).run()
    assert not app.exception
    assert [error.value for error in app.error] == [
        "old.onnx: weight quantization needs ONNX opset >= 13; this model uses opset 11 "
        "(opset 11 could not be converted to opset 13 (No Adapter For Gemm))"
    ]
    app.select_slider(key="weight_bits").set_value("off").run()
    assert not app.exception and not app.error and _metrics(app)["Non-zero weights"] == "294"


def _tiny_upload(app: AppTest) -> AppTest:
    _model_uploader(app).set_value(("tiny.onnx", conv_gemm_model().SerializeToString(), "application/octet-stream"))
    return app.run()


def test_a_child_killed_mid_benchmark_gives_an_error_and_the_app_recovers():
    import multiprocessing
    import os
    import signal
    import threading
    import time

    app = _tiny_upload(_app())
    app.slider(key="latency_budget").set_value(20).run()
    killed = []

    def kill_the_benchmark() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid in [child.pid for child in multiprocessing.active_children()]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_benchmark)
    killer.start()
    app.button(key="measure_panel").click().run()
    killer.join()
    assert killed and not app.exception
    assert any("measuring latency crashed (SIGKILL); the server is unaffected" in error.value for error in app.error)
    app.slider(key="latency_budget").set_value(1).run()
    app.button(key="measure_panel").click().run()
    assert not app.exception and _metrics(app)["Median latency"].endswith(" ms")


def test_a_hostile_upload_is_refused_in_the_page_and_the_session_folder_goes_with_the_session():
    import gc
    import pickle
    from pathlib import Path

    app = _app()
    disguised = ("weights.onnx", pickle.dumps({"a": 1}), "application/octet-stream")  # judged by bytes, not name
    _model_uploader(app).set_value(disguised).run()
    assert [error.value for error in app.error] == [
        "weights.onnx: a pickled file (PyTorch .pt/.pth/.bin/.ckpt): loading it would run code inside it; "
        "save a safetensors state dict or export to ONNX instead"
    ]
    assert app.selectbox(key="model_choice").value.startswith("digits-cnn") and not app.exception
    folder = Path(app.session_state["workdir"].name)
    assert (folder / "uploads").is_dir()
    del app
    gc.collect()
    assert not folder.exists()


def test_the_sensitivity_scan_and_the_sweep_run_from_the_page():
    app = _app()
    app.button(key="run_scan").click().run()
    assert not app.exception
    specs = [chart.proto.spec for chart in app.get("plotly_chart")]
    assert any("Sensitivity: 1 - cosine caused by each layer alone, on the tuning data" in spec for spec in specs)
    assert any("Per-layer curves" in spec for spec in specs)
    app.session_state["explore_tab"] = "Pareto sweep"  # only the open tab runs
    app.run()
    assert not any("Per-layer curves" in chart.proto.spec for chart in app.get("plotly_chart"))
    app.multiselect(key="sweep_amounts").set_value([0.0, 0.5]).run()
    app.multiselect(key="sweep_bits").set_value([32, 8]).run()
    app.button(key="run_sweep").click().run()
    assert not app.exception
    specs = [chart.proto.spec for chart in app.get("plotly_chart")]
    assert any("accuracy against latency" in spec for spec in specs) and any(
        "accuracy against size" in spec for spec in specs
    )


def test_a_picked_sweep_point_loads_into_the_sidebar():
    app = _app()
    app.session_state["pending_settings"] = {"prune_percent": 25, "weight_bits": 8, "granularity": "channel"}
    app.run()
    assert app.slider(key="prune_percent").value == 25 and app.select_slider(key="weight_bits").value == 8
    assert app.selectbox(key="granularity").value == "channel" and not app.exception


def test_two_snapshots_saved_and_compared():
    app = _app()
    app.session_state["explore_tab"] = "Snapshots"
    app.run()
    app.text_input(key="snapshot_name").input("plain").run()
    app.button(key="save_snapshot").click().run()
    app.slider(key="prune_percent").set_value(50).run()
    app.text_input(key="snapshot_name").input("half").run()
    app.button(key="save_snapshot").click().run()
    options = app.multiselect(key="compare_snapshots").options
    names = [option.split(": ", 1)[1] for option in options]
    assert names[-2:] == ["plain", "half"]
    app.multiselect(key="compare_snapshots").set_value(options[-2:]).run()
    assert not app.exception
    assert any("Per-layer sparsity by snapshot" in chart.proto.spec for chart in app.get("plotly_chart"))


def test_an_edit_in_the_overrides_table_reaches_the_recipe():
    app = _app()
    editor = next(table for table in app.dataframe if (table.key or "").startswith("overrides_"))
    # the edit the data editor records when a user sets /fc/Gemm (row 8) to 2 bits
    app.session_state[editor.key] = {"edited_rows": {8: {"bits": 2}}, "added_rows": [], "deleted_rows": []}
    app.run()
    assert not app.exception
    bits = dict(zip(_tables(app)[0].value["layer"], _tables(app)[0].value["bits"], strict=True))
    assert bits["/fc/Gemm"] == 2 and bits["/stem/stem.0/Conv"] == 32
    assert any("15 levels" not in chart.proto.spec and "Quantization levels" in chart.proto.spec
               for chart in app.get("plotly_chart"))  # fmt: skip


def test_an_export_over_2_gb_downloads_as_a_zip_of_the_model_and_its_external_data(monkeypatch, tmp_path):
    import zipfile

    import core.compression.export
    from app import cache

    monkeypatch.setattr(
        core.compression.export, "SINGLE_FILE_LIMIT", 1000
    )  # digits-cnn's 0.16 MB counts as "over 2 GB"
    cache._EXPORTS.clear()  # exports made under the real limit must not answer
    try:
        app = _app()
        labels = [button.proto.label for button in app.get("download_button")]
        assert labels[0] == "Download digits-cnn-squeezed.zip (0.00 GB)"
        ((source, recipe_json, _), exported), *_ = cache._EXPORTS.items()
        assert isinstance(exported.data, Path) and exported.data.name == "model.onnx"
        archive = tmp_path / "download.zip"
        archive.write_bytes(cache.download_zip(exported.data))
        assert exported.data.parent.with_suffix(".zip").is_file()  # written once, beside the export's folder
        with zipfile.ZipFile(archive) as opened:
            assert opened.namelist() == ["model.onnx", "model.onnx.data"]
            opened.extractall(tmp_path / "unzipped")
        model = cache.model(source)  # the page starts unpruned in float: the two files compute the original
        assert cache.live(source, recipe_json).compressed.recipe.prune.amount == 0
        unzipped = run(create_session(tmp_path / "unzipped" / "model.onnx"), model.eval_set.inputs)[0]
        np.testing.assert_allclose(unzipped, model.reference_outputs[0], rtol=0, atol=1e-5)
        app.slider(key="latency_budget").set_value(1).run()
        app.button(key="measure_panel").click().run()  # timed on the export with external data
        assert not app.exception and _metrics(app)["Median latency"].endswith(" ms")
        cache._remove(exported.data.parent)  # as when it leaves the cache
        assert not exported.data.parent.exists() and not exported.data.parent.with_suffix(".zip").exists()
        with pytest.raises(SqueezeError, match="this export has left the cache; move a setting and back"):
            cache.download_zip(exported.data)
    finally:
        for entry in cache._EXPORTS.values():
            if isinstance(entry.data, Path):
                cache._remove(entry.data.parent)
        cache._EXPORTS.clear()


def test_a_large_upload_stays_on_disk_compresses_and_explains_what_it_cannot_do(monkeypatch, tmp_path):
    import io
    import zipfile

    import core.load.onnx_file
    from bench.large_model import generate_mlp

    monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 0)  # this 3-layer MLP counts as large
    model_file = generate_mlp(tmp_path / "mlp", 64, 3)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as output:
        for path in model_file.parent.iterdir():
            output.write(path, path.name)
    app = _app()
    _model_uploader(app).set_value(("mlp.zip", archive.getvalue(), "application/zip")).run()
    assert not app.exception and not app.error
    assert app.selectbox(key="model_choice").value == "mlp.zip (uploaded)"
    app.slider(key="prune_percent").set_value(50).run()
    app.select_slider(key="weight_bits").set_value(8).run()
    assert not app.exception and not app.error
    assert _metrics(app)["Non-zero weights"] == f"{3 * 64 * 64 // 2:,}"
    app.button(key="run_scan").click().run()  # scans the layers from their memory maps
    assert not app.exception and not app.error
    assert any("Sensitivity: " in chart.proto.spec for chart in app.get("plotly_chart"))
    app.selectbox(key="granularity").set_value("block").run()
    assert not app.exception
    (error,) = app.error
    assert error.value.endswith(
        ": block pruning needs the weights in memory; this model keeps 0.0 GB of weights "
        "on disk, memory-mapped (pruning, weight-only quantization, scans and sweeps run on it)"
    )


def test_an_export_that_fails_midway_shows_one_line_and_no_progress_bar(monkeypatch):
    from app import cache
    from core import UnsupportedModelError

    def failing(source, recipe_json, progress=None, every_sample=False):
        progress(0.5)  # calibration had started
        raise UnsupportedModelError("ONNX Runtime's quantizer crashed", "digits-cnn.onnx")

    monkeypatch.setattr(cache, "exported", failing)
    app = AppTest.from_file(MAIN, default_timeout=180)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert [error.value for error in app.error] == ["digits-cnn.onnx: ONNX Runtime's quantizer crashed"]
    assert not app.get("progress")
    assert "Export" not in [header.value for header in app.subheader]  # the page ended at the error


def test_an_upload_no_made_up_input_runs_is_fixed_in_the_inputs_panel():
    app = _app()
    data = pooled_detector(grid=5).SerializeToString()  # runs only at 160x160, none of the made-up sides
    _model_uploader(app).set_value(("odd.onnx", data, "application/octet-stream"))
    app.run()
    assert not app.exception
    assert app.selectbox(key="model_choice").value == "odd.onnx (uploaded)"  # chosen, so it can be fixed here
    assert [error.value for error in app.error] == [
        "odd.onnx: ONNX Runtime on this model failed: did not run on made-up inputs (x: 8x3x224x224; also tried 5 "
        "other sizes): set them with --shape x=... or --value x=... (the page's Inputs panel)"
    ]
    assert [expander.label for expander in app.expander if expander.label == "Details"] == ["Details"]
    assert "[ONNXRuntimeError]" in app.code[0].value  # ONNX Runtime's own words, under the one line
    panel = next(editor for editor in app.data_editor if (editor.key or "").startswith("inputs:"))
    assert panel.value.to_dict("records") == [
        {"input": "x", "dtype": "float32", "declared": "N x 3 x height x width", "shape": "", "value": ""}
    ]
    app.session_state[panel.key] = {"edited_rows": {0: {"shape": "1x3x160x160"}}, "added_rows": [], "deleted_rows": []}
    app.run()
    assert not app.exception and not app.error
    assert _metrics(app)["Non-zero weights"] == f"{5 * 3 * 25:,}"
    warning = next(warning.value for warning in app.warning if "seeded random inputs" in warning.value)
    assert "Made-up inputs" not in warning  # the shape was given, not made up


def _digits_zip(count: int = 120) -> bytes:
    """The first `count` held-out digits as 8x8 PNGs in class folders, zipped as a user would."""
    import io
    import zipfile

    from PIL import Image

    from sample_models import data

    _, _, test_x, test_y = data.digits_split()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(count):
            image = io.BytesIO()
            Image.fromarray(np.round(test_x[index, 0] * 255).astype(np.uint8), "L").save(image, "PNG")
            archive.writestr(f"digits/{test_y[index]}/{index:03d}.png", image.getvalue())
    return buffer.getvalue()


def test_the_users_images_are_split_previewed_and_scored_on_the_held_out_part():
    app = _app()
    app.file_uploader(key="data_upload").set_value(("digits.zip", _digits_zip(), "application/zip")).run()
    assert not app.exception and not app.error
    caption = next(caption.value for caption in app.caption if caption.value.startswith("digits.zip (sha256"))
    assert "96 tuning and 24 held-out samples, 10 classes" in caption and "gray, unit ([0, 1]), nchw" in caption
    assert any(caption.value.startswith("As the model receives them (values 0 to 1") for caption in app.caption)
    accuracy = next(metric for metric in app.metric if metric.label == "Accuracy")
    assert accuracy.value == "100.0%" and "on 24 held-out samples" in accuracy.proto.help
    app.selectbox(key="data_scale").set_value("imagenet").run()  # a wrong preset: lower, and said so
    assert not app.exception and not app.error
    assert float(_metrics(app)["Accuracy"].rstrip("%")) < 50
    assert any("imagenet (ImageNet mean/std)" in caption.value for caption in app.caption)
    app.selectbox(key="metric").set_value("agreement").run()
    assert _metrics(app)["Top-1 agreement"] == "100.0%"


def test_bad_data_is_refused_in_the_sidebar_and_the_model_keeps_its_own():
    app = _app()
    app.file_uploader(key="data_upload").set_value(("notes.txt", b"hello\nworld\n", "text/plain")).run()
    assert not app.exception
    assert [error.value for error in app.error] == [
        "notes.txt: text needs a Hugging Face text model with its tokenizer (a folder with tokenizer.json); this "
        "model has none"
    ]
    assert _metrics(app)["Accuracy"] == "99.7%"  # on the sample's own 359 digits


def test_accuracy_at_chance_says_the_model_no_longer_works():
    app = _app()
    app.selectbox(key="granularity").set_value("channel").run()
    app.slider(key="prune_percent").set_value(50).run()
    assert not app.exception
    assert _metrics(app)["Accuracy"] == "11.1%"  # 40 of 359 digits: within two standard errors of 10 %
    assert "Accuracy 11.1% is at chance (10.0% for 10 classes): the model no longer works." in [
        error.value for error in app.error
    ]
    app.slider(key="prune_percent").set_value(10).run()
    assert not any("at chance" in error.value for error in app.error)


def test_quality_of_an_untrained_model_is_not_a_headline():
    app = _app()
    resnet = next(option for option in app.selectbox(key="model_choice").options if option.startswith("resnet18"))
    app.selectbox(key="model_choice").set_value(resnet).run()
    app.slider(key="prune_percent").set_value(50).run()
    assert not app.exception
    quality = next(metric for metric in app.metric if metric.label == "Fidelity (cosine)")
    assert quality.value == "—" and quality.proto.help.startswith(
        "Not meaningful: on an untrained model (random weights)"
    )


def test_quantizations_own_error_is_told_apart_from_prunings():
    """At 50 % pruning + 8-bit static, /block3/conv2/Conv read -1.07 dB: pruning's error blamed on quantization."""
    app = _app()
    app.slider(key="prune_percent").set_value(50).run()
    app.select_slider(key="weight_bits").set_value(8).run()
    app.selectbox(key="activations").set_value("static").run()
    assert not app.exception
    table = next(table.value for table in _tables(app) if "output SQNR (dB)" in table.value.columns)
    row = table[table["layer"] == "/block3/conv2/Conv"].iloc[0]
    # quantization alone, on what the next layer reads: after the activation's int8 round trip (38.06 dB before it)
    assert row["output SQNR (dB)"] == pytest.approx(36.33, abs=0.5)
    assert row["with pruning (dB)"] == pytest.approx(-1.07, abs=0.5)  # pruning and quantization together
    assert table["output SQNR (dB)"].min() > 25  # no layer to keep in float: 8 bits cost little anywhere


def _read_export(data: bytes, model) -> tuple[int, int]:
    """(zero weights, layers stored as int8) in an exported file, read from its initializers."""
    import onnx
    from onnx import numpy_helper

    stored = {init.name: numpy_helper.to_array(init) for init in onnx.load_from_string(data).graph.initializer}
    zeros = int8 = 0
    for layer in model.layers:
        names = [name for name in stored if name == layer.name or name.startswith(f"{layer.name}_")]
        values = next(stored[name] for name in names if stored[name].size == layer.params)
        zeros += int(np.count_nonzero(values == 0))
        int8 += values.dtype == np.int8
    return zeros, int8


def test_the_export_caption_reads_the_file_and_overrides_can_be_cleared(downloads, digits_cnn):
    app = _app()
    editor = f"overrides_{digits_cnn.sha256[:12]}_0"
    app.session_state[editor] = {
        "edited_rows": {"8": {"bits": 4}, "0": {"amount %": 50}},
        "added_rows": [],
        "deleted_rows": [],
    }
    app.slider(key="prune_percent").set_value(60).run()
    assert not app.exception
    assert [info.value for info in app.info if info.value.startswith("Per-layer overrides")] == [
        "Per-layer overrides are set: the amount applies to 8 of 9 layers, the bits to 8 of 9."
    ]
    zeros, int8 = _read_export(downloads["digits-cnn-squeezed.onnx"], digits_cnn)
    assert int8 == 1
    caption = next(caption.value for caption in app.caption if caption.value.startswith("This file:"))
    assert caption.startswith(
        f"This file: {zeros / 37_840:.1%} of the prunable weights zero or removed ({37_840 - zeros:,} of 37,840 left); "
        "weights by layer: 8 at float32, 1 at 4-bit."
    )
    app.button(key="clear_overrides").click().run()
    assert not any(info.value.startswith("Per-layer overrides") for info in app.info)
    zeros, int8 = _read_export(downloads["digits-cnn-squeezed.onnx"], digits_cnn)
    assert (zeros, int8) == (round(0.6 * 37_840), 0)
    caption = next(caption.value for caption in app.caption if caption.value.startswith("This file:"))
    assert caption.startswith(
        "This file: 60.0% of the prunable weights zero or removed (15,136 of 37,840 left); float32"
    )


def test_an_upload_error_belongs_to_the_model_it_was_shown_beside():
    app = _app()
    _model_uploader(app).set_value(("notes.onnx", b"not a model", "application/octet-stream")).run()
    assert [error.value for error in app.error] == [
        "notes.onnx: not an ONNX model (the protobuf does not parse; corrupt or truncated?)"
    ]
    mlp = next(option for option in app.selectbox(key="model_choice").options if option.startswith("digits-mlp"))
    app.selectbox(key="model_choice").set_value(mlp).run()
    assert not app.exception and not app.error


def test_a_slow_evaluation_is_judged_live_on_its_first_samples_and_on_all_of_them_on_request(monkeypatch):
    from app import cache

    monkeypatch.setattr(cache, "LIVE_EVALUATION_S", 1e-9)  # as if the original took ages on its 359 digits
    cache.evaluated.clear()
    cache._EXPORTS.clear()  # exports judged on all 359 must not answer
    try:
        app = _app()
        accuracy = next(metric for metric in app.metric if metric.label == "Accuracy")
        assert "on 8 of 359 " in accuracy.proto.help  # LIVE_AT_LEAST of them
        toggle = app.toggle(key="evaluate_all")
        assert toggle.label.startswith("Judge each setting on all 359 evaluation samples (~")
        toggle.set_value(True).run()
        accuracy = next(metric for metric in app.metric if metric.label == "Accuracy")
        assert accuracy.value == "99.7%" and "on 359 evaluation samples" in accuracy.proto.help
    finally:
        cache.evaluated.clear()
        cache._EXPORTS.clear()


def _finish_recovery(app):
    """Waits for the background recovery, then reruns the page as its fragment's poll would."""
    assert app.session_state["recovery_job"].finished.wait(120)
    app.run()


def test_the_recover_panel_wins_the_accuracy_back_and_offers_the_recovered_file(downloads):
    app = _app()
    app.selectbox(key="granularity").set_value("channel").run()
    app.slider(key="prune_percent").set_value(50).run()
    assert _metrics(app)["Accuracy"] == "11.1%"
    app.slider(key="recover_seconds").set_value(15).run()
    app.button(key="run_recovery").click().run()
    assert app.button(key="run_recovery").disabled  # one run at a time, in the background
    assert app.get("progress")[-1].proto.text.startswith("Recovering (distill)…")
    _finish_recovery(app)
    assert not app.exception  # the headline's chance flag stays: it is about the file without recovery
    assert [error.value for error in app.error] == [
        "Accuracy 11.1% is at chance (10.0% for 10 classes): the model no longer works."
    ]
    done = next(message.value for message in app.success if message.value.startswith("distill: "))
    before, after = done.split("held-out part ")[1].split(", after")[0].split(" → ")
    assert before == "11.1%" and float(after.strip("*%")) > 90
    spec = app.get("plotly_chart")[-1].proto.spec
    assert "Recovery: loss and held-out quality per step" in spec and "accuracy (held-out part)" in spec
    assert "digits-cnn-recovered.onnx" in downloads.on_click
    recovered = downloads["digits-cnn-recovered.onnx"]
    assert recovered[:2] == b"\x08\x08" or len(recovered) > 1000  # an ONNX file, made when clicked
    recipe = json.loads(downloads["digits-cnn-recovered-recipe.json"])["recover"]
    assert recipe["steps"] > 10 and recipe["seconds"] == 30.0  # the steps it trained, so it replays them


def test_stop_ends_the_pages_recovery_and_keeps_its_best_checkpoint():
    app = _app()
    app.selectbox(key="granularity").set_value("channel").run()
    app.slider(key="prune_percent").set_value(50).run()
    app.selectbox(key="recover_schedule").set_value("gradual").run()
    app.slider(key="recover_seconds").set_value(120).run()
    app.button(key="run_recovery").click().run()
    time.sleep(4)
    app.button(key="stop_recovery").click().run()
    _finish_recovery(app)
    assert not app.exception
    done = next(message.value for message in app.success if message.value.startswith("distill: "))
    assert "held-out part 11.1% → " in done
    assert any(caption.value.startswith("Stopped before its budget ran out") for caption in app.caption)


def test_the_sensitivity_panel_recovers_the_plan_it_loads():
    app = _app()
    app.slider(key="recover_seconds").set_value(5).run()
    app.button(key="run_scan").click().run()
    app.button(key="recover_auto_plan").click().run()
    assert not app.exception
    job = app.session_state["recovery_job"]
    recipe = Recipe.from_json(job.recipe_json)
    assert recipe.prune.granularity == "unstructured" and recipe.prune.amount == 0
    assert len(recipe.overrides) > 0 and recipe.recover.seconds == 5.0  # the auto plan, recovered
    _finish_recovery(app)
    assert any(message.value.startswith("distill: ") for message in app.success)


def test_the_search_tab_runs_in_the_background_and_loads_its_best_trial():
    app = _app()
    app.session_state["explore_tab"] = "Search"
    app.run()
    app.slider(key="search_budget").set_value(10).run()
    app.button(key="run_search").click().run()
    assert app.button(key="run_search").disabled  # one search at a time, in the background
    job = app.session_state["search_job"]
    assert job.finished.wait(120)
    app.run()
    assert not app.exception and not app.error
    best = job.result.best
    (done,) = [message.value for message in app.success if message.value.startswith("Best: trial ")]
    assert done.startswith(f"Best: trial {best.number}, ") and "(the original: 100.0%)" in done
    assert any("Search: accuracy against size" in chart.proto.spec for chart in app.get("plotly_chart"))
    app.button(key="load_best_trial").click().run()
    assert not app.exception
    bits = best.recipe.quant.weight_bits
    assert app.select_slider(key="weight_bits").value == ("off" if bits == 32 else bits)
    assert app.selectbox(key="granularity").value == best.recipe.prune.granularity
    assert any(message.value.startswith("Per-layer overrides are set") for message in app.info)


def test_no_module_of_the_app_hides_one_of_the_standard_library():
    """Streamlit puts app/ on sys.path: an app/profile.py once hid the standard library's `profile`, and training
    in the page failed on cProfile's import of it."""
    import sys
    from pathlib import Path

    names = {path.stem for path in (Path(__file__).resolve().parents[2] / "app").glob("*.py")}
    assert names and not names & set(sys.stdlib_module_names)
