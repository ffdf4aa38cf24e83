"""The latency panel: its own fragment, so measuring shows progress without holding up the rest of the page."""

from __future__ import annotations

import streamlit as st

from app import cache
from core import Latency, SqueezeError
from core.measure.benchmark import time_against_original
from core.measure.verdict import measured_text, verdict_agreement
from core.present.charts import latency_chart


def results() -> dict[str, Latency]:
    """Latency measured in this session, by model source and recipe: small, and private to the session."""
    return st.session_state.setdefault("latency_results", {})


def result_key(source: str, recipe_json: str, threads: int, flush: bool) -> str:
    return f"{source}\n{recipe_json}\n{threads}\n{flush}"


def _bold(text: str) -> str:
    return f"**{text}**"


@st.fragment
def panel(
    source: str, recipe_json: str, budget_s: float, threads: int, flush: bool, requested: bool, expected: str
) -> None:
    st.subheader("ONNX Runtime latency")
    key = result_key(source, recipe_json, threads, flush)
    clicked = st.button("Measure latency", key="measure_panel")
    if clicked or requested:
        model, exported = cache.model(source), cache.exported(source, recipe_json)
        bar = st.progress(0.0, text="Warming up…")

        def show(fraction: float) -> None:
            bar.progress(fraction, text=f"Measuring, original and compressed interleaved… {fraction:.0%}")

        try:
            results()[key] = time_against_original(
                model, exported.data, budget_s=budget_s, threads=threads, progress=show, flush_denormals=flush
            )
        except SqueezeError as error:
            bar.empty()
            st.error(str(error))
            return
        bar.empty()
        st.rerun()  # the whole page, so the headline latency metric shows the new numbers too

    latency = results().get(key)
    if latency is None or latency.compressed is None:
        st.caption(
            "Not measured for these settings yet. Latency is measured on the exact bytes you download, "
            "after warm-up, with original and compressed runs interleaved so drift on a busy machine cancels."
        )
        return
    chart, facts = st.columns([3, 2])
    chart.plotly_chart(latency_chart(latency.original, latency.compressed), width="stretch")
    env = latency.environment
    with facts:
        st.markdown(
            f"{measured_text(latency, _bold)}  \nExpected beforehand: {expected}; {verdict_agreement(expected, latency, _bold)}."
        )
        for label, stats in (("original", latency.original), ("compressed", latency.compressed)):
            st.markdown(
                f"**{label}**: median {stats.median:.3g} ms, p90 {stats.p90:.3g} ms, "
                f"spread (p90−p10) {stats.spread:.3g} ms, {stats.runs} runs"
            )
        st.markdown(
            f"ONNX Runtime {env.onnxruntime}, {env.threads} intra-op thread{'s' if env.threads != 1 else ''}"
            f"{', denormals flushed to zero' if env.flush_denormals else ''}  \n"
            f"CPU: {env.cpu}  \nFlags: {', '.join(env.cpu_flags) or 'none found'}"
        )
        st.caption("Each dot is one batch-1 run. Overlapping boxes mean the difference is within the noise.")
