"""Every technique choice comes from one registry: the CLI, the recipe and the verdict list the same entries."""

from __future__ import annotations

import numpy as np
import pytest

from core import ACTIVATION_MODES, GRANULARITIES, QUALITY_METRICS, InvalidSettingError, PruneConfig, QuantConfig
from core.cli import _parser
from core.compression.calibration import CALIBRATION_SOURCES, calibration_for
from core.data.quality import fitting_metrics, metric_of, with_metric
from core.measure.benchmark import environment, stats
from core.measure.report import Latency
from core.measure.verdict import INT8_MODE_REASONS, measured_effect, measured_text, verdict_agreement
from core.model import EvalSet


def _choices(command: str, flag: str) -> list[str]:
    parser = _parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    action = next(a for a in subparsers.choices[command]._actions if flag in a.option_strings)
    return list(action.choices)


def test_the_cli_lists_the_registries():
    assert _choices("compress", "--granularity") == ["unstructured", "channel", "block"] == list(GRANULARITIES)
    assert _choices("compress", "--activations") == ["none", "dynamic", "static", "auto"] == list(ACTIVATION_MODES)


def test_the_recipe_validates_against_the_registries_and_takes_their_defaults():
    with pytest.raises(
        InvalidSettingError, match="unknown granularity 'rows'; choose from unstructured, channel, block"
    ):
        PruneConfig(granularity="rows")
    assert [PruneConfig(granularity=name).scope for name in GRANULARITIES] == ["global", "layer", "layer"]
    assert QuantConfig(8, "dynamic").smooth_alpha == 0.7 and QuantConfig(8, "static").smooth_alpha == 0.0
    with pytest.raises(InvalidSettingError, match=r"int8 activations \(auto\) need quantized weights"):
        QuantConfig(32, "auto")


def test_every_int8_mode_says_what_it_does_to_speed():
    assert {name for name, mode in ACTIVATION_MODES.items() if mode.quantize is not None} == set(INT8_MODE_REASONS)


def test_calibration_sources_by_name(digits_cnn):
    assert list(CALIBRATION_SOURCES) == ["sample", "random"]
    sample, random = (calibration_for(digits_cnn, name) for name in CALIBRATION_SOURCES)
    assert not sample.random and len(sample.inputs["image"]) == 64  # the sample's own, apart from its eval set
    assert random.random and random.inputs["image"].shape == (32, 1, 8, 8)


def test_one_rule_picks_the_quality_metric(digits_cnn, resnet18):
    assert metric_of(digits_cnn).name == "accuracy" and metric_of(resnet18).name == "cosine"
    assert fitting_metrics(digits_cnn) == ["accuracy", "top5", "agreement", "cosine"]
    assert fitting_metrics(resnet18) == ["cosine", "agreement"]
    assert metric_of(with_metric(digits_cnn, "agreement")).name == "agreement"
    with pytest.raises(InvalidSettingError, match="top5 needs labels .* fit cosine, agreement"):
        with_metric(resnet18, "top5")
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    outputs = np.array([[1.0, 1.0], [0.0, 2.0]])
    labelled = EvalSet({}, np.array([1, 1]))
    assert QUALITY_METRICS["accuracy"].score(reference, outputs, labelled) == 0.5  # a tie goes to class 0
    assert QUALITY_METRICS["agreement"].score(reference, outputs, None) == 1.0
    assert QUALITY_METRICS["cosine"].score(reference, outputs, None) == pytest.approx((np.sqrt(0.5) + 1) / 2)
    targets = EvalSet({}, None, np.array([[1.0, 1.0], [0.0, 1.0]]))
    assert QUALITY_METRICS["target-cosine"].score(reference, outputs, targets) == pytest.approx(1.0)


def _latency(original_ms: float, compressed_ms: float, spread: float = 0.0) -> Latency:
    """30 interleaved runs around each median, `spread` wide (seeded)."""
    rng = np.random.default_rng(1)
    before = list(original_ms + spread * (rng.random(30) - 0.5))
    after = list(compressed_ms + spread * (rng.random(30) - 0.5))
    return Latency(stats(before), stats(after), environment(1), original_ms / compressed_ms)


def test_the_measured_verdict_calls_a_difference_only_when_its_interval_is_clear_of_1():
    assert measured_effect(_latency(2.0, 1.0, 0.1)) == "faster"
    assert measured_effect(_latency(1.0, 2.0, 0.1)) == "slower"
    # the case: a median gap of 0.004 ms against a spread of 0.026 ms is noise, not "1.12x slower"
    noisy = _latency(0.033, 0.037, 0.026)
    assert measured_effect(noisy) == "no faster"
    assert measured_text(noisy).startswith("No measurable difference (0.89×; the 99% interval 0.")
    assert measured_text(noisy).endswith("× over 30 interleaved pairs does not clear 1 ± 2%).")
    assert measured_text(_latency(2.0, 1.0)) == (
        "The compressed model ran 2.00× faster (median against median; 99% interval 2.00–2.00× over 30 interleaved pairs)."
    )
    assert measured_text(_latency(1.0, 2.0), lambda text: f"**{text}**").startswith(
        "The compressed model ran **2.00× slower** (median against median; 99% interval"
    )
    assert verdict_agreement("faster", _latency(2.0, 1.0)) == "the measurement confirms it"
    assert verdict_agreement("no faster", _latency(1.0, 2.0)) == "the measurement confirms it"
    assert verdict_agreement("faster", noisy) == "the measurement contradicts it (no faster)"
    assert verdict_agreement("mixed", _latency(1.0, 2.0)) == "measured slower"


def test_each_metric_has_one_format():
    assert QUALITY_METRICS["accuracy"].format(0.99721) == "99.7%" == QUALITY_METRICS["agreement"].format(0.99721)
    assert QUALITY_METRICS["cosine"].format(0.99721) == "0.9972" and QUALITY_METRICS["top5"].format(None) == "—"
