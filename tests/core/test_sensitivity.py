from __future__ import annotations

import json

import numpy as np

from core.cli import main
from core.explore import sensitivity
from core.explore.sensitivity import cached_scan, scan


def test_l1_drops_grow_with_the_amount_allowing_for_noise(digits_cnn):
    result = scan(digits_cnn, bits=())
    # fidelity on the 64 tuning digits (training images), never the 359 held-out ones accuracy is reported on
    assert result.metric == "1 - cosine" and result.complete and result.samples == 64
    for layer, drops in zip(result.layers, result.drops, strict=True):
        assert all(later > earlier for earlier, later in zip(drops, drops[1:], strict=False)), layer
    stem = result.drops[result.layers.index("/stem/stem.0/Conv")]
    assert stem[-1] > 0.5  # the 16-filter stem cannot lose 90 % of its weights


def test_one_session_with_weights_as_inputs_reproduces_the_model(digits_cnn):
    from core.onnx.runtime import create_session

    session = create_session(sensitivity._weights_as_inputs(digits_cnn))
    outputs = session.run(None, digits_cnn.eval_set.inputs | dict(digits_cnn.weights))[0]
    np.testing.assert_allclose(outputs, digits_cnn.reference_outputs[0], rtol=0, atol=1e-4)  # other kernels, same math


def test_a_cancelled_scan_keeps_what_finished_and_a_full_one_is_cached(digits_cnn, monkeypatch, tmp_path):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path))
    calls = []
    partial = scan(digits_cnn, (0.5,), (4,), should_stop=lambda: len(calls) >= 5, progress=calls.append)
    assert not partial.complete and sum(drop is not None for row in partial.drops for drop in row) == 5
    first = cached_scan(digits_cnn, (0.5,), (4,))
    monkeypatch.setattr(sensitivity, "scan", lambda *args, **kwargs: (_ for _ in ()).throw(AssertionError("rescanned")))
    assert cached_scan(digits_cnn, (0.5,), (4,)) == first


def test_the_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "scan.json"
    assert main(["sensitivity", "digits-mlp", "--amounts", "0.5", "--bits", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "1 - cosine drop per layer alone (baseline 1.0000, 64 tuning inputs, apart from the held-out set" in printed
        and "prune 0.5" in printed
        and "bits 4" in printed
    )
    written = json.loads(out.read_text())
    assert written["settings"] == ["prune 0.5", "bits 4"] and len(written["drops"]) == 3
