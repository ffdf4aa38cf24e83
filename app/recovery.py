"""The "Recover accuracy" panel: the current settings' export trained back towards the original on the tuning part,
with its progress, its loss per step, the held-out figure before and after, and its download."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import streamlit as st

from app import background, cache
from core import Model, Recipe
from core.compression.recipe import RecoverConfig
from core.compression.recover import MAX_TUNING_SAMPLES, replayable
from core.compression.recovery import RECOVERY_METHODS
from core.compression.schedules import SCHEDULES
from core.data.quality import QUALITY_METRICS, metric_of
from core.onnx.inputs import sample_count
from core.present.charts import recovery_chart

SECONDS = (5, 300)  # the budget slider's range
DEFAULT_METHOD = "distill"  # wins the most back; correct is the quick first try
STEPPED_GRANULARITIES = ("unstructured", "channel")  # where a gradual schedule can prune while training


JOB = "recovery_job"  # session state: the recovery running in the background, or the last one
REQUESTED = "recover_requested"  # session state: another panel asked to recover the settings it just loaded


@dataclass(kw_only=True)
class _Job(background.Job):
    """One recovery run, and its curve's points as they are measured."""

    source: str
    recipe_json: str
    method: str
    seconds: float
    points: list[tuple[int, float, float, float]] = field(default_factory=list)

    def begin(self) -> _Job:
        work = lambda: cache.recovered(  # noqa: E731
            self.source, self.recipe_json, self.progress, self.points.append, self.stop.is_set
        )
        return self.start(work, "recovery")


def panel(model: Model, source: str, recipe: Recipe) -> None:
    st.subheader("Recover accuracy")
    _, apart = model.tuning_part(0)
    if not apart:
        st.info(
            "Recovery trains on a tuning part kept apart from the held-out data every accuracy is measured on, and "
            "this model has none: give your data in the sidebar's Data section."
        )
        return
    method_col, schedule_col, seconds_col, button_col = st.columns([2, 2, 2, 1])
    names = [name for name, method in RECOVERY_METHODS.items() if not method.needs_labels or _labelled(model)]
    method = method_col.selectbox(
        "Method",
        names,
        index=names.index(DEFAULT_METHOD),
        key="recover_method",
        help="\n\n".join(f"**{n}**: {RECOVERY_METHODS[n].description}" for n in names),
    )
    stepped = recipe.prunes and recipe.prune.granularity in STEPPED_GRANULARITIES and RECOVERY_METHODS[method].trains
    schedule = schedule_col.selectbox(
        "Schedule",
        list(SCHEDULES),
        key="recover_schedule",
        disabled=not stepped,
        help="\n\n".join(f"**{name}**: {item.description}" for name, item in SCHEDULES.items())
        + "\n\nA gradual schedule prunes single weights or channels, with a trained method.",
    )
    seconds = seconds_col.slider("Training time (s)", *SECONDS, 60, 5, key="recover_seconds")
    settings = RecoverConfig(method, float(seconds), schedule=schedule if stepped else "oneshot")
    wanted = replace(recipe, recover=settings)
    recipe_json = wanted.to_json()
    job: _Job | None = st.session_state.get(JOB)
    running = job is not None and job.running
    clicked = button_col.button(
        "Recover", key="run_recovery", type="primary", disabled=running,
        help="Trains in the background; the page stays live, and Stop keeps the best checkpoint so far.",
    )  # fmt: skip
    if (clicked or st.session_state.pop(REQUESTED, False)) and not running:
        st.session_state[JOB] = _Job(source=source, recipe_json=recipe_json, method=method, seconds=seconds).begin()
        st.rerun()  # the button drawn disabled, and the live progress
    if job is not None and (job.running or (job.source == source and not job.shown)):
        _live(model, job)  # a run is shown until it ends, whichever model the page has moved to
    result = cache.recovered_before(source, recipe_json)
    if job is not None and job.finished.is_set() and (job.source, job.recipe_json) == (source, recipe_json):
        if job.error:
            st.error(f"{model.name}: {job.error}")
        result = job.result or result
    if result is None:
        part, _ = model.tuning_part(MAX_TUNING_SAMPLES)
        st.caption(
            f"Trains the compressed model on the {sample_count(part.inputs, model.batch_axes):,} tuning samples (never "
            "the held-out ones): pruned weights stay zero, removed channels stay removed, quantized weights stay on "
            "their grid."
        )
        return
    _show(model, result, wanted)


def _live(model: Model, job: _Job) -> None:
    """The running job's progress, Stop button and curve, refreshed without rerunning the page."""
    judge = metric_of(model)

    def label(stopping: bool) -> str:
        text = "Stopping, keeping the best checkpoint so far…" if stopping else f"Recovering ({job.method})…"
        return f"{text} {job.fraction:.0%} of {job.seconds:g} s"

    def draw() -> None:
        points = list(job.points)
        if points:
            step, _, _, quality = points[-1]
            st.caption(f"Step {step:,}: {judge.name} on the watched held-out slice {judge.format(quality)} (shown, "
                       "never used to choose the checkpoint).")  # fmt: skip
            st.plotly_chart(
                recovery_chart(points, None, judge.name, judge.percent), width="stretch", key="recovery_live"
            )

    background.live(
        job, label, "stop_recovery", "Ends training now and keeps the checkpoint with the best validation loss so far.",
        draw,
    )  # fmt: skip


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
    if info.stopped:
        st.caption("Stopped before its budget ran out: the checkpoint kept is the best one reached until then.")
    if info.curve:
        st.plotly_chart(recovery_chart(info.curve, info.best_step, judge.name, judge.percent), width="stretch")
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
        replayable(recipe, info).to_json(),
        file_name=f"{stem}-recovered-recipe.json",
        mime="application/json",
        on_click="ignore",
        key="download_recovered_recipe",
    )
