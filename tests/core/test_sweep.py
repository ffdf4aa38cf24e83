from __future__ import annotations

import csv

import pytest

from core import InvalidSettingError
from core.cli import main
from core.explore.sweep import best_on_front, pareto_front, sweep


def test_pareto_front_by_hand():
    # (quality, cost): b beats a on both; c is the cheapest; d is the best; e ties d on quality but costs more
    points = [(0.90, 5.0), (0.95, 4.0), (0.80, 1.0), (0.99, 9.0), (0.99, 10.0)]
    assert pareto_front(points) == [False, True, True, True, False]
    # with noise: d's and e's costs overlap, so they tie and e (the same quality) joins the front; b still beats a
    # (better quality at a cost within noise)
    spans = [(4.5, 5.5), (3.5, 5.2), (0.9, 1.1), (8.0, 10.5), (9.5, 11.0)]
    assert pareto_front(points, spans) == [False, True, True, True, True]


def _dominates(a, b, span) -> bool:
    """a beats b: no worse on quality, its cost not worse beyond noise, and better on one of them."""
    (a_low, a_high), (b_low, b_high) = span(a), span(b)
    return a.quality >= b.quality and a_low <= b_high and (a.quality > b.quality or a_high < b_low)


def test_the_sweeps_fronts_are_non_dominated_and_complete(digits_mlp_points):
    points = digits_mlp_points
    assert len(points) == 3 * 3 and {point.metric for point in points} == {"accuracy"}
    noise = (lambda p: (1 / p.speedup_interval[1], 1 / p.speedup_interval[0]), "front_latency")
    for span, flag in (noise, (lambda p: (p.size_bytes, p.size_bytes), "front_size")):
        for point in points:
            beaten = any(_dominates(other, point, span) for other in points if other is not point)
            assert getattr(point, flag) == (not beaten)
    assert all(point.speedup > 0 and point.original_latency_ms > 0 for point in points)
    assert all(low <= point.speedup <= high for point in points for low, high in [point.speedup_interval])
    assert best_on_front(points).front_latency


@pytest.fixture(scope="module")
def digits_mlp_points():
    from core import load_model

    return sweep(load_model("digits-mlp"), [0.0, 0.5, 0.9], [32, 8, 4], budget_s=0.05)


def test_a_cancelled_sweep_keeps_the_finished_points(digits_cnn):
    done = []
    points = sweep(
        digits_cnn, [0.0, 0.5], [32, 8], budget_s=0.02, progress=done.append, should_stop=lambda: len(done) >= 3
    )
    assert len(points) == 3 and [(p.amount, p.bits) for p in points] == [(0.0, 32), (0.0, 8), (0.5, 32)]


def test_settings_are_checked_before_any_work(digits_cnn):
    with pytest.raises(InvalidSettingError, match="weight bits must be 2-8, or 32 for off; got 12"):
        sweep(digits_cnn, [0.0], [12])


def test_the_cli_writes_csv(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    assert (
        main(["sweep", "digits-mlp", "--prune", "0,0.5", "--bits", "32,8", "--budget", "0.02", "--csv", str(out)]) == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and {"amount", "bits", "quality", "latency_ms", "front_latency"} <= rows[0].keys()
    assert float(rows[0]["speedup_low"]) <= float(rows[0]["speedup"]) <= float(rows[0]["speedup_high"])
    assert "suggested:" in capsys.readouterr().out
