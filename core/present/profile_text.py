"""The profile comparison as text lines: the CLI prints them, the HTML report shows them."""

from __future__ import annotations

from core.measure.findings import ProfileComparison
from core.measure.report import Verdict


def profile_lines(comparison: ProfileComparison, verdict: Verdict | None = None) -> list[str]:
    before, after = comparison.original, comparison.compressed
    threads = f"{after.threads} thread{'s' if after.threads != 1 else ''}"
    threads += ", denormals flushed to zero" if after.flush_denormals else ""
    lines = [f"where the time goes: ms per run, kernel medians of {min(before.runs, after.runs)} interleaved "
             f"profiled runs, {threads}", f"{'op type':<28}{'original':>10}{'export':>10}{'change':>10}"]  # fmt: skip
    for op, old, new in comparison.op_types:
        lines.append(f"{op:<28}{old:>10.3f}{new:>10.3f}{new - old:>+10.3f}")
    for label, old, new in (
        ("all kernels", before.kernel_ms, after.kernel_ms),
        ("outside the kernels", before.outside_ms, after.outside_ms),
        ("per run (median)", before.median_ms, after.median_ms),
    ):
        lines.append(f"{label:<28}{old:>10.3f}{new:>10.3f}{new - old:>+10.3f}")
    lines.append("")
    lines.append("changed most (a prunable layer with all its nodes, or a node of no layer)")
    for name, op, old, new in comparison.top_changes:
        lines.append(f"  {name[:40]:<42}{op[:38]:<40}{old:>8.3f} -> {new:.3f} ms")
    if comparison.layers:
        lines.append("")
        lines.append(f"{'per layer':<34}{'MACs':>7}{'time':>7}  sparsity bits channels")
        for layer in comparison.layers:
            macs = f"{layer.mac_ratio:.2f}" if layer.mac_ratio is not None else "?"
            time = f"{layer.measured_ratio:.2f}" if layer.measured_ratio is not None else "-"
            kept = f"{layer.channels_kept}/{layer.channels}" if layer.channels else ""
            note = f"  off: {layer.reason}" if layer.reason else ""
            sparsity = f"{layer.sparsity:.0%}" if layer.sparsity is not None else "?"
            bits = layer.bits if layer.bits is not None else "?"
            lines.append(f"  {layer.layer[:32]:<32}{macs:>7}{time:>7}  {sparsity:>8} {bits:>4} {kept:>8}{note}")
    lines.append("")
    if verdict is not None:
        lines.append(f"verdict: {comparison.verdict_check(verdict.expectation)}")
    lines.append("findings:" if comparison.findings else "findings: none of the known causes holds here")
    lines += [f"- [{finding.key}] {finding.text}" for finding in comparison.findings]
    return lines
