"""Squeezelab dashboard (`streamlit run app/main.py`): widgets -> recipe -> cached engine calls -> charts.

The page fills in two steps so the charts follow the sliders quickly: first what the weights alone tell
(sparsity, histograms), then the export and what is measured by running it (size, fidelity, accuracy).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from app import cache, explore, latency, profiling, recovery, search, sidebar
from core import Latency, Model, Recipe, SqueezeError, Verdict
from core.data.quality import QUALITY_METRICS
from core.measure.describe import describe_export, shortfall
from core.measure.findings import ProfileComparison
from core.measure.report import QuantizationInfo, Report, SizeStats, WeightSummary
from core.measure.summaries import input_notes
from core.present.charts import codes_chart, histogram_chart, sparsity_chart
from core.present.html_report import render as render_html

ALL_LAYERS = "All layers"
Result = TypeVar("Result")


def load(key: str) -> Model:
    name = Path(cache.source_of(key)).name
    with st.spinner(f"Loading {name} (exported to ONNX once where needed, then cached on disk)…"):
        return cache.model(key, str(sidebar.session_folder() / "extracted"))


def user_message(error: SqueezeError, model: Model | None) -> str:
    """The engine's one line, naming a file by its name: never the server's path of an upload."""
    if model is None:
        return f"{Path(error.source).name}: {error.reason}" if error.source else error.reason
    if error.source == model.source or not error.source:
        return f"{model.name}: {error.reason}"
    return f"{Path(error.source).name}: {error.reason}"


class _Shown(Exception):
    """A user's mistake is on the page; nothing below it can be drawn."""


def or_stop(action: Callable[[], Result], model: Model | None = None) -> Result:
    """An engine call; a mistake of the user's (a bad file, settings this model cannot take) is shown as its one
    line and ends the page there, since everything below depends on the result. (Not st.stop(): a run ended by
    it keeps the state of widgets it did not draw, where ending the script normally drops it.)"""
    try:
        return action()
    except SqueezeError as error:
        st.error(user_message(error, model))
        if error.details:
            with st.expander("Details"):
                st.code(error.details, language=None, wrap_lines=True)
        raise _Shown from None


def _change(difference: float, text: str) -> str | None:
    """A metric's delta, or none at all when nothing changed (a grey "+0" arrow reads as a change)."""
    return text if difference != 0 else None


@dataclass(frozen=True)
class Headline:
    """The headline metrics' places (each an st.empty), filled as their numbers become known."""

    size: DeltaGenerator
    params: DeltaGenerator
    macs: DeltaGenerator
    quality: DeltaGenerator
    latency: DeltaGenerator


def weight_metrics(place: Headline, summary: WeightSummary) -> None:
    """Known from the weights alone, so it moves with the charts."""
    nonzero, params = summary.totals["nonzero"], summary.totals["params"]
    place.params.metric(
        "Non-zero weights",
        f"{nonzero:,}",
        _change(nonzero - params, f"{nonzero - params:+,} ({summary.totals['sparsity']:.1%} sparse)"),
        delta_color="inverse",
        help=f"of {params:,} prunable weights; removed channels count as zeros",
    )
    before, after = summary.totals["macs"], summary.totals["macs_after"]
    place.macs.metric(
        "MACs per sample",
        _format_count(after),
        _change(after - before, f"{after / before - 1:+.1%}" if before else None),
        delta_color="inverse",
        help=f"multiply-accumulates of the prunable layers as ONNX Runtime runs them (dense kernels); "
        f"original {before:,}",
    )


def _format_count(count: int) -> str:
    for size, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return str(count)


# a metric -> the headline's label and the original model's figure
HEADLINES: dict[str, tuple[str, Callable[[Report], float]]] = {
    "accuracy": ("Accuracy", lambda report: report.accuracy.original),
    "top5": ("Top-5 accuracy", lambda report: report.accuracy.top5_original),
    "target-cosine": ("Cosine to targets", lambda report: report.targets.cosine_original),
    "agreement": ("Top-1 agreement", lambda report: 1.0),
    "cosine": ("Fidelity (cosine)", lambda report: 1.0),
}


def size_metric(place: Headline, original: SizeStats, size: SizeStats) -> None:
    place.size.metric(
        "Size on disk",
        f"{size.raw / 1e6:.2f} MB",
        _change(size.raw - original.raw, f"{(size.raw / original.raw - 1):+.1%}"),
        delta_color="inverse",
        help=f"gzip: {original.gzip_text()} → {size.gzip_text()} "
        "(zeros compress; unstructured sparsity shows up here, not in the raw size)",
    )


def measured_metrics(place: Headline, model: Model, report: Report, measured: Latency | None) -> None:
    """Known once the export exists and has run."""
    size_metric(place, report.size_bytes["original"], report.size_bytes["compressed"])
    fidelity = report.fidelity
    label, original = HEADLINES[report.metric]
    judge = QUALITY_METRICS[report.metric]
    _, value = report.quality
    before = original(report)
    where = "held-out" if model.data else "made-up" if fidelity.inputs == "random" else "evaluation"
    samples = report.accuracy.samples if report.accuracy else fidelity.samples
    if samples < model.eval_samples:
        samples = f"{samples:,} of {model.eval_samples:,}"
    shown, was = judge.format(value), judge.format(before)
    if judge.percent:
        change = _change(value - before, f"{100 * (value - before):+.1f} pp")
    else:
        change = _change(round(value - before, 6), f"{value - before:+.4f}")
    measured_on = f"{QUALITY_METRICS[report.metric].help}, on {samples} {where} samples"
    meaningless = "an untrained model (random weights)" if model.trained is False else (
        "made-up inputs" if fidelity.inputs == "random" else ""
    )  # fmt: skip
    if meaningless:  # a figure, but not a result: shown in the hover, never as the headline
        place.quality.metric(
            label, "—", help=f"Not meaningful: on {meaningless}, {measured_on}, it reads {shown} (original {was})."
        )
    else:
        place.quality.metric(label, shown, change, help=f"{measured_on}; original {was}")
    missing = shortfall(report)
    if missing:
        st.warning(missing)
    correct = report.accuracy
    if correct is not None and correct.at_chance:
        st.error(
            f"Accuracy {correct.compressed:.1%} is at chance ({correct.chance:.1%} for {correct.classes} classes): "
            "the model no longer works."
        )
    if measured is None or measured.compressed is None:
        place.latency.metric("Median latency", "—", help="Press 'Measure latency'.")
    else:
        before, after = measured.original.median, measured.compressed.median
        place.latency.metric(
            "Median latency",
            f"{after:.3g} ms",
            f"{after / before - 1:+.1%}",
            delta_color="inverse",
            help=f"original {before:.3g} ms, {measured.compressed.runs} interleaved runs",
        )
    if model.trained is False:
        st.warning(
            "This model is untrained (seeded random weights): its quality figures are not meaningful; its numbers are "
            "about size and speed."
        )
    if fidelity.inputs == "random":
        st.warning(
            "  \n".join(
                [
                    "No evaluation data for this model: fidelity on seeded random inputs is not meaningful, and accuracy is "
                    "unknown. Give your data in the sidebar's Data section."
                ]
                + input_notes(model)
            )
        )


def histograms(model: Model, summary: WeightSummary) -> None:
    names = {layer.node: layer.name for layer in model.layers}
    pick, scale = st.columns([3, 1])
    chosen = pick.selectbox("Layer", [ALL_LAYERS, *names], key="histogram_layer")
    log_scale = scale.toggle("Log scale", value=True, key="histogram_log")
    key = "all" if chosen == ALL_LAYERS else names[chosen]
    title = f"Weights of {chosen.lower() if chosen == ALL_LAYERS else chosen}"
    st.plotly_chart(histogram_chart(summary.histograms[key], title, log_scale=log_scale), width="stretch")
    if summary.quantization_codes:
        st.plotly_chart(
            codes_chart(summary.quantization_codes[key], "Quantization levels", log_scale=log_scale),
            width="stretch",
        )


def show_verdict(verdict: Verdict) -> None:
    """Before anything is measured: should these settings be faster on ONNX Runtime here, and why."""
    marks = {"faster": "▲", "slower": "▼", "same": "■"}
    lines = [f"- {marks[reason.effect]} {reason.text}" for reason in verdict.reasons]
    text = f"**Expected on this CPU: {verdict.summary}.**" + ("\n" + "\n".join(lines) if lines else "")
    {"faster": st.success, "slower": st.warning}.get(verdict.expectation, st.info)(text)


def quantization_panel(model: Model, info: QuantizationInfo) -> None:
    """What was quantized and how, and which layers hurt: the per-layer SQNR, with a keep-in-float choice."""
    st.subheader("Quantization")
    st.markdown(
        f"**{info.mode}** ({info.reason}). Weights: {info.stored_as}. Activations: {info.activations}."
        + (f" Calibration: {info.calibration}." if info.calibration else "")
        + (f" SmoothQuant alpha {info.smooth_alpha}." if info.smooth_alpha else "")
    )
    if info.calibration_is_random:
        st.warning(
            "Calibrated on seeded random inputs: activation ranges may not match real data, accuracy may be off."
        )
    if info.kernel_note:
        st.warning(info.kernel_note[0].upper() + info.kernel_note[1:] + ".")
    st.multiselect(
        "Keep these layers in float",
        [layer.node for layer in model.layers],
        key="keep_float",
        help="Layers with the lowest output SQNR hurt most; keeping them in float costs some speed.",
    )
    rows = sorted(info.sqnr, key=lambda row: (row.output_db is None, row.output_db or 0.0))
    st.dataframe(
        [
            {
                "layer": row.node,
                "output SQNR (dB)": row.output_db,
                "weight SQNR (dB)": row.weight_db,
                "with pruning (dB)": row.total_db,
            }
            for row in rows
        ],
        width="stretch",
        hide_index=True,
    )
    st.caption(
        "SQNR = 10·log10(signal² / error²), ~6 dB per bit. Output and weight SQNR compare the pruned float model with "
        "the export, so they measure quantization alone (the keep-in-float choice is about them); 'with pruning' "
        "compares the original with the export, pruning's error included."
    )


def chosen_blocks(controls: sidebar.Controls) -> tuple[str, ...]:
    """The blocks picked by hand in the block panel (read before the panel is drawn), limited to this model's."""
    with st.spinner("Finding residual blocks and measuring what dropping each one costs…"):
        index = cache.prune_index(controls.source, "block", controls.prune.criterion, "layer", controls.prune.seed)
    names = [block.name for block in index.blocks]
    st.session_state.block_names = names
    chosen = [name for name in st.session_state.get("drop_blocks", []) if name in names]
    st.session_state.drop_blocks = chosen
    return tuple(chosen)


def block_panel(costs: list) -> None:
    """Every droppable residual block with what dropping it alone costs, so the user can pick."""
    st.subheader("Residual blocks")
    if not costs:
        st.info("No residual block in this graph can be dropped: none has a skip path that keeps the shapes valid.")
        return
    st.multiselect(
        "Drop exactly these blocks (overrides the amount slider)",
        st.session_state.block_names,
        key="drop_blocks",
        help="Each row below says what dropping that block alone costs, measured on the tuning data (you pick by "
        "it, so it is kept apart from the held-out data the headline accuracy is measured on).",
    )
    dropped = sum(cost.dropped for cost in costs)
    st.caption(
        f"Drops {dropped} of {len(costs)} blocks ({dropped / len(costs):.0%}): the amount is rounded to the nearest "
        "whole block, a half down, so it never drops more than half a block over what was asked."
    )
    rows = []
    for cost in costs:
        row = {"block": cost.name, "dropped": cost.dropped, "layers inside": ", ".join(cost.layers), "MACs": cost.macs}
        if cost.accuracy is not None:
            row["accuracy without it"] = f"{cost.accuracy:.1%}"
        elif cost.top1_agreement is not None:
            row["top-1 agreement without it"] = f"{cost.top1_agreement:.1%}"
        row["cosine to original without it"] = round(cost.cosine_mean, 4)
        row["importance (criterion)"] = round(cost.score, 4)
        rows.append(row)
    st.dataframe(rows, width="stretch", hide_index=True)


def layer_table(summary: WeightSummary) -> None:
    """Every prunable layer; a reason a layer was left whole comes right after its name, and numbers keep every
    digit (thousands separated, columns wide enough)."""
    whole = any(layer.left_whole for layer in summary.layers)
    rows = [
        {"layer": layer.node}
        | ({"left whole because": layer.left_whole or ""} if whole else {})
        | {
            "op": layer.op_type,
            "shape": "×".join(map(str, layer.shape)),
            "parameters": layer.params,
            "zeros": layer.zeros,
            "sparsity %": round(100 * layer.sparsity, 2),
            "bits": layer.bits,
            "channels kept": f"{layer.channels_kept} / {layer.channels}",
            "MACs": layer.macs,
            "MACs after": layer.macs_after,
            "collapsed": layer.collapsed,
        }
        for layer in summary.layers
    ]
    # widths in pixels, wide enough for their headers and for 9-digit counts (resnet18's 115,605,504 MACs);
    # tests/e2e checks the rendered table for cut figures
    count = st.column_config.NumberColumn(format="localized", width=100)
    st.dataframe(
        rows,
        width="stretch",
        hide_index=True,
        column_config={
            "layer": st.column_config.TextColumn(width="medium", help="The node's whole name: widen or hover"),
            "left whole because": st.column_config.TextColumn(width="large"),
            "shape": st.column_config.TextColumn(width=120),
            "parameters": count,
            "zeros": count,
            "MACs": st.column_config.NumberColumn(format="localized", width="medium"),
            "MACs after": st.column_config.NumberColumn(format="localized", width="medium"),
        },
    )


def _report_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=1)


def downloads(
    model: Model,
    exported: cache.Exported,
    recipe: Recipe,
    complete: Callable[[], Report],
    profiled: Callable[[], ProfileComparison | None],
) -> None:
    """Files are passed as callables, made when clicked: the browser fetches a download's bytes as soon as its
    button is drawn, and the server gzips them for it (level 9), which for resnet18's 45 MB took longer than the
    rest of a slider move."""
    stem = Path(model.name).stem
    report = exported.report
    onnx_col, recipe_col, report_col, html_col = st.columns([2, 1, 1, 1])  # the first label holds the file name
    if isinstance(exported.data, bytes):
        onnx_col.download_button(
            f"Download {stem}-squeezed.onnx ({len(exported.data) / 1e6:.2f} MB)",
            functools.partial(bytes, exported.data),  # handed over when clicked (see `downloads`)
            file_name=f"{stem}-squeezed.onnx",
            mime="application/octet-stream",
            on_click="ignore",
            key="download_onnx",
            type="primary",
        )
    else:  # over 2 GB: one protobuf cannot hold it, so the .onnx travels with its external data in a zip
        size = exported.report.size_bytes["compressed"].raw
        onnx_col.download_button(
            f"Download {stem}-squeezed.zip ({size / 1e9:.2f} GB)",
            functools.partial(cache.download_zip, exported.data),  # built when clicked, not on every rerun
            file_name=f"{stem}-squeezed.zip",
            mime="application/zip",
            on_click="ignore",
            key="download_onnx",
            type="primary",
            help="Over 2 GB: model.onnx with its weights in model.onnx.data (ONNX external data). "
            "Keep the two files together.",
        )
    recipe_col.download_button(
        "Download recipe.json",
        recipe.to_json(),
        file_name=f"{stem}-recipe.json",
        mime="application/json",
        on_click="ignore",
        key="download_recipe",
    )
    report_col.download_button(
        "Download report.json",
        lambda: _report_json(complete()),
        file_name=f"{stem}-report.json",
        mime="application/json",
        on_click="ignore",
        key="download_report",
    )
    html_col.download_button(
        "Download report.html",
        lambda: render_html(complete(), profiled()),  # 5 MB with its charts on resnet18; the profile if taken
        file_name=f"{stem}-report.html",
        mime="text/html",
        on_click="ignore",
        key="download_html",
        help="Self-contained: the settings, before/after numbers, charts, verdict and environment; opens offline.",
    )
    st.caption(
        f"This file: {describe_export(report)}.  \n"
        f"Reproduce from a shell: `python -m core compress {model.name} --apply-recipe {stem}-recipe.json --out out.onnx`"
    )


def evaluation_choice(model: Model, live: Model) -> bool:
    """Whether to judge each setting on every evaluation sample, where the page would otherwise judge it on the
    live subset (the first ones, as many as the original runs in a quarter second)."""
    if live.eval_samples >= model.eval_samples:
        return False
    return st.toggle(
        f"Judge each setting on all {model.eval_samples:,} evaluation samples (~{model.reference_seconds:.1f} s a move)",
        key="evaluate_all",
        help=f"Off, each setting is judged on the first {live.eval_samples:,} of them (a seeded random subset), so the "
        "page keeps up with the sliders. The CLI judges on all of them.",
    )


def main() -> None:
    try:
        page()
    except _Shown:
        pass


def page() -> None:
    st.set_page_config(page_title="Squeezelab", layout="wide")
    st.title("Squeezelab")
    st.caption("See what pruning and quantization do to a neural network, measured in ONNX Runtime, and export it.")
    with st.sidebar:
        controls = sidebar.render()
    model = or_stop(lambda: load(controls.source))
    prune = controls.prune
    if prune.granularity == "block":  # a model kept on disk cannot search its blocks
        prune = or_stop(lambda: replace(prune, drop_blocks=chosen_blocks(controls)), model)
    quant = controls.quant
    if quant.enabled:
        # picked in the diagnosis table further down (its value from the last run), limited to this model's layers
        nodes = [layer.node for layer in model.layers]
        st.session_state.keep_float = [name for name in st.session_state.get("keep_float", []) if name in nodes]
        quant = replace(quant, keep_float=tuple(st.session_state.keep_float))
    # an upload's source is a path on the server, which means nothing to the user
    st.markdown(f"**{model.name}**: {model.description or ('a sample' if model.is_sample else 'your upload')}")
    if model.data is not None:
        data = model.data
        st.caption(
            f"Your data ({data.tuning + data.held_out:,} samples): what tunes reads the {data.tuning:,} of the tuning "
            f"part; every accuracy and fidelity here is on the {data.held_out:,} held-out ones."
        )
    every_sample = evaluation_choice(model, cache.evaluated(controls.source))
    overrides = explore.current_overrides(model)
    if controls.overrides_note is not None:
        with controls.overrides_note:
            explore.overrides_note(model, overrides)
    recipe = or_stop(lambda: Recipe.for_model(model, prune, quant, overrides))
    recipe_json = recipe.to_json()

    metrics_box = st.container()
    with metrics_box:
        place = Headline(*(column.empty() for column in st.columns(5)))
    sparsity_col, histogram_col = st.columns(2)
    # settings this model cannot take (an old opset for quantization, say) stop here
    live = or_stop(lambda: cache.live(controls.source, recipe_json), model)
    weight_metrics(place, live.summary)
    with sparsity_col:
        original = cache.original_summary(controls.source)
        st.plotly_chart(sparsity_chart(original.layers, live.summary.layers), width="stretch")
    with histogram_col:
        histograms(model, live.summary)

    with st.spinner("Exporting and running the compressed model…"):
        bar = st.empty()

        def calibrating(fraction: float) -> None:
            bar.progress(fraction, text=f"Calibrating static int8 activations… {fraction:.0%}")

        def export() -> cache.Exported:
            try:
                return cache.exported(controls.source, recipe_json, calibrating, every_sample)
            finally:
                bar.empty()  # before the error, if any, is shown

        exported = or_stop(export, model)
    measured = latency.results().get(
        latency.result_key(controls.source, recipe_json, controls.latency_threads, controls.latency_flush)
    )
    with metrics_box:
        measured_metrics(place, model, exported.report, measured)
        show_verdict(exported.report.verdict)
    latency_box = st.container()
    if recipe.quant.enabled and exported.report.quantization:
        quantization_panel(model, exported.report.quantization)
    if prune.granularity == "block":
        index = cache.prune_index(controls.source, "block", prune.criterion, "layer", prune.seed)
        dropped = {cost.name for cost in live.compressed.blocks if cost.dropped}
        block_panel([replace(cost, dropped=cost.name in dropped) for cost in index.costs])
    st.subheader("Per-layer detail")
    layer_table(live.summary)
    # keyed: a label that changes with the count must not close it
    with st.expander(
        f"Per-layer overrides: a layer's own amount, bits, or skip ({len(overrides)} set)", key="overrides_expander"
    ):
        explore.overrides_editor(model)
    recovery.panel(model, controls.source, recipe)
    st.subheader("Export")
    downloads(
        model,
        exported,
        recipe,
        lambda: cache.complete_report(controls.source, recipe_json, measured, every_sample),
        lambda: profiling.results().get(
            profiling.result_key(controls.source, recipe_json, controls.latency_threads, controls.latency_flush)
        ),
    )
    gzip_line = st.empty()
    gzip_line.caption("Compressed with gzip: being measured…")
    st.subheader("Explore the trade-offs")
    # keyed, so the chosen tab stays chosen when a slider moves; only the open tab runs (a slider move need not
    # redraw a sweep nobody is looking at)
    scan_tab, sweep_tab, search_tab, snapshot_tab = st.tabs(
        ["Per-layer sensitivity", "Pareto sweep", "Search", "Snapshots"], key="explore_tab", on_change="rerun"
    )
    if scan_tab.open:
        with scan_tab:
            explore.sensitivity_tab(model, controls.source)
    if sweep_tab.open:
        with sweep_tab:
            explore.sweep_tab(model, controls.source)
    if search_tab.open:
        with search_tab:
            search.search_tab(model, controls.source)
    if snapshot_tab.open:
        with snapshot_tab:
            report = replace(exported.report, latency_ms=measured) if measured else exported.report
            explore.snapshots_tab(model, recipe, report)
    with latency_box:
        latency.panel(
            controls.source,
            recipe_json,
            controls.latency_budget_s,
            controls.latency_threads,
            controls.latency_flush,
            controls.measure_latency,
            exported.report.verdict.expectation,
        )
        profiling.panel(
            controls.source,
            recipe_json,
            controls.latency_threads,
            controls.latency_flush,
            exported.report.verdict.expectation,
        )
    gzip_size(place, gzip_line, controls.source, recipe_json, every_sample, exported.report.size_bytes["original"])


def gzip_size(
    place: Headline, line: DeltaGenerator, source: str, recipe_json: str, every_sample: bool, original: SizeStats
) -> None:
    """Last on the page: the export's gzip size (0.7 s on resnet18: longer than the rest of a slider move), in the
    Export section and the size metric's hover. It is taken a slice at a time with its progress shown, so a slider
    moved meanwhile stops it within one slice."""

    def measuring(fraction: float) -> None:
        line.progress(fraction, text=f"Measuring the export's gzip size… {fraction:.0%}")

    size = cache.gzip_size(source, recipe_json, measuring, every_sample)
    size_metric(place, original, size)
    if size.gzip is None:
        line.caption(f"Compressed with gzip: {size.gzip_text()}.")
    else:
        line.caption(
            f"Compressed with gzip (level 1): {size.gzip / 1e6:.2f} MB, {size.gzip / size.raw:.0%} of the file "
            f"(the original: {original.gzip_text()}). Zeros compress: unstructured sparsity shows up here."
        )


# Streamlit runs this file as __main__; a sandbox child (multiprocessing's spawn) imports it as __mp_main__ and
# must not draw the page again: it did, once per child, and each run logged hundreds of "missing
# ScriptRunContext" warnings.
if __name__ == "__main__":
    main()
