"""Exploring trade-offs: the per-layer sensitivity scan, the Pareto sweep (click a point to load its settings) and
per-layer overrides. Long runs show progress; pressing any other control stops them (Streamlit ends the run)."""

from __future__ import annotations

import streamlit as st

from app import cache, recovery
from core import Model, SqueezeError
from core.compression.recipe import FLOAT_BITS, MAX_PRUNE_AMOUNT, WEIGHT_BITS_RANGE, LayerOverride
from core.data.quality import QUALITY_METRICS, metric_of
from core.explore.sensitivity import DEFAULT_AMOUNTS, DEFAULT_BITS, cached_scan
from core.explore.snapshots import SnapshotStore, measured_speed
from core.explore.sweep import DEFAULT_AMOUNTS as SWEEP_DEFAULT_AMOUNTS
from core.explore.sweep import DEFAULT_BITS as SWEEP_DEFAULT_BITS
from core.explore.sweep import DEFAULT_BUDGET_S as SWEEP_BUDGET_S
from core.explore.sweep import sweep, with_fronts
from core.present.charts import (
    comparison_latency_chart,
    comparison_sparsity_chart,
    pareto_chart,
    sensitivity_curves,
    sensitivity_heatmap,
)

MAX_PRUNE_PERCENT = round(MAX_PRUNE_AMOUNT * 100)
SWEEP_AMOUNTS = [0.0, 0.25, 0.5, 0.75, 0.9]
SWEEP_BITS = [32, 8, 6, 4, 3]


def sensitivity_tab(model: Model, source: str) -> None:
    key = f"scan:{source}"
    scans = st.session_state.setdefault("scans", {})
    if st.button("Run the sensitivity scan", key="run_scan", help="Each layer alone at 4 amounts and 4 bit widths."):
        bar = st.progress(0.0, text="Scanning…")
        scans[key] = cached_scan(
            model, DEFAULT_AMOUNTS, DEFAULT_BITS,
            progress=lambda fraction: bar.progress(fraction, text=f"Scanning each layer alone… {fraction:.0%}"),
        )  # fmt: skip
        bar.empty()
    result = scans.get(key)
    if result is None:
        st.caption("Not scanned yet. Results are cached per model, so a second scan of the same model is instant.")
        return
    st.plotly_chart(sensitivity_heatmap(result.layers, result.settings, result.drops, result.metric), width="stretch")
    st.plotly_chart(sensitivity_curves(result.layers, result.settings, result.drops, result.metric), width="stretch")
    worst = sorted(zip(result.layers, [row[2] or 0 for row in result.drops], strict=True), key=lambda item: -item[1])
    allocation_panel(model, source)
    st.caption(
        "Most fragile at 75 % pruning: "
        + ", ".join(f"{layer} ({drop:.3f})" for layer, drop in worst[:3])
        + f". Measured on {result.samples} inputs against a baseline {result.metric} of {result.baseline:.4f}."
    )


def allocation_panel(model: Model, source: str) -> None:
    """A global target spread three ways: the same amount everywhere, one global threshold, and by sensitivity."""
    top = MAX_PRUNE_PERCENT // 5 * 5  # on the slider's steps of 5
    target = st.slider("Target: % of all prunable weights", 5, top, 50, 5, key="allocation_target") / 100
    with st.spinner("Compressing and scoring the three plans…"):
        compared = cache.allocation(source, target)
    metric = metric_of(model)
    st.dataframe(
        [
            {"layer": layer.node}
            | {f"{scored.plan.name} %": round(100 * scored.layer_sparsity[layer.node], 1) for scored in compared}
            for layer in model.layers
        ]  # fmt: skip
        + [
            {"layer": f"→ {metric.name}"}
            | {f"{scored.plan.name} %": metric.format(scored.quality) for scored in compared}
        ],
        width="stretch",
        hide_index=True,
    )
    auto = compared[-1].plan
    use_col, recover_col = st.columns(2)
    use = use_col.button("Use the auto plan as per-layer overrides", key="use_auto_plan")
    recover = recover_col.button("Use it and recover its accuracy", key="recover_auto_plan",
                                 help="Loads the plan, then runs the Recover accuracy panel on it.")  # fmt: skip
    if use or recover:
        st.session_state[recovery.REQUESTED] = recover
        st.session_state.override_rows = [
            {
                "layer": layer.node,
                "amount %": round(100 * auto.amounts.get(layer.node, 0.0), 2) or None,
                "bits": None,
                "skip": False,
            }  # fmt: skip
            for layer in model.layers
        ]
        st.session_state.override_version = st.session_state.get("override_version", 0) + 1
        st.session_state.pending_settings = {"prune_percent": 0, "granularity": "unstructured"}
        st.rerun()


def sweep_tab(model: Model, source: str) -> None:
    left, right = st.columns(2)
    amounts = left.multiselect("Amounts", SWEEP_AMOUNTS, default=list(SWEEP_DEFAULT_AMOUNTS), key="sweep_amounts")
    bits = right.multiselect("Weight bits (32 = float)", SWEEP_BITS, default=list(SWEEP_DEFAULT_BITS), key="sweep_bits")
    granularity = st.session_state.get("granularity", "unstructured")
    key = f"sweep:{source}:{granularity}:{sorted(amounts)}:{sorted(bits)}"
    sweeps = st.session_state.setdefault("sweeps", {})
    if st.button(f"Run the sweep ({len(amounts) * len(bits)} points, {granularity})", key="run_sweep"):
        bar = st.progress(0.0, text="Sweeping… (press any control to stop; finished points are kept)")
        sweeps[key] = []  # filled point by point, so a stopped sweep keeps what finished
        try:
            sweeps[key] = sweep(
                model, sorted(amounts), sorted(bits, reverse=True), (granularity,), budget_s=SWEEP_BUDGET_S,
                progress=lambda fraction: bar.progress(fraction, text=f"Compressing, exporting, timing… {fraction:.0%}"),
                on_point=sweeps[key].append,
            )  # fmt: skip
        except SqueezeError as error:
            st.error(str(error))
        bar.empty()
    points = with_fronts(sweeps.get(key) or [])
    if not points:
        st.caption("Not swept yet. Every point is exported and timed against the original, interleaved.")
        return
    for cost in ("latency", "size"):
        event = st.plotly_chart(
            pareto_chart(points, cost),
            width="stretch",
            on_select="rerun",
            selection_mode="points",
            key=f"pareto_{cost}",
        )
        selected = event.selection.points if event and event.selection else []
        chosen = [p for p in selected if "customdata" in p]  # a point, not the front's line
        picked = (cost, int(chosen[0]["customdata"])) if chosen else None
        # a selection stays on the chart across reruns: act on a new one only, or every rerun would reload it
        if picked is not None and picked != st.session_state.get("picked_point"):
            st.session_state.picked_point = picked
            point = points[picked[1]]
            clear_overrides()  # the point's settings are the whole recipe: it had no overrides
            st.session_state.pending_settings = {
                "prune_percent": round(point.amount * 100),
                "weight_bits": "off" if point.bits == FLOAT_BITS else point.bits,
                "granularity": point.granularity,
            }
            st.rerun()
    st.caption("Orange points are on the Pareto front: no other setting is both as good and as cheap. Speeds within "
               "noise of each other (overlapping 99% intervals against the original) are ties. Click a point to "
               "load its settings into the sidebar.")  # fmt: skip
    if st.session_state.get("picked_point") and st.button(
        "Recover the chosen point's accuracy", key="recover_point",
        help="Runs the Recover accuracy panel on the point loaded into the sidebar.",
    ):  # fmt: skip
        st.session_state[recovery.REQUESTED] = True
        st.rerun()


def _override_rows(model: Model) -> list[dict]:
    rows = st.session_state.get("override_rows") or []
    if [row["layer"] for row in rows] != [layer.node for layer in model.layers]:
        rows = [{"layer": layer.node, "amount %": None, "bits": None, "skip": False} for layer in model.layers]
    return rows


def clear_overrides() -> None:
    """Every layer back on the sidebar's settings (a button's callback, and loading a sweep point's settings)."""
    st.session_state.override_rows = None
    st.session_state.override_version = st.session_state.get("override_version", 0) + 1


def overrides_note(model: Model, overrides: tuple[LayerOverride, ...]) -> None:
    """Which layers the sidebar's amount and bits still apply to, and a way back to none overridden."""
    if not overrides:
        return
    total = len(model.layers)
    amounts = sum(1 for entry in overrides if entry.skip or entry.amount is not None)
    bits = sum(1 for entry in overrides if entry.skip or entry.bits is not None)
    parts = [f"the amount applies to {total - amounts} of {total} layers"] if amounts else []
    parts += [f"the bits to {total - bits} of {total}"] if bits else []
    st.info(f"Per-layer overrides are set: {', '.join(parts)}.")
    st.button("Clear overrides", key="clear_overrides", on_click=clear_overrides, width="stretch")


def _editor_key(model: Model) -> str:
    return f"overrides_{model.sha256[:12]}_{st.session_state.get('override_version', 0)}"


def current_overrides(model: Model) -> tuple[LayerOverride, ...]:
    """The overrides table's rows with the user's edits applied, read from its state before the table is drawn
    (it is drawn below the charts, so that the charts reach the browser first)."""
    rows = [dict(row) for row in _override_rows(model)]
    for index, changes in st.session_state.get(_editor_key(model), {}).get("edited_rows", {}).items():
        rows[int(index)].update(changes)
    overrides = []
    for row in rows:
        amount, bits, skip = row.get("amount %"), row.get("bits"), bool(row.get("skip"))
        if skip:
            overrides.append(LayerOverride(row["layer"], skip=True))
        elif amount is not None or bits is not None:
            overrides.append(LayerOverride(
                row["layer"], None if amount is None else float(amount) / 100, None if bits is None else int(bits)
            ))  # fmt: skip
    return tuple(overrides)


def overrides_editor(model: Model) -> None:
    """An editable table: per layer, its own amount, bits, or skip. Rows left empty follow the sidebar."""
    st.data_editor(
        _override_rows(model),
        key=_editor_key(model),
        width="stretch",
        hide_index=True,
        disabled=["layer"],
        column_config={
            "amount %": st.column_config.NumberColumn(min_value=0, max_value=MAX_PRUNE_PERCENT, step=1),
            "bits": st.column_config.SelectboxColumn(options=[*WEIGHT_BITS_RANGE, FLOAT_BITS]),
        },
    )


def snapshots_tab(model: Model, recipe, report) -> None:
    """Save the current settings and results by name; compare, delete, export as CSV."""
    store = SnapshotStore()
    name_col, save_col = st.columns([3, 1])
    name = name_col.text_input("Snapshot name", key="snapshot_name", placeholder="e.g. 50 % channels + int8")
    if save_col.button("Save snapshot", key="save_snapshot", width="stretch"):
        try:
            store.save(name, recipe, report)
            st.toast(f"Saved {name!r}")
        except SqueezeError as error:
            st.error(str(error))
    snapshots = store.list(model.sha256)
    if not snapshots:
        st.caption(f"No snapshots of this model yet. They are kept in {store.path}, across restarts.")
        return
    rows = [
        {
            "id": s.id,
            "name": s.name,
            "settings": s.settings,
            "size MB": round(s.size_bytes / 1e6, 3),
            "non-zero": s.nonzero,
            "MACs": s.macs,
            s.metric: QUALITY_METRICS[s.metric].format(s.quality) if s.metric in QUALITY_METRICS else s.quality,
            "latency ms": None if s.latency_ms is None else round(s.latency_ms, 3),
            "speed": measured_speed(store.report(s.id)),
            "saved": s.created,
        }  # fmt: skip
        for s in snapshots
    ]
    st.dataframe(rows, width="stretch", hide_index=True)
    labels = {f"{s.id}: {s.name}": s.id for s in snapshots}
    chosen = st.multiselect("Compare", list(labels), key="compare_snapshots")
    if len(chosen) >= 2:
        reports = {label: store.report(labels[label]) for label in chosen}
        st.plotly_chart(comparison_sparsity_chart({k: r["layers"] for k, r in reports.items()}), width="stretch")
        timed = {k: r["latency_ms"]["compressed"]["samples"] for k, r in reports.items() if r.get("latency_ms")}
        if timed:
            st.plotly_chart(comparison_latency_chart(timed), width="stretch")
    delete_col, csv_col = st.columns(2)
    doomed = delete_col.selectbox("Delete", ["—", *labels], key="delete_snapshot")
    if doomed != "—" and delete_col.button("Delete this snapshot", key="confirm_delete"):
        store.delete(labels[doomed])
        st.rerun()
    csv_col.download_button("Snapshots as CSV", store.to_csv(model.sha256), file_name="snapshots.csv",
                            mime="text/csv", on_click="ignore", key="snapshots_csv")  # fmt: skip
