"""'Where the time goes': ONNX Runtime's own profile of the original and the export, under the latency chart, with
the findings that explain the measured speed (core.measure.findings).

Not `profile.py`: Streamlit puts app/ on sys.path, where that name hides the standard library's `profile`, which
cProfile imports (recovery's training failed with "module 'profile' has no attribute 'run'")."""

from __future__ import annotations

import streamlit as st

from app import cache
from core import SqueezeError
from core.compression.recipe import Recipe
from core.measure.findings import ProfileComparison, compare
from core.measure.profile import PROFILE_BUDGET_S, profile_against_original
from core.present.charts import op_time_chart


def results() -> dict[str, ProfileComparison]:
    """Profiles taken in this session, by model source, recipe and threads."""
    return st.session_state.setdefault("profile_results", {})


def result_key(source: str, recipe_json: str, threads: int, flush: bool) -> str:
    return f"{source}\n{recipe_json}\n{threads}\n{flush}"


@st.fragment
def panel(source: str, recipe_json: str, threads: int, flush: bool, expected: str) -> None:
    st.subheader("Where the time goes")
    key = result_key(source, recipe_json, threads, flush)
    if st.button("Profile both models", key="profile_panel",
                 help=f"ONNX Runtime's own profiler, node by node: {PROFILE_BUDGET_S:g} s of interleaved runs"):  # fmt: skip
        model, exported = cache.model(source), cache.exported(source, recipe_json)
        try:
            with st.spinner("Profiling the original and the export, runs interleaved…"):
                original, after = profile_against_original(model, exported.data, threads=threads, flush_denormals=flush)
        except SqueezeError as error:
            st.error(str(error))
            return
        keep = Recipe.from_json(recipe_json).quant.keep_float
        results()[key] = compare(original, after, exported.report.layers, keep)
    comparison = results().get(key)
    if comparison is None:
        st.caption("Not profiled for these settings yet. The profile times every node of both graphs as ONNX Runtime "
                   "optimised them (fused ops, int8 kernels, conversions) and says why the export is or is not faster.")  # fmt: skip
        return
    st.markdown(f"**Verdict:** {comparison.verdict_check(expected)}.")
    chart, words = st.columns([3, 2])
    chart.plotly_chart(op_time_chart(comparison), width="stretch", key="profile_chart")
    with words:
        if not comparison.findings:
            st.markdown("None of the known causes of a slow export holds here.")
        for finding in comparison.findings:
            st.markdown(f"- **{finding.key}**: {finding.text}")
        before, after = comparison.original, comparison.compressed
        st.caption(f"Kernel medians of {min(before.runs, after.runs)} interleaved profiled runs, {after.threads} "
                   f"intra-op thread(s). The kernels add up to {before.kernel_ms / before.median_ms:.0%} (original) "
                   f"and {after.kernel_ms / after.median_ms:.0%} (export) of the measured run.")  # fmt: skip
    nodes, layers = st.tabs(["Changed most", "Per prunable layer"], key="profile_tabs")
    nodes.caption("A prunable layer with every node that computes it (converters included), or a node of no layer.")
    nodes.dataframe(
        [{"layer or node": name, "op type": op, "original ms": round(old, 4), "export ms": round(new, 4)}
         for name, op, old, new in comparison.top_changes],
        hide_index=True,
    )  # fmt: skip
    ratio = st.column_config.NumberColumn(format="%.2f")
    layers.dataframe(
        [{"layer": row.layer, "MAC ratio": row.mac_ratio, "time ratio": row.measured_ratio, "sparsity": row.sparsity,
          "bits": row.bits, "channels kept": f"{row.channels_kept}/{row.channels}" if row.channels else "",
          "ops after": ", ".join(row.ops_after), "more than 20 % off because": row.reason or ""}
         for row in sorted(comparison.layers, key=lambda row: row.reason is None)],  # the layers off first
        hide_index=True,
        column_config={"MAC ratio": ratio, "time ratio": ratio,
                       "sparsity": st.column_config.NumberColumn(format="percent"),
                       "more than 20 % off because": st.column_config.TextColumn(width="large")},
    )  # fmt: skip
