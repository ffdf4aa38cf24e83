from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core import ModelLoadError, UnsupportedModelError, load_model
from sample_models import SAMPLES
from sample_models.registry import _resnet18_parameter_shapes
from tests.graphs import relu_only_model


def test_a_sample_is_exported_once_then_loaded_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path))
    sample = SAMPLES["digits-mlp"]
    exports = []

    def counting_export(state, path):
        exports.append(path)
        sample.export_onnx(state, path)

    monkeypatch.setitem(SAMPLES, "digits-mlp", replace(sample, export_onnx=counting_export))
    first = load_model("digits-mlp")
    second = load_model("digits-mlp")
    assert len(exports) == 1
    assert first.sha256 == second.sha256
    assert [entry.name for entry in tmp_path.iterdir()] == [
        f"digits-mlp-{path.parent.name.split('-')[-1]}" for path in exports
    ]
    assert {path.name for path in tmp_path.iterdir().__next__().iterdir()} == {"model.onnx", "eval-v3.npz"}


def test_digits_mlp_is_trained(monkeypatch):
    model = load_model("digits-mlp")
    accuracy = float((model.reference_outputs[0].argmax(1) == model.eval_set.labels).mean())
    assert accuracy >= 0.95
    assert [layer.op_type for layer in model.layers] == ["Gemm", "Gemm", "Gemm"]


def test_resnet18_weights_have_torchs_names_and_shapes():
    import torch  # noqa: F401 - the architecture module needs it

    from sample_models.architectures import ResNet18

    expected = {name: tuple(value.shape) for name, value in ResNet18().state_dict().items()}
    assert dict(_resnet18_parameter_shapes()) == expected


def test_resnet18_is_labelled_untrained_and_has_the_expected_size(resnet18):
    assert resnet18.trained is False and "UNTRAINED" in resnet18.description
    assert resnet18.prunable_params == 11_678_912
    assert sum(resnet18.macs.values()) == 1_814_073_344  # 1.82 GMACs, as torchvision's resnet18 reports


def test_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from core.load.torch_export import sentences
    from sample_models.registry import minilm_folder

    model = load_model("minilm")
    assert model.task == "embedding" and len(model.layers) == 36  # 6 layers x (q, k, v, out, up, down)
    assert all(layer.op_type == "MatMul" for layer in model.layers)
    reference = SentenceTransformer(str(minilm_folder()), device="cpu", local_files_only=True).encode(sentences())
    ours = model.reference_outputs[0]
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.9999


def test_unknown_sample_lists_the_known_ones():
    with pytest.raises(ModelLoadError) as error:
        load_model("digits-cnm")
    assert (
        str(error.value) == "digits-cnm: unknown sample model; known samples: digits-cnn, digits-mlp, minilm, resnet18"
    )


def test_corrupt_files_are_refused_with_a_reason(tmp_path, digits_cnn):
    text = tmp_path / "notes.onnx"
    text.write_text("these are my meeting notes, not a model\n" * 20)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(digits_cnn.onnx_bytes[: len(digits_cnn.onnx_bytes) // 2])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (text, truncated, empty):
        with pytest.raises(ModelLoadError, match=rf"^{path}: (not an ONNX model|empty file)"):
            load_model(path)


def test_a_model_without_prunable_weights_is_unsupported(tmp_path):
    path = tmp_path / "relu.onnx"
    path.write_bytes(relu_only_model().SerializeToString())
    with pytest.raises(UnsupportedModelError, match="no prunable weights"):
        load_model(path)


def test_missing_file_and_a_pickle_named_onnx(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "missing.onnx")
    disguised = tmp_path / "model.onnx"  # judged by its bytes, not its name
    disguised.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(UnsupportedModelError, match="a pickled file .*loading it would run code"):
        load_model(disguised)
