"""A self-contained HTML report for stakeholders: the model, the settings, the headline numbers before and after,
interactive charts, the speed verdict and the environment. plotly.js is inlined, so it opens offline."""

from __future__ import annotations

import html
from dataclasses import replace
from datetime import UTC, datetime

from core.measure.findings import ProfileComparison
from core.measure.report import Report
from core.present.charts import codes_chart, histogram_chart, latency_chart, op_time_chart, sparsity_chart
from core.present.profile_text import profile_lines

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: 0.2rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.92rem; }
td, th { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.verdict { padding: 0.8rem 1rem; border-radius: 6px; background: #f3f6fb; margin: 1rem 0; }
.small { color: #666; font-size: 0.85rem; }
"""


def _row(cells: list[str], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(cell))}</{tag}>" for cell in cells) + "</tr>"


def _headline(report: Report) -> list[list[str]]:
    size = report.size_bytes
    totals = report.totals
    rows = [
        ["size on disk", f"{size['original'].raw:,} B", f"{size['compressed'].raw:,} B"],
        ["size gzip", size["original"].gzip_text(), size["compressed"].gzip_text()],
        ["non-zero weights", f"{totals['params']:,}", f"{totals['nonzero']:,}"],
        ["MACs per sample", f"{totals['macs']:,}", f"{totals['macs_after']:,}"],
    ]
    where = "held-out" if report.model.data else report.fidelity.inputs
    correct = report.accuracy
    if correct:
        rows.append(["accuracy", f"{correct.original:.2%}", f"{correct.compressed:.2%} ({correct.samples} {where})"])
        if correct.top5_compressed is not None:
            rows.append(["top-5 accuracy", f"{correct.top5_original:.2%}", f"{correct.top5_compressed:.2%}"])
    if report.targets:
        fit = report.targets
        rows.append(["MSE to the targets", f"{fit.mse_original:.4g}", f"{fit.mse_compressed:.4g}"])
        rows.append(["cosine to the targets", f"{fit.cosine_original:.4f}", f"{fit.cosine_compressed:.4f}"])
    fidelity = report.fidelity
    rows.append(["cosine to the original", "1.0000", f"{fidelity.cosine_mean:.4f} ({fidelity.samples} {where} inputs)"])
    rows.append(["output SQNR", "", f"{fidelity.sqnr_db:.1f} dB"])
    rows += [[f"output {out.name}: cosine", "1.0000", f"{out.cosine_mean:.4f}"] for out in fidelity.outputs]
    latency = report.latency_ms
    if latency and latency.compressed:
        rows.append(
            [
                "median latency",
                f"{latency.original.median:.3f} ms",
                f"{latency.compressed.median:.3f} ms ({latency.speedup:.2f}x)",
            ]
        )
    return rows


def render(report: Report, profile: ProfileComparison | None = None) -> str:
    """The report as one offline HTML file; `profile`: where the time goes, when it was profiled."""
    figures = [sparsity_chart([original_row(layer) for layer in report.layers], report.layers)]
    figures.append(histogram_chart(report.histograms["all"], "Weights of all layers", log_scale=True))
    if report.quantization_codes:
        figures.append(codes_chart(report.quantization_codes["all"],
                                   "Quantization levels", log_scale=True))  # fmt: skip
    if report.latency_ms and report.latency_ms.compressed:
        figures.append(latency_chart(report.latency_ms.original, report.latency_ms.compressed))
    if profile is not None:
        figures.append(op_time_chart(profile))
    charts = [
        figure.to_html(
            full_html=False, include_plotlyjs="inline" if index == 0 else False, config={"displaylogo": False}
        )
        for index, figure in enumerate(figures)
    ]
    model, verdict = report.model, report.verdict
    settings = report.settings
    setting_rows = [
        ["granularity", settings["prune"]["granularity"]],
        [
            "pruning amount",
            f"{settings['prune']['amount']:.0%} ({settings['prune']['criterion']}, {settings['prune']['scope']})",
        ],
        ["weight bits", "float32" if settings["quant"]["weight_bits"] == 32 else str(settings["quant"]["weight_bits"])],
        ["activations", settings["quant"]["activations"]],
        ["overrides", ", ".join(o["layer"] for o in settings.get("overrides", [])) or "none"],
    ]
    reasons = "".join(f"<li>[{html.escape(r.effect)}] {html.escape(r.text)}</li>" for r in verdict.reasons)
    environment = ""
    if report.latency_ms:
        env = report.latency_ms.environment
        flushed = "denormals flushed to zero, " if env.flush_denormals else ""
        environment = (f"<p class='small'>ONNX Runtime {html.escape(env.onnxruntime)}, {env.threads} intra-op thread(s), {flushed}"
                       f"{html.escape(env.cpu)}; CPU flags: {html.escape(' '.join(env.cpu_flags) or 'none found')}</p>")  # fmt: skip
    layers = "".join(
        _row(
            [
                layer.node,
                layer.op_type,
                "x".join(map(str, layer.shape)),
                f"{layer.sparsity:.1%}",
                f"{layer.channels_kept}/{layer.channels}",
                layer.bits,
                f"{layer.macs_after:,}",
            ]
        )  # fmt: skip
        for layer in report.layers
    )
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in report.notes)
    where = ""
    if profile is not None:
        text = "\n".join(profile_lines(profile, verdict))
        where = f"<h2>Where the time goes</h2><pre class='small'>{html.escape(text)}</pre>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Squeezelab report: {html.escape(model.name)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(model.name)}</h1>
<p class="sub">{html.escape(model.description or model.source)} · sha256 {model.sha256[:16]}… ·
generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by Squeezelab</p>
<h2>Settings</h2><table>{"".join(_row(row) for row in setting_rows)}</table>
<h2>Before and after</h2><table>{_row(["", "original", "compressed"], header=True)}{"".join(_row(r) for r in _headline(report))}</table>
<div class="verdict"><b>Speed on this CPU: {html.escape(verdict.summary)}.</b><ul>{reasons}</ul></div>
{environment}
<h2>Charts</h2>{"".join(charts)}
{where}
<h2>Per layer</h2><table>{_row(["layer", "op", "shape", "zero or removed", "channels kept", "bits", "MACs after"], header=True)}{layers}</table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""


def original_row(layer):
    """The original's row for the sparsity chart: the same layer before compression."""
    zeros = layer.original_zeros
    return replace(layer, zeros=zeros, sparsity=zeros / layer.params, collapsed=zeros == layer.params,
                   shape_after=list(layer.shape), channels_kept=layer.channels, left_whole=None)  # fmt: skip
