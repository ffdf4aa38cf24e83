"""Chart builders: pure functions from the engine's typed results to plotly figures, used by the dashboard and the
HTML report, testable without a server.

Original and compressed keep the same colours in every chart. Both colours are mid-tone so they read on the
light and the dark theme; backgrounds stay transparent so the theme shows through.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from core.data.quality import QUALITY_METRICS
from core.measure.report import CodeCounts, Histogram, LatencyStats, LayerStats

ORIGINAL = "#4C78A8"  # blue
COMPRESSED = "#F58518"  # orange
COLLAPSED = "#E45756"  # red: a layer whose weights are all zero
GAIN = "#54A24B"  # green: the held-out quality recovery wins back
ORIGINAL_LABEL, COMPRESSED_LABEL = "original", "compressed"


def _layout(figure: go.Figure, title: str, **axes) -> go.Figure:
    figure.update_layout(
        title=title,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        hoverlabel={"namelength": -1},
        **axes,
    )
    figure.update_xaxes(gridcolor="rgba(128,128,128,0.25)")
    figure.update_yaxes(gridcolor="rgba(128,128,128,0.25)")
    return figure


SHORT_NAME = 28  # characters of a layer's name on an axis; the whole name is in the hover


def short_names(names: list[str], limit: int = SHORT_NAME) -> list[str]:
    """Each name cut to its last path parts that fit `limit` ("…/layer.3/output/dense/MatMul"), as many more as it
    takes to keep every name distinct; a name that fits stays whole."""
    parts = [name.strip("/").split("/") for name in names]
    kept = [1] * len(names)
    for index in range(len(names)):
        while kept[index] < len(parts[index]) and len("/".join(parts[index][-kept[index] - 1 :])) + 2 <= limit:
            kept[index] += 1
    while True:
        shown = [
            name if len(name) <= limit or count >= len(part) else "…/" + "/".join(part[-count:])
            for name, part, count in zip(names, parts, kept, strict=True)
        ]
        clashes = {label for label in shown if shown.count(label) > 1}
        if not clashes:
            return shown
        for index, label in enumerate(shown):
            if label in clashes and kept[index] < len(parts[index]):
                kept[index] += 1
        if all(kept[i] >= len(parts[i]) for i, label in enumerate(shown) if label in clashes):
            return names  # only the whole names tell them apart


def sparsity_chart(original: list[LayerStats], compressed: list[LayerStats]) -> go.Figure:
    """Per-layer sparsity in graph order, original against compressed; removed channels are labelled on the bars,
    collapsed layers are red. Long layer names are shortened on the axis and whole in the hover."""
    names = short_names([layer.node for layer in compressed])
    hover = "<b>%{customdata[6]}</b><br>%{customdata[0]} %{customdata[1]}<br>%{customdata[2]:,} of %{customdata[3]:,} weights zero "
    hover += "or removed<br>channels kept: %{customdata[4]}<br>%{customdata[5]}<extra>%{fullData.name}</extra>"

    def custom(layers: list[LayerStats]) -> list[list]:
        return [
            [
                layer.op_type,
                "x".join(map(str, layer.shape_after or layer.shape)),
                layer.zeros,
                layer.params,
                f"{layer.channels_kept} of {layer.channels}",
                f"left whole: {layer.left_whole}" if layer.left_whole else "",
                layer.node,
            ]
            for layer in layers
        ]

    structured = any(layer.channels_kept < layer.channels for layer in compressed)
    figure = go.Figure()
    figure.add_bar(
        x=names,
        y=[100 * layer.sparsity for layer in original],
        name=ORIGINAL_LABEL,
        marker_color=ORIGINAL,
        customdata=custom(original),
        hovertemplate=hover,
    )
    colours = [COLLAPSED if layer.collapsed else COMPRESSED for layer in compressed]
    figure.add_bar(
        x=names,
        y=[100 * layer.sparsity for layer in compressed],
        name=COMPRESSED_LABEL,
        marker={"color": colours, "line": {"color": colours, "width": 2}},
        text=[f"{layer.channels_kept}/{layer.channels}" for layer in compressed] if structured else None,
        textposition="outside",
        customdata=custom(compressed),
        hovertemplate=hover,
    )
    for name, layer in zip(names, compressed, strict=True):
        if layer.collapsed:
            figure.add_annotation(x=name, y=100, text="collapsed", showarrow=False, yshift=10, font_color=COLLAPSED)
    collapsed = sum(layer.collapsed for layer in compressed)
    title = "Per-layer sparsity" + (" (labels: channels kept / original)" if structured else "")
    title += f" — {collapsed} layer(s) collapsed to all-zero" if collapsed else ""
    return _layout(
        figure,
        title,
        barmode="group",
        yaxis={"title": "weights zero or removed (%)", "range": [0, 112]},
        xaxis={"title": None, "tickangle": -45 if len(names) > 6 else 0},
    )


def histogram_chart(histogram: Histogram, title: str, *, log_scale: bool) -> go.Figure:
    """Original and compressed weight values on the same bin edges, overlaid."""
    edges = np.asarray(histogram.edges)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    ranges = [f"[{low:.4g}, {high:.4g})" for low, high in zip(edges[:-1], edges[1:], strict=True)]
    figure = go.Figure()
    # Compressed as filled bars, original as an outline on top: both stay readable where they overlap.
    figure.add_bar(
        x=centres,
        y=histogram.compressed,
        width=widths,
        name=COMPRESSED_LABEL,
        marker_color=COMPRESSED,
        opacity=0.75,
        customdata=ranges,
        hovertemplate="weights in %{customdata}: %{y:,}<extra>compressed</extra>",
    )
    figure.add_scatter(
        x=centres,
        y=histogram.original,
        name=ORIGINAL_LABEL,
        mode="lines",
        line={"color": ORIGINAL, "width": 2, "shape": "hvh"},
        customdata=ranges,
        hovertemplate="weights in %{customdata}: %{y:,}<extra>original</extra>",
    )
    return _layout(
        figure,
        title,
        barmode="overlay",
        bargap=0,
        xaxis={"title": "weight value"},
        yaxis={"title": "weights" + (" (log scale)" if log_scale else ""), "type": "log" if log_scale else "linear"},
    )


def codes_chart(codes: CodeCounts, title: str, *, log_scale: bool) -> go.Figure:
    """How many weights land on each level of the n-bit grid: the quantization levels, made visible."""
    bits = codes.bits
    figure = go.Figure()
    figure.add_bar(
        x=codes.codes,
        y=codes.counts,
        name=COMPRESSED_LABEL,
        marker_color=COMPRESSED,
        hovertemplate="code %{x} (× channel scale): %{y:,} weights<extra></extra>",
    )
    used = sum(count > 0 for count in codes.counts)
    return _layout(
        figure,
        f"{title}: {used} of {len(codes.codes)} levels of the {bits}-bit grid in use",
        xaxis={"title": "integer code (weight = code × per-channel scale)", "dtick": 1 if bits <= 5 else None},
        yaxis={"title": "weights" + (" (log scale)" if log_scale else ""), "type": "log" if log_scale else "linear"},
        showlegend=False,
    )


def latency_chart(original: LatencyStats, compressed: LatencyStats) -> go.Figure:
    """Every interleaved run of both models as a box with the points, so spread and outliers are visible."""
    figure = go.Figure()
    for stats, label, colour in ((original, ORIGINAL_LABEL, ORIGINAL), (compressed, COMPRESSED_LABEL, COMPRESSED)):
        figure.add_box(
            y=stats.samples,
            name=f"{label}<br>median {stats.median:.3g} ms",
            marker_color=colour,
            boxpoints="all",
            jitter=0.4,
            pointpos=0,
            marker={"size": 4, "opacity": 0.5},
            hovertemplate="%{y:.4g} ms<extra>" + label + "</extra>",
        )
    return _layout(
        figure,
        f"ONNX Runtime latency per run, {original.runs} interleaved runs each",
        # log scale: a few slow outliers (another process took the CPU) stay visible without flattening the boxes
        yaxis={"title": "ms per batch-1 inference (log scale)", "type": "log"},
        showlegend=False,
    )


OP_TYPES_SHOWN = 8  # op types with their own colour in the time chart; the rest are summed as "other"


def op_time_chart(comparison) -> go.Figure:
    """Time per run by op type, the original beside the export, stacked; the time outside the kernels on top."""
    shown = comparison.op_types[:OP_TYPES_SHOWN]
    rest = comparison.op_types[OP_TYPES_SHOWN:]
    rows = [*shown, ("other", sum(r[1] for r in rest), sum(r[2] for r in rest))] if rest else list(shown)
    outside = (comparison.original.outside_ms, comparison.compressed.outside_ms)
    rows.append(("outside the kernels", *outside))
    figure = go.Figure()
    labels = [ORIGINAL_LABEL, COMPRESSED_LABEL]
    for op, before, after in rows:
        figure.add_bar(x=labels, y=[before, after], name=op, hovertemplate=f"{op}: %{{y:.3f}} ms<extra></extra>")
    figure = _layout(figure, "Where the time goes: ms per run by op type (after ONNX Runtime's fusions)",
                     barmode="stack", yaxis={"title": "ms per run"})  # fmt: skip
    # beside the bars, not above them: a dozen op types would cover the title
    return figure.update_layout(legend={"orientation": "v", "yanchor": "top", "y": 1.0, "xanchor": "left", "x": 1.02,
                                        "traceorder": "reversed"})  # fmt: skip


def sensitivity_heatmap(
    layers: list[str], settings: list[str], drops: list[list[float | None]], metric: str
) -> go.Figure:
    """Layers x settings, coloured by how much quality each costs alone."""
    figure = go.Figure(
        go.Heatmap(
            z=[[None if drop is None else drop for drop in row] for row in drops],
            x=settings,
            y=layers,
            colorscale="OrRd",
            zmin=0,
            colorbar={"title": f"{metric} drop"},
            hovertemplate="%{y}<br>%{x}: drop %{z:.4f}<extra></extra>",
        )
    )
    return _layout(
        figure,
        f"Sensitivity: {metric} caused by each layer alone, on the tuning data",
        yaxis={"autorange": "reversed", "title": None},
        xaxis={"title": None},
        height=max(320, 22 * len(layers) + 140),
    )


def sensitivity_curves(
    layers: list[str], settings: list[str], drops: list[list[float | None]], metric: str
) -> go.Figure:
    """One line per layer: its drop against the pruning amount."""
    columns = [index for index, setting in enumerate(settings) if setting.startswith("prune ")]
    amounts = [float(settings[index].split()[1]) for index in columns]
    figure = go.Figure()
    for layer, row in zip(layers, drops, strict=True):
        figure.add_scatter(
            x=amounts, y=[row[index] for index in columns], mode="lines+markers", name=layer,
            hovertemplate=f"{layer}<br>amount %{{x}}: drop %{{y:.4f}}<extra></extra>",
        )  # fmt: skip
    return _layout(figure, "Per-layer curves", xaxis={"title": "pruning amount"}, yaxis={"title": f"{metric} drop"})


def pareto_chart(points: list, cost: str) -> go.Figure:
    """Quality against latency or size; the front drawn as a line, every point clickable (its index into `points`
    is its customdata, whichever trace it is in)."""
    values = [point.latency_ms if cost == "latency" else point.size_bytes / 1e6 for point in points]
    on_front = [point.front_latency if cost == "latency" else point.front_size for point in points]
    unit = "ms" if cost == "latency" else "MB"
    metric = points[0].metric if points else "cosine"
    percent = QUALITY_METRICS[metric].percent if metric in QUALITY_METRICS else False
    y_format = ".1%" if percent else ".4f"
    figure = go.Figure()
    for name, color, wanted in (("on the front", COMPRESSED, True), ("beaten", ORIGINAL, False)):
        chosen = [index for index, flag in enumerate(on_front) if flag == wanted]
        if not chosen:
            continue
        figure.add_scatter(
            x=[values[index] for index in chosen], y=[points[index].quality for index in chosen], mode="markers",
            name=name, customdata=chosen, text=[_sweep_label(points[index], cost) for index in chosen],
            marker={"color": color, "size": 11},
            hovertemplate=f"%{{text}}<br>{metric} %{{y:{y_format}}}<br>%{{x:.4g}} {unit}<extra></extra>",
        )  # fmt: skip
    front = sorted((value, point.quality) for value, point, flag in zip(values, points, on_front, strict=True) if flag)
    figure.add_scatter(
        x=[value for value, _ in front], y=[quality for _, quality in front], mode="lines", name="Pareto front",
        line={"color": COMPRESSED, "dash": "dot"}, hoverinfo="skip",
    )  # fmt: skip
    title = "median latency (ms)" if cost == "latency" else "size on disk (MB)"
    yaxis = {"title": metric} | ({"tickformat": ".0%"} if percent else {})
    return _layout(figure, f"{metric} against {cost}", xaxis={"title": title}, yaxis=yaxis)


def _sweep_label(point, cost: str) -> str:
    label = f"{point.granularity} {point.amount:g}, {'float' if point.bits == 32 else f'{point.bits}-bit'}"
    if cost == "latency":
        low, high = point.speedup_interval
        label += f"<br>{point.speedup:.2f}× the original's speed (99% interval {low:.2f}–{high:.2f}×)"
    return label


def comparison_sparsity_chart(named_layers: dict[str, list[dict]]) -> go.Figure:
    """Per-layer sparsity of several snapshots side by side (layers as stored in their reports)."""
    figure = go.Figure()
    for name, layers in named_layers.items():
        figure.add_bar(
            x=[layer["node"] for layer in layers], y=[100 * layer["sparsity"] for layer in layers], name=name,
            hovertemplate="%{x}<br>%{y:.1f} % zero or removed<extra>" + name + "</extra>",
        )  # fmt: skip
    return _layout(
        figure, "Per-layer sparsity by snapshot", barmode="group", yaxis={"title": "weights zero or removed (%)"}
    )


def comparison_latency_chart(named_samples: dict[str, list[float]]) -> go.Figure:
    figure = go.Figure()
    for name, samples in named_samples.items():
        figure.add_box(
            y=samples, name=name, boxpoints="all", jitter=0.4, pointpos=0, marker={"size": 4, "opacity": 0.5}
        )
    return _layout(
        figure,
        "Latency of each snapshot's export (runs)",
        yaxis={"title": "ms (log scale)", "type": "log"},
        showlegend=False,
    )


def recovery_chart(
    curve: list[tuple[int, float, float, float]], best_step: int | None, metric: str, percent: bool
) -> go.Figure:
    """Recovery's loss per step, on the batches it trained on and on the tuning part's validation slice that picks
    the checkpoint kept (marked, once there is one), with the held-out `metric` on its own axis: watched, never
    used to choose."""
    steps = [point[0] for point in curve]
    figure = go.Figure()
    figure.add_scatter(
        x=steps[1:], y=[point[1] for point in curve[1:]], name="training batch loss", mode="lines",
        line_color=ORIGINAL, hovertemplate="step %{x}<br>loss %{y:.4g}<extra>training batch</extra>",
    )  # fmt: skip
    figure.add_scatter(
        x=steps, y=[point[2] for point in curve], name="validation loss (tuning part)", mode="lines+markers",
        line_color=COMPRESSED, hovertemplate="step %{x}<br>loss %{y:.4g}<extra>validation</extra>",
    )  # fmt: skip
    quality = [point[3] if len(point) > 3 else math.nan for point in curve]
    if any(not math.isnan(value) for value in quality):
        figure.add_scatter(
            x=steps, y=quality, name=f"{metric} (held-out part)", mode="lines+markers", yaxis="y2",
            line={"color": GAIN, "dash": "dash"},
            hovertemplate=f"step %{{x}}<br>{metric} %{{y:{'.1%' if percent else '.4f'}}}<extra>held out</extra>",
        )  # fmt: skip
    if best_step is not None:
        figure.add_vline(x=best_step, line_dash="dot", annotation_text="kept", annotation_position="top")
    return _layout(
        figure,
        "Recovery: loss and held-out quality per step",
        xaxis={"title": "step"},
        yaxis={"title": "loss", "type": "log"},
        yaxis2={"title": f"held-out {metric}", "overlaying": "y", "side": "right", "showgrid": False,
                "tickformat": ".1%" if percent else None},
    )  # fmt: skip


def search_chart(
    trials: list, front: set[int], limit: float, metric: str, percent: bool, unit: str, objective: str
) -> go.Figure:
    """Every search trial, its objective against its quality on the tuning batch: the constraint as a line, the
    trials that meet it apart from those that do not, and the Pareto front highlighted. Each point's trial number is
    its customdata, so a click can load it."""
    figure = go.Figure()
    y_format = ".1%" if percent else ".4f"
    groups = (
        ("Pareto front", COMPRESSED, lambda trial: trial.number in front),
        ("meets the constraint", ORIGINAL, lambda trial: trial.feasible and trial.number not in front),
        ("misses it", COLLAPSED, lambda trial: not trial.feasible and trial.number not in front),
    )
    for name, color, wanted in groups:
        chosen = [trial for trial in trials if wanted(trial) and math.isfinite(trial.cost)]
        if not chosen:
            continue
        figure.add_scatter(
            x=[trial.cost for trial in chosen], y=[trial.quality for trial in chosen], mode="markers", name=name,
            customdata=[trial.number for trial in chosen], marker={"color": color, "size": 9 if name == groups[0][0] else 7},
            hovertemplate=f"trial %{{customdata}}<br>{metric} %{{y:{y_format}}}<br>%{{x:.4g}} {unit}<extra></extra>",
        )  # fmt: skip
    figure.add_hline(y=limit, line_dash="dash", annotation_text="constraint", annotation_position="bottom right")
    yaxis = {"title": f"{metric} (tuning batch)"} | ({"tickformat": ".1%"} if percent else {})
    return _layout(figure, f"Search: {metric} against {objective}", xaxis={"title": f"{objective} ({unit})"},
                   yaxis=yaxis)  # fmt: skip
