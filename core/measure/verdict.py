"""'Will it be faster?': what the chosen settings should do to ONNX Runtime latency on this CPU, and why, said
before anything is measured. Each reason comes from a measurement on this project's machines (design notes)."""

from __future__ import annotations

from collections.abc import Callable

from core.compression.activations import ACTIVATION_MODES
from core.compression.granularities import GRANULARITIES
from core.compression.pipeline import CONV_OPS, Compressed
from core.measure.benchmark import VNNI_FLAGS, cpu_description
from core.measure.noise import CONFIDENCE, MIN_EFFECT, effect, speedup_interval
from core.measure.report import Latency, Reason, Verdict

TINY_MACS = 5_000_000  # below this per sample, per-op overhead outweighs int8 arithmetic savings
FEWER_MACS = 0.9  # a MAC ratio below this is expected to show in latency


def speed_verdict(compressed: Compressed, cpu_flags: list[str] | None = None) -> Verdict:
    recipe, model = compressed.recipe, compressed.model
    flags = cpu_description()[1] if cpu_flags is None else cpu_flags
    macs_before = sum(model.macs.values())
    macs_after = sum(compressed.macs.values())
    reasons: list[Reason] = []
    prune, pruning = recipe.prune, recipe.prunes
    if pruning and not GRANULARITIES[prune.granularity].structural:
        reasons.append(
            Reason("same", "unstructured sparsity runs on dense kernels: zeros are multiplied like any weight")
        )
    elif pruning and macs_after < FEWER_MACS * macs_before:
        reasons.append(
            Reason("faster", f"{macs_before / macs_after:.2f}x fewer MACs: the dense graph is really smaller")
        )
    elif pruning:
        reasons.append(Reason("same", "structured pruning removed under 10 % of the MACs"))
    quant = recipe.quant
    if quant.enabled:
        reasons += _quantization_reasons(compressed, flags, macs_after)
    effects = {reason.effect for reason in reasons}
    if any(reason.text.startswith("the model is tiny") for reason in reasons):
        expectation = "slower"  # measured: both digits samples ran slower with int8 activations
    elif not reasons or effects == {"same"}:
        expectation = "no faster"
    elif "faster" in effects and "slower" in effects:
        expectation = "mixed"
    else:
        expectation = "faster" if "faster" in effects else "slower"
    return Verdict(expectation, reasons)


def _dynamic_reasons(compressed: Compressed) -> list[Reason]:
    reasons = [Reason("faster", "MatMul/Gemm run as int8 with activation ranges taken at run time")]
    convs = sum(1 for layer in compressed.layers if layer.op_type in CONV_OPS)
    if convs:
        reasons.append(
            Reason(
                "same",
                f"dynamic mode leaves the {convs} convolution(s) in float: dynamic int8 convolutions "
                "(ConvInteger) ran 2-3x slower than float on x86",
            )
        )
    return reasons


def _static_reasons(compressed: Compressed) -> list[Reason]:
    return [
        Reason(
            "faster",
            "static QDQ: Q/DQ pairs around Conv and MatMul fuse into int8 kernels (QLinearConv, "
            "uint8 activations x int8 weights); QDQ rather than QOperator, which ran ~4x slower on x86",
        )
    ]


# What each int8 activation mode (`core.compression.activations.ACTIVATION_MODES`) does to ONNX Runtime's speed.
INT8_MODE_REASONS: dict[str, Callable[[Compressed], list[Reason]]] = {
    "dynamic": _dynamic_reasons,
    "static": _static_reasons,
}


def _quantization_reasons(compressed: Compressed, flags: list[str], macs: int) -> list[Reason]:
    mode, keep = compressed.activation_mode, compressed.recipe.quant.keep_float
    if not ACTIVATION_MODES[mode].int8:
        return [
            Reason(
                "slower",
                "weight-only: DequantizeLinear turns the int8 weights back into float at every run, then float kernels "
                "do the same work (8-bit weights ran ~3x slower on digits-cnn)",
            )
        ]
    reasons = []
    requested = compressed.recipe.quant.activations
    if ACTIVATION_MODES[requested].choose is not None:
        reasons.append(Reason("same", f"{requested} chose {mode}: {compressed.mode_reason}"))
    if macs < TINY_MACS:
        reasons.append(
            Reason(
                "slower",
                f"the model is tiny ({macs:,} MACs per sample): quantize/dequantize overhead outweighs "
                "the cheaper int8 arithmetic",
            )
        )
    reasons += INT8_MODE_REASONS[mode](compressed)
    vnni = [flag for flag in flags if flag in VNNI_FLAGS]
    if vnni:
        reasons.append(Reason("faster", f"this CPU has {', '.join(vnni)}: int8 dot products are native instructions"))
    else:
        reasons.append(
            Reason(
                "same",
                "no VNNI on this CPU: int8 dot products take several AVX2 instructions, so the int8 gain is reduced",
            )
        )
    if keep:
        reasons.append(
            Reason(
                "slower",
                f"{len(keep)} layer(s) kept in float: the Q/DQ pairs around them stay unfused and convert at every run",
            )
        )
    return reasons


def _plain(text: str) -> str:
    return text


def _interval(latency: Latency) -> tuple[float, float]:
    if latency.speedup_interval is not None:
        return latency.speedup_interval
    return speedup_interval(latency.original.samples, latency.compressed.samples)


def measured_effect(latency: Latency) -> str:
    """ "faster", "slower" or "no faster": the verdict's words, by the one rule for noise (core.measure.noise)."""
    return effect(*_interval(latency))


def measured_text(latency: Latency, strong: Callable[[str], str] = _plain) -> str:
    """What the measurement says, in one sentence; `strong` marks the figure (bold in the dashboard)."""
    speedup = latency.speedup or 1.0
    low, high = _interval(latency)
    pairs = min(latency.original.runs, latency.compressed.runs)
    interval = f"{CONFIDENCE:.0%} interval {low:.2f}–{high:.2f}× over {pairs} interleaved pairs"
    found = effect(low, high)
    if found == "faster":
        return f"The compressed model ran {strong(f'{speedup:.2f}× faster')} (median against median; {interval})."
    if found == "slower":
        return f"The compressed model ran {strong(f'{1 / speedup:.2f}× slower')} (median against median; {interval})."
    return f"No measurable difference ({speedup:.2f}×; the {interval} does not clear 1 ± {MIN_EFFECT:.0%})."


def verdict_agreement(expected: str, latency: Latency, strong: Callable[[str], str] = _plain) -> str:
    """Whether the measurement confirms the verdict given before it."""
    measured = measured_effect(latency)
    if expected == "mixed":
        return f"measured {measured}"
    confirmed = measured == expected or (expected == "no faster" and measured == "slower")
    return (
        f"the measurement {strong('confirms')} it"
        if confirmed
        else f"the measurement {strong('contradicts')} it ({measured})"
    )
