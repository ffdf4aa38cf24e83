from __future__ import annotations

from core.measure.benchmark import stats
from core.measure.report import CodeCounts, Histogram, LayerStats
from core.present.charts import (
    COLLAPSED,
    COMPRESSED,
    ORIGINAL,
    codes_chart,
    histogram_chart,
    latency_chart,
    sparsity_chart,
)


def _layer(node: str, zeros: int, params: int = 100, kept: int = 10, reason: str | None = None) -> LayerStats:
    return LayerStats(
        node,
        node,
        "Conv",
        [10, 10],
        params,
        zeros,
        zeros / params,
        32,
        1000,
        zeros == params,
        shape_after=[kept, 10],
        channels=10,
        channels_kept=kept,
        macs_after=100 * kept,
        left_whole=reason,
    )


def test_sparsity_chart_keeps_graph_order_and_marks_collapsed_layers():
    original = [_layer("a", 0), _layer("b", 0), _layer("c", 5)]
    compressed = [_layer("a", 50), _layer("b", 100), _layer("c", 60)]
    figure = sparsity_chart(original, compressed)
    before, after = figure.data
    assert list(after.x) == ["a", "b", "c"] and list(after.y) == [50.0, 100.0, 60.0]
    assert list(before.y) == [0.0, 0.0, 5.0] and before.marker.color == ORIGINAL
    assert list(after.marker.color) == [COMPRESSED, COLLAPSED, COMPRESSED]
    assert [annotation.x for annotation in figure.layout.annotations] == ["b"]
    assert "1 layer(s) collapsed" in figure.layout.title.text
    assert "%{customdata[2]:,} of %{customdata[3]:,} weights zero or removed" in after.hovertemplate
    assert after.text is None  # no channel labels when no channel was removed


def test_sparsity_chart_labels_kept_channels_and_why_layers_stayed_whole():
    original = [_layer("a", 0), _layer("b", 0)]
    compressed = [_layer("a", 50, kept=5), _layer("b", 0, reason="is part of the graph output 'y'")]
    after = sparsity_chart(original, compressed).data[1]
    assert list(after.text) == ["5/10", "10/10"]
    assert [row[4] for row in after.customdata] == ["5 of 10", "10 of 10"]
    assert after.customdata[1][5] == "left whole: is part of the graph output 'y'"


def test_histogram_chart_overlays_both_on_the_same_bins():
    histogram = Histogram(edges=[-1.0, -0.5, 0.0, 0.5, 1.0], original=[1, 4, 4, 1], compressed=[0, 0, 10, 0])
    figure = histogram_chart(histogram, "Weights", log_scale=True)
    compressed, original = figure.data
    assert list(compressed.x) == list(original.x) == [-0.75, -0.25, 0.25, 0.75]
    assert list(compressed.y) == [0, 0, 10, 0] and list(original.y) == [1, 4, 4, 1]
    assert compressed.marker.color == COMPRESSED and original.line.color == ORIGINAL
    assert figure.layout.yaxis.type == "log"
    assert histogram_chart(histogram, "Weights", log_scale=False).layout.yaxis.type == "linear"


def test_codes_chart_counts_the_levels_in_use():
    figure = codes_chart(CodeCounts([-3, -2, -1, 0, 1, 2, 3], [0, 2, 5, 9, 5, 2, 1], 3), "Levels", log_scale=False)
    assert list(figure.data[0].y) == [0, 2, 5, 9, 5, 2, 1]
    assert figure.layout.title.text == "Levels: 6 of 7 levels of the 3-bit grid in use"


def test_latency_chart_shows_every_run_of_both_models():
    original, compressed = stats([2.0, 2.2, 2.1, 9.0]), stats([1.0, 1.1, 1.2, 1.05])
    figure = latency_chart(original, compressed)
    assert [list(trace.y) for trace in figure.data] == [[2.0, 2.2, 2.1, 9.0], [1.0, 1.1, 1.2, 1.05]]
    assert [trace.boxpoints for trace in figure.data] == ["all", "all"]
    assert [trace.marker.color for trace in figure.data] == [ORIGINAL, COMPRESSED]
    assert "4 interleaved runs" in figure.layout.title.text


def test_long_layer_names_are_shortened_distinctly_and_kept_whole_in_the_hover():
    from core.present.charts import short_names

    names = [f"/encoder/encoder/layer.{index}/attention/self/query/MatMul" for index in range(3)]
    names += ["/fc/Gemm", "/encoder/encoder/layer.0/output/dense/MatMul"]
    shown = short_names(names)
    assert shown[3] == "/fc/Gemm" and len(set(shown)) == len(names)
    assert shown[4] == "…/output/dense/MatMul"  # 21 characters: fits 28
    assert shown[0] == "…/layer.0/attention/self/query/MatMul"  # longer, as it takes to tell layer.0 from layer.1
