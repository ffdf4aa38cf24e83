"""The "Recover accuracy" panel: the current settings' export trained back towards the original on the tuning part,
with its progress, its loss per step, the held-out figure before and after, and its download."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from app import cache
from core import Model, Recipe, SqueezeError
from core.compression.recipe import RecoverConfig
from core.compression.recover import MAX_TUNING_SAMPLES
from core.compression.recovery import RECOVERY_METHODS
from core.data.quality import QUALITY_METRICS
from core.onnx.inputs import sample_count
from core.present.charts import recovery_chart

SECONDS = (5, 300)  # the budget slider's range
DEFAULT_METHOD = "distill"  # wins the most back; correct is the quick first try


def panel(model: Model, source: str, recipe: Recipe) -> None:
    st.subheader("Recover accuracy")
    _, apart = model.tuning_part(0)
    if not apart:
        st.info(
            "Recovery trains on a tuning part kept apart from the held-out data every accuracy is measured on, and "
            "this model has none: give your data in the sidebar's Data section."
        )
        return
    method_col, seconds_col, button_col = st.columns([2, 2, 1])
    names = [name for name, method in RECOVERY_METHODS.items() if not method.needs_labels or _labelled(model)]
    method = method_col.selectbox(
        "Method",
        names,
        index=names.index(DEFAULT_METHOD),
        key="recover_method",
        help="\n\n".join(f"**{n}**: {RECOVERY_METHODS[n].description}" for n in names),
    )
    seconds = seconds_col.slider("Training time (s)", *SECONDS, 60, 5, key="recover_seconds")
    wanted = replace(recipe, recover=RecoverConfig(method, float(seconds)))
    recipe_json = wanted.to_json()
    if button_col.button("Recover", key="run_recovery", type="primary", help="Trains in this page; any other "
                         "control stops it (nothing is kept then)."):  # fmt: skip
        bar = st.progress(0.0, text="Recovering…")
        try:
            cache.recovered(
                source, recipe_json, lambda done: bar.progress(done, text=f"Recovering ({method})… {done:.0%}")
            )
        except SqueezeError as error:
            st.error(f"{model.name}: {error.reason}")
        finally:
            bar.empty()
    result = cache.recovered_before(source, recipe_json)
    if result is None:
        part, _ = model.tuning_part(MAX_TUNING_SAMPLES)
        st.caption(
            f"Trains the compressed model on the {sample_count(part.inputs, model.batch_axes):,} tuning samples (never "
            "the held-out ones): pruned weights stay zero, removed channels stay removed, quantized weights stay on "
            "their grid."
        )
        return
    _show(model, result, wanted)


def _labelled(model: Model) -> bool:
    return model.tuning_part(1)[0].labels is not None


def _show(model: Model, result: cache.Exported, recipe: Recipe) -> None:
    report, info = result.report, result.report.recovery
    judge = QUALITY_METRICS[info.metric]
    _, after = report.quality
    done = (
        f"after {info.steps:,} steps in {info.seconds:g} s on {info.tuning_samples:,} tuning samples (the checkpoint "
        f"kept is step {info.best_step:,}, by its loss on a slice of the tuning part)"
        if RECOVERY_METHODS[info.method].trains
        else f"{info.steps} biases shifted in {info.seconds:g} s, on the tuning samples"
    )
    st.success(
        f"{info.method}: {judge.name} on the held-out part {judge.format(info.before)} → **{judge.format(after)}**, "
        f"{done}."
    )
    st.caption(
        "The headline and the Export section describe these settings without recovery; the recovered file is here."
    )
    if info.curve:
        st.plotly_chart(recovery_chart(info.curve, info.best_step), width="stretch")
    stem = Path(model.name).stem
    data = result.data
    onnx_col, recipe_col = st.columns([2, 1])
    onnx_col.download_button(
        f"Download {stem}-recovered.onnx ({len(data) / 1e6:.2f} MB)",
        lambda: data,
        file_name=f"{stem}-recovered.onnx",
        mime="application/octet-stream",
        on_click="ignore",
        key="download_recovered",
    )
    recipe_col.download_button(
        "Download its recipe.json",
        recipe.to_json(),
        file_name=f"{stem}-recovered-recipe.json",
        mime="application/json",
        on_click="ignore",
        key="download_recovered_recipe",
    )
