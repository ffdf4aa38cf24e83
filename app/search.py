"""The Search tab: `core.explore.search` run in the background, its trials drawn as they finish, the best ones in a
table, and any trial loaded into the sidebar with a click (then recovered, if asked)."""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from app import background, recovery
from core import Model, SqueezeError
from core.compression.recipe import FLOAT_BITS, Recipe
from core.data.quality import metric_of
from core.explore.search import OBJECTIVES, SAMPLERS, SearchResult, SearchSettings, Trial, search
from core.explore.snapshots import describe
from core.present.charts import search_chart

JOB = "search_job"
BUDGET = (10, 600)  # the budget slider's range, seconds
SHOWN = 10  # best trials in the table


@dataclass(kw_only=True)
class _Job(background.Job):
    """One search, and its trials as they finish."""

    source: str
    settings: SearchSettings
    trials: list[Trial] = field(default_factory=list)

    def begin(self, model: Model) -> _Job:
        work = lambda: search(model, self.settings, self.progress, self.trials.append, self.stop.is_set)  # noqa: E731
        return self.start(work, "search")


def search_tab(model: Model, source: str) -> None:
    judge = metric_of(model)
    objective_col, constraint_col, budget_col, sampler_col = st.columns(4)
    objective = objective_col.selectbox(
        "Objective", list(OBJECTIVES), key="search_objective",
        help="\n\n".join(f"**{name}**: {item.description}" for name, item in OBJECTIVES.items()),
    )  # fmt: skip
    if judge.percent:
        drop = constraint_col.number_input("Max drop (accuracy points)", 0.0, 100.0, 1.0, 0.5, key="search_drop")
        constraint = {"max_drop": float(drop)}
    else:
        least = constraint_col.number_input(f"Min {judge.name}", 0.0, 1.0, 0.99, 0.005, key="search_min",
                                            format="%.3f")  # fmt: skip
        constraint = {"min_quality": float(least)}
    budget = budget_col.slider("Budget (s)", *BUDGET, 60, 10, key="search_budget")
    sampler = sampler_col.selectbox("Sampler", list(SAMPLERS), key="search_sampler",
                                    help="tpe: Bayesian (Optuna's TPE); nsga2: genetic; random")  # fmt: skip
    job: _Job | None = st.session_state.get(JOB)
    running = job is not None and job.running
    if st.button("Run the search", key="run_search", type="primary", disabled=running,
                 help="Trials are judged on the tuning part; the study is kept, so a second run goes on from it."):  # fmt: skip
        try:
            settings = SearchSettings(objective, budget_s=float(budget), sampler=sampler, **constraint)
        except SqueezeError as error:
            st.error(str(error))
            return
        st.session_state[JOB] = _Job(source=source, settings=settings).begin(model)
        st.rerun()
    if job is None or job.source != source:
        st.caption("Not searched yet. Each trial is a recipe (granularity, an amount and bits per group of layers), "
                   "exported and judged on a batch of the tuning part; the best one is checked on the held-out "
                   "part when you load it.")  # fmt: skip
        return
    if job.running or not job.shown:
        _live(model, job)
    if job.finished.is_set():
        if job.error:
            st.error(f"{model.name}: {job.error}")
        elif job.result is not None:
            _show(model, job.result)


def _live(model: Model, job: _Job) -> None:
    judge = metric_of(model)

    def label(stopping: bool) -> str:
        text = "Stopping, keeping every trial so far…" if stopping else f"Searching ({job.settings.sampler})…"
        return f"{text} {len(job.trials)} trials, {job.fraction:.0%}"

    def draw() -> None:
        trials = list(job.trials)
        if trials:
            unit = OBJECTIVES[job.settings.objective].unit
            figure = search_chart(
                trials, set(), _limit(trials), judge.name, judge.percent, unit, job.settings.objective
            )
            st.plotly_chart(figure, width="stretch", key="search_live")

    background.live(job, label, "stop_search", "Ends the search; every trial so far is kept in its study.", draw)


def _limit(trials: list[Trial]) -> float:
    """The constraint's quality, read back from any trial: quality minus how far it is from it."""
    return trials[0].quality + trials[0].drop


def _show(model: Model, result: SearchResult) -> None:
    judge = metric_of(model)
    unit = OBJECTIVES[result.objective].unit
    for failure in result.failures:
        st.warning(f"{failure}; its trials are missing.")
    best = result.best
    if best is None:
        closest = result.closest
        st.warning("No trial met the constraint." + (
            f" The closest, trial {closest.number}, reaches {judge.format(closest.quality)} on the tuning batch, "
            f"{judge.format(closest.drop)} short." if closest else ""))  # fmt: skip
    else:
        timed = f" ({best.timing})" if best.retimed else ""
        st.success(f"Best: trial {best.number}, {best.cost:.4g} {unit}{timed}, {judge.name} {judge.format(best.quality)} on "
                   f"the tuning batch (the original: {judge.format(result.baseline)}); {len(result.trials)} trials in "
                   f"study {result.study}.")  # fmt: skip
    front = {trial.number for trial in result.front()}
    event = st.plotly_chart(
        search_chart(result.trials, front, result.limit, judge.name, judge.percent, unit, result.objective),
        width="stretch", on_select="rerun", selection_mode="points", key="search_chart",
    )  # fmt: skip
    selected = event.selection.points if event and event.selection else []
    picked = next((int(point["customdata"]) for point in selected if "customdata" in point), None)
    feasible = sorted((trial for trial in result.trials if trial.feasible), key=lambda trial: trial.cost)[:SHOWN]
    st.dataframe(
        [{"trial": trial.number, unit: round(trial.cost, 5), judge.name: judge.format(trial.quality),
          "setting": describe(trial.recipe)} for trial in feasible],
        hide_index=True, width="stretch",
    )  # fmt: skip
    load_col, recover_col = st.columns(2)
    if best is not None and load_col.button("Load the best trial into the sidebar", key="load_best_trial"):
        picked = best.number
    if best is not None and recover_col.button("Load it, then recover and export", key="recover_best_trial"):
        picked = best.number
        st.session_state[recovery.REQUESTED] = True
    # a selection stays on the chart across reruns: act on a new one only, or every rerun would reload it
    if picked is not None and picked != st.session_state.get("picked_trial"):
        st.session_state.picked_trial = picked
        load(model, next(trial for trial in result.trials if trial.number == picked).recipe)
        st.rerun()
    st.caption("Click a point to load its settings into the sidebar; the page then measures it on the held-out part.")


def load(model: Model, recipe: Recipe) -> None:
    """The recipe's settings into the sidebar: granularity, amount and bits there, the rest as per-layer
    overrides."""
    by_layer = {entry.layer: entry for entry in recipe.overrides}
    st.session_state.override_rows = [
        {
            "layer": layer.node,
            "amount %": None if by_layer.get(layer.node) is None or by_layer[layer.node].amount is None
            else round(100 * by_layer[layer.node].amount, 2),
            "bits": None if by_layer.get(layer.node) is None else by_layer[layer.node].bits,
            "skip": False,
        }
        for layer in model.layers
    ]  # fmt: skip
    st.session_state.override_version = st.session_state.get("override_version", 0) + 1
    bits = recipe.quant.weight_bits
    st.session_state.pending_settings = {
        "granularity": recipe.prune.granularity,
        "prune_percent": round(recipe.prune.amount * 100),
        "weight_bits": "off" if bits == FLOAT_BITS else bits,
        "activations": recipe.quant.activations,
    }
