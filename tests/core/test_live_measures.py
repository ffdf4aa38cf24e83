"""What the page measures on every slider move, made cheap without changing what it measures: histograms and
non-zero counts from one sort per layer, the gzip size in slices that can be stopped, and a live evaluation subset."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from core import PruneConfig, QuantConfig, Recipe, build_report, compress, export_bytes, prepare_index
from core.data.quality import Accuracy
from core.measure import summaries


def test_histograms_and_zero_counts_match_numpys_own(resnet18):
    # 30 % of channels and a 4-bit grid: zeros, removed channels and values on the grid's edges all counted
    recipe = Recipe(PruneConfig(0.3, "l1", "global", 0, "channel"), QuantConfig(4))
    compressed = compress(resnet18, recipe, prepare_index(resnet18, recipe))
    summary = summaries.summarize_weights(compressed)
    before = summaries.original_histograms(resnet18)
    overall = np.zeros(summaries.HISTOGRAM_BINS, np.int64)
    for name, values in compressed.weights.items():
        assert summary.histograms[name].compressed == np.histogram(values, before[name].edges)[0].tolist()
        overall += np.histogram(values, before["all"].edges)[0]
    assert summary.histograms["all"].compressed == overall.tolist()
    assert summary.totals["nonzero"] == sum(int(np.count_nonzero(values)) for values in compressed.weights.values())


def test_the_gzip_size_in_slices_is_within_a_twentieth_of_a_percent_of_one_stream(resnet18, monkeypatch):
    compressed = compress(resnet18, Recipe(PruneConfig(0.5)), None)
    data = export_bytes(compressed)[: 24 * 1024**2]  # six slices: three rounds on 2 cores
    heard = []
    sliced = summaries.size_of(data, heard.append)
    whole = len(zlib.compress(data, summaries.GZIP_LEVEL))
    assert sliced.raw == len(data) and abs(sliced.gzip - whole) / whole < 5e-4
    assert heard == sorted(heard) and heard[-1] == 1.0 and len(heard) == -(-6 // summaries.default_threads())

    class Moved(Exception):
        pass

    def stop(fraction: float) -> None:
        raise Moved  # what a page does when the user moves a slider meanwhile

    with pytest.raises(Moved):
        summaries.size_of(data, stop)


def test_a_report_without_gzip_says_it_is_being_measured(digits_cnn):
    compressed = compress(digits_cnn, Recipe(PruneConfig(0.5)), None)
    data = export_bytes(compressed)
    report = build_report(compressed, data, gzip=False)
    assert report.size_bytes["compressed"].raw == len(data)
    assert report.size_bytes["compressed"].gzip_text() == "being measured"
    assert build_report(compressed, data).size_bytes["compressed"].gzip == summaries.size_of(data).gzip


def test_the_live_subset_is_the_first_samples_and_the_report_says_so(digits_cnn):
    everything = digits_cnn.evaluated_within(seconds=1e9, at_least=8)
    assert everything is digits_cnn  # all 359 digits run in far less: judged on all of them
    live = digits_cnn.evaluated_within(seconds=1e-9, at_least=50)  # no time at all: the 50 asked for
    assert live.eval_samples == 50 and digits_cnn.eval_samples == 359
    compressed = compress(digits_cnn, Recipe(PruneConfig(0.6, "l1", "global", 0, "channel")), None)
    data = export_bytes(compressed)
    report = build_report(compressed, data, judged_on=live)
    predicted = digits_cnn.outputs_of(data)[0].argmax(-1)
    labels = digits_cnn.eval_set.labels
    assert isinstance(report.accuracy, Accuracy) and report.accuracy.samples == 50
    assert report.accuracy.compressed == pytest.approx(np.mean(predicted[:50] == labels[:50]))
    assert report.accuracy.original == pytest.approx(
        np.mean(digits_cnn.reference_outputs[0][:50].argmax(-1) == labels[:50])
    )
    assert "Accuracy and fidelity are on the first 50 of 359 evaluation samples" in " ".join(report.notes)
    full = build_report(compressed, data)
    assert full.accuracy.samples == 359 and not any("first 50" in note for note in full.notes)
