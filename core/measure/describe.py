"""What an exported file is, in one line, read from what was measured on it (the weights written, the channels
and blocks removed, each layer's bits), never from the settings that asked for it: overrides, layers left whole
and rounding all make the two differ."""

from __future__ import annotations

from collections import Counter

from core.compression.recipe import FLOAT_BITS
from core.measure.report import Report


def describe_export(report: Report) -> str:
    totals, layers = report.totals, report.layers
    parts = [
        f"{totals['sparsity']:.1%} of the prunable weights zero or removed "
        f"({totals['nonzero']:,} of {totals['params']:,} left)"
    ]
    asked = report.settings["prune"]
    if (
        asked["granularity"] == "channel"
        and asked["amount"] > 0
        or any(layer.channels_kept < layer.channels for layer in layers if layer.shape_after)
    ):
        parts.append(_channels(report))
    if report.blocks:
        dropped = sum(block.dropped for block in report.blocks)
        parts.append(f"dropped {dropped} of {len(report.blocks)} residual blocks")
    parts.append(_bits(report))
    return "; ".join(parts)


def shortfall(report: Report) -> str | None:
    """Where structured pruning removed less than asked, how much less and the commonest reasons; None otherwise."""
    asked = report.settings["prune"]
    own = any("amount" in override or override.get("skip") for override in report.settings.get("overrides", []))
    if asked["granularity"] != "channel" or asked["amount"] <= 0 or own:  # per-layer amounts: not one figure asked
        return None
    kept = [layer for layer in report.layers if layer.shape_after]
    channels = sum(layer.channels for layer in kept)
    removed = channels - sum(layer.channels_kept for layer in kept)
    if removed >= 0.9 * asked["amount"] * channels:
        return None
    reasons = Counter(report.left_whole.values()).most_common(2)
    why = "; ".join(f"{_layers(count)}: {reason}" for reason, count in reasons)
    return (
        f"Asked for {asked['amount']:.0%} of the channels; removed {removed:,} of {channels:,} "
        f"({removed / channels:.0%}): {_layers(len(report.left_whole))} left whole" + (f" ({why})." if why else ".")
    )


def _channels(report: Report) -> str:
    kept = [layer for layer in report.layers if layer.shape_after]
    channels = sum(layer.channels for layer in kept)
    removed = channels - sum(layer.channels_kept for layer in kept)
    text = f"removed {removed:,} of {channels:,} output channels"
    if report.left_whole:
        reasons = Counter(report.left_whole.values()).most_common(1)[0][0]
        text += f" ({_layers(len(report.left_whole))} left whole; most often: {reasons})"
    return text


def _layers(count: int) -> str:
    return f"{count} layer" if count == 1 else f"{count} layers"


def _bits(report: Report) -> str:
    counts = Counter(layer.bits for layer in report.layers if layer.shape_after)
    if set(counts) == {FLOAT_BITS}:
        return "float32 weights"
    groups = ", ".join(
        f"{count} at {'float32' if bits == FLOAT_BITS else f'{bits}-bit'}"
        for bits, count in sorted(counts.items(), reverse=True)
    )
    mode = report.quantization.mode if report.quantization else "none"
    activations = f", int8 activations ({mode})" if mode in ("static", "dynamic") else ""
    return f"weights by layer: {groups}{activations}"
