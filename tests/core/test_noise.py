"""The one rule for noise: a speed-up is called only when its interval from the interleaved pairs is clear of 1."""

from __future__ import annotations

import numpy as np

from core.measure.benchmark import compare_latency
from core.measure.noise import effect, overlap, speedup_interval
from core.measure.verdict import measured_effect
from tests.graphs import conv_gemm_model


def test_an_a_a_comparison_finds_no_measurable_difference_in_19_of_20_runs():
    """The same model against itself, 20 times: a rule that calls noise a result fails here."""
    model = conv_gemm_model().SerializeToString()
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    verdicts = [
        measured_effect(compare_latency(model, model, feeds, threads=1, min_runs=30, max_runs=30, budget_s=0.0))
        for _ in range(20)
    ]
    assert verdicts.count("no faster") >= 19, verdicts


def test_the_interval_is_paired_and_seeded():
    original = [1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 0.95, 1.05]
    low, high = speedup_interval(original, [value / 2 for value in original])
    assert low == high == 2.0  # every pair halved: no doubt at all
    assert speedup_interval(original, original[::-1]) == speedup_interval(original, original[::-1])
    assert effect(*speedup_interval(original, original[::-1])) == "no faster"
    assert effect(1.03, 1.10) == "faster" and effect(0.8, 0.95) == "slower" and effect(0.99, 1.3) == "no faster"
    assert effect(1.01, 1.04) == "no faster"  # clear of 1, but by less than two sessions of one model differ
    assert overlap((1.0, 1.2), (1.15, 1.4)) and not overlap((1.0, 1.1), (1.15, 1.4))


def test_snapshots_state_speed_by_the_same_rule():
    from core.explore.snapshots import measured_speed

    assert measured_speed({"latency_ms": {"speedup": 1.12, "speedup_interval": [0.9, 1.3]}}) == (
        "no measurable difference (1.12×)"
    )
    assert measured_speed({"latency_ms": {"speedup": 2.0, "speedup_interval": [1.8, 2.2]}}) == "2.00× faster"
    assert measured_speed({"latency_ms": {"speedup": 0.5, "speedup_interval": [0.45, 0.55]}}) == "2.00× slower"
    assert measured_speed({"latency_ms": None}) == ""
