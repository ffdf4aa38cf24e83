"""'Why isn't it faster?' in words: the original's and the export's profiles side by side, per op type, per node
and per prunable layer, and findings, each derived from the profiles and the graph with the figure behind it.

Each finding is a rule in FINDINGS that returns its text only when its condition holds in these profiles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from core.compression.recipe import FLOAT_BITS
from core.measure.benchmark import nchwc_block
from core.measure.noise import effect, speedup_interval
from core.measure.profile import DENORMAL_SUSPECTS, NCHWC_MARK, QUANTIZE_OPS, Profile
from core.measure.report import LayerStats
from core.onnx.runtime import FLUSH_DENORMALS

# an op profiled again with denormals flushed is named where it gained this much: a share of its time, and ms
DENORMAL_GAIN, DENORMAL_GAIN_MS = 0.3, 0.05
OFF_BY = 0.2  # a layer whose measured time ratio is this far from its MAC ratio is named, with the reason
OUTSIDE_SHARE = 0.15  # of the run outside the kernels, above which the overhead is a finding
FLOAT_SHARE = 0.2  # of the export's kernel time, above which a float layer "dominates"
ZERO_SPARSITY = 0.25  # unstructured zeros worth a finding
UNCHANGED = 0.15  # a time ratio within 1 +- this is "unchanged"
UNTOUCHED_SHARE = 0.25  # of the export's kernel time in ops outside every prunable layer, above which it bounds speed
NOISY_SPREAD = 0.2  # (p90 - p10) / median above which more threads made the runs noisy
LAYOUT_OPS = ("Transpose", "Reshape", "ReorderInput", "ReorderOutput", "MemcpyToHost", "MemcpyFromHost", "Identity",
              "Cast", "Squeeze", "Unsqueeze", "Flatten")  # fmt: skip
TOP_NODES = 10


@dataclass(frozen=True)
class LayerTiming:
    layer: str
    before_ms: float
    after_ms: float
    mac_ratio: float | None  # MACs after / before: the time ratio pruning predicts (None: no recipe to read)
    sparsity: float | None  # None, with bits: no recipe to read (an export given as a file)
    bits: int | None
    channels: int
    channels_kept: int
    ops_before: list[str]
    ops_after: list[str]
    reason: str | None = None  # why the measured ratio is more than OFF_BY from the MAC ratio

    @property
    def measured_ratio(self) -> float | None:
        return self.after_ms / self.before_ms if self.before_ms > 0 else None


@dataclass(frozen=True)
class Finding:
    key: str
    text: str
    slows: bool  # explains an export slower (or no faster) than expected


@dataclass(frozen=True)
class ProfileComparison:
    original: Profile
    compressed: Profile
    op_types: list[tuple[str, float, float]]  # (op type, ms per run before, after), by time after + before
    # (layer or node, op types, ms before, ms after): the largest changes first; a layer with all its nodes
    top_changes: list[tuple[str, str, float, float]]
    layers: list[LayerTiming]
    findings: list[Finding] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.original.median_ms / self.compressed.median_ms

    @property
    def effect(self) -> str:
        """'faster', 'slower' or 'no faster', by the one rule for noise, on the profiled runs."""
        return effect(*speedup_interval(self.original.samples, self.compressed.samples))

    def explaining(self) -> list[Finding]:
        """The findings that explain an export no faster than expected."""
        return [finding for finding in self.findings if finding.slows]

    def verdict_check(self, expected: str) -> str:
        """The verdict given before measuring against the profiled runs, with the findings that explain an export
        no faster, and where the expectation was wrong, which of them it missed."""
        found = self.effect
        text = f"expected {expected}; measured {found} ({self.speedup:.2f}x in the profiled runs)"
        keys = ", ".join(finding.key for finding in self.explaining()) if found != "faster" else ""
        wrong = expected not in (found, "mixed") and not (expected == "no faster" and found == "slower")
        if wrong:
            return text + (f"; the expectation missed it, explained by: {keys}" if keys else
                           "; the expectation missed it, and no finding explains it")  # fmt: skip
        return text + (f"; why: {keys}" if keys else "")


def to_dict(comparison: ProfileComparison) -> dict:
    """The JSON the CLI writes: the dataclasses, with the derived figures spelled out."""
    data = asdict(comparison)
    for key, profile in (("original", comparison.original), ("compressed", comparison.compressed)):
        data[key] |= {"kernel_ms": profile.kernel_ms, "outside_ms": profile.outside_ms}
    for row, layer in zip(data["layers"], comparison.layers, strict=True):
        row["measured_ratio"] = layer.measured_ratio
    return data


def compare(original: Profile, compressed: Profile, stats: list[LayerStats] | None = None,
            keep_float: tuple[str, ...] = ()) -> ProfileComparison:  # fmt: skip
    """`stats`: the layers as the recipe left them (sparsity, bits, channels, MACs), where there is a recipe."""
    before, after = original.by_op_type(), compressed.by_op_type()
    op_types = sorted(set(before) | set(after), key=lambda op: -(before.get(op, 0) + after.get(op, 0)))
    old, new = _units(original), _units(compressed)
    changes = []
    for name in set(old) | set(new):
        ops_before, before_ms = old.get(name, ([], 0.0))
        ops_after, after_ms = new.get(name, ([], 0.0))
        kernels = [", ".join(_kernels(ops) or ops) for ops in (ops_before, ops_after) if ops]
        changes.append((name, " -> ".join(dict.fromkeys(kernels)), before_ms, after_ms))
    changes.sort(key=lambda change: -abs(change[3] - change[2]))
    comparison = ProfileComparison(
        original, compressed, [(op, before.get(op, 0.0), after.get(op, 0.0)) for op in op_types],
        changes[:TOP_NODES], _layers(original, compressed, stats),
    )  # fmt: skip
    findings = [finding for rule in FINDINGS.values() if (finding := rule(comparison, keep_float))]
    return replace(comparison, findings=findings)


def _layers(original: Profile, compressed: Profile, stats: list[LayerStats] | None) -> list[LayerTiming]:
    before, after = original.by_layer(), compressed.by_layer()
    known = {layer.node: layer for layer in stats or []}
    rows = []
    for layer in sorted(before, key=lambda name: -sum(node.ms for node in before[name])):
        fact = known.get(layer)
        nodes_after = after.get(layer, [])
        row = LayerTiming(
            layer,
            sum(node.ms for node in before[layer]),
            sum(node.ms for node in nodes_after),
            (fact.macs_after / fact.macs if fact.macs else None) if fact else None,
            fact.sparsity if fact else None,
            fact.bits if fact else None,
            fact.channels if fact else 0,
            fact.channels_kept if fact else 0,
            sorted({node.op_type for node in before[layer]}),
            sorted({node.op_type for node in nodes_after}),
        )
        rows.append(replace(row, reason=_off_by(row, nodes_after)))
    return rows


def _off_by(row: LayerTiming, nodes_after) -> str | None:
    """Why a layer's measured time ratio is more than OFF_BY from its MAC ratio, from what the profile shows."""
    measured = row.measured_ratio
    if row.mac_ratio is None or measured is None or abs(measured / max(row.mac_ratio, 1e-9) - 1) <= OFF_BY:
        return None
    if not nodes_after:
        return "removed with its block"
    reasons = []
    converting = sum(node.ms for node in nodes_after if node.op_type in QUANTIZE_OPS)
    if converting > 0.1 * row.after_ms:
        reasons.append(f"{converting:.3f} ms of its {row.after_ms:.3f} ms converts int8 to float or back")
    if _kernels(row.ops_after) != _kernels(row.ops_before):
        reasons.append(f"it runs as {', '.join(_kernels(row.ops_after))} instead of {', '.join(row.ops_before)}")
    if (row.sparsity or 0) >= ZERO_SPARSITY and row.channels_kept == row.channels:
        reasons.append(f"its {row.sparsity:.0%} zeros are multiplied by a dense kernel")
    if reasons:
        return "; ".join(reasons)
    if measured > row.mac_ratio:
        return "fewer MACs, but the kernel's fixed cost per call does not shrink with them"
    return "the kernel ran faster than its MACs predict (a better-fitting blocking of the smaller shape)"


def _units(profile: Profile) -> dict[str, tuple[list[str], float]]:
    """What is compared node by node: a prunable layer, with every node that computes it (a quantizer renames
    and replaces them, converters included), or a node no layer owns. Name -> (its op types, ms per run)."""
    units: dict[str, tuple[list[str], float]] = {}
    for node in profile.nodes:
        ops, ms = units.get(node.layer or node.name, ([], 0.0))
        units[node.layer or node.name] = ([*ops, node.op_type] if node.op_type not in ops else ops, ms + node.ms)
    return units


def _kernels(ops: list[str]) -> list[str]:
    """The op types that compute, not the conversions around them."""
    return [op for op in ops if op not in QUANTIZE_OPS]


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def _dequantize(comparison: ProfileComparison, _: tuple) -> Finding | None:
    nodes = [node for node in comparison.compressed.nodes if node.op_type == "DequantizeLinear" and node.reads_weights]
    if not nodes or any(
        node.op_type == "DequantizeLinear" and node.reads_weights for node in comparison.original.nodes
    ):
        return None
    ms = sum(node.ms for node in nodes)
    return Finding("dequantize", f"Weight-only DequantizeLinear costs {_ms(ms)} per run ({ms / comparison.compressed.kernel_ms:.0%} "
                   f"of the export's kernel time): {len(nodes)} int8 weight tensor(s) are turned back into float at "
                   "every run, before the float kernels can use them.", True)  # fmt: skip


def _unfused(comparison: ProfileComparison, _: tuple) -> Finding | None:
    nodes = [node for node in comparison.compressed.nodes if node.op_type in ("QuantizeLinear", "DequantizeLinear")
             and not node.reads_weights]  # fmt: skip
    if not nodes:
        return None
    around = sorted({op for node in nodes for op in node.feeds if op not in ("QuantizeLinear", "DequantizeLinear")})
    return Finding("unfused", f"{len(nodes)} QuantizeLinear/DequantizeLinear node(s) on activations were left "
                   f"unfused{' around ' + ', '.join(around) if around else ''}: {_ms(sum(n.ms for n in nodes))} per "
                   "run converting between int8 and float.", True)  # fmt: skip


def _conv_integer(comparison: ProfileComparison, _: tuple) -> Finding | None:
    nodes = [node for node in comparison.compressed.nodes if node.op_type == "ConvInteger"]
    if not nodes:
        return None
    return Finding("conv_integer", f"{len(nodes)} ConvInteger node(s) take {_ms(sum(n.ms for n in nodes))} per run: "
                   "ONNX Runtime's int8 convolution without fused requantization, its slow path on x86.", True)  # fmt: skip


def _zeros(comparison: ProfileComparison, _: tuple) -> Finding | None:
    layers = [
        layer for layer in comparison.layers
        if (layer.sparsity or 0) >= ZERO_SPARSITY and layer.channels_kept == layer.channels and layer.measured_ratio
        and abs(layer.measured_ratio - 1) <= UNCHANGED
    ]  # fmt: skip
    if not layers:
        return None
    worst = layers[0]
    return Finding("zeros", f"{len(layers)} layer(s) with unstructured zeros take the same time as before: "
                   f"{worst.layer} is {worst.sparsity:.0%} zeros and runs in {_ms(worst.after_ms)} "
                   f"({worst.measured_ratio:.2f}x its time before). Dense kernels multiply zeros at full cost.",
                   True)  # fmt: skip


def _kernel_changed(comparison: ProfileComparison, _: tuple) -> Finding | None:
    slower = [
        layer
        for layer in comparison.layers
        if layer.ops_after
        and layer.after_ms > layer.before_ms
        and _kernels(layer.ops_after) != _kernels(layer.ops_before)
        and "ConvInteger" not in layer.ops_after
    ]  # fmt: skip  (ConvInteger has its own finding)
    if not slower:
        return None
    layer = max(slower, key=lambda item: item.after_ms - item.before_ms)
    text = (f"{len(slower)} layer(s) run on another, slower kernel than before: {layer.layer} ran as "
            f"{', '.join(layer.ops_before)} in {_ms(layer.before_ms)}, now as {', '.join(_kernels(layer.ops_after))} "
            f"in {_ms(layer.after_ms)}")  # fmt: skip
    if "DequantizeLinear" in layer.ops_after:
        text += (" with DequantizeLinear: its weights are computed at every run, so ONNX Runtime can no longer "
                 "pre-pack them into its blocked layout")  # fmt: skip
    elif any(op.endswith(NCHWC_MARK) for op in layer.ops_before) and layer.channels_kept < layer.channels:
        block = max(nchwc_block(), 8)  # the profile ran here: a blocked layout was there to leave
        text += (f": {layer.channels_kept} of {layer.channels} channels kept, and ONNX Runtime's blocked layout "
                 f"(NCHWc) takes channel counts in multiples of its block, {block} on this CPU; keep a multiple of "
                 f"{block} channels (channel multiple {block}: `--channel-multiple {block}`)")  # fmt: skip
    return Finding("kernel_changed", text + ".", True)


def _float_dominates(comparison: ProfileComparison, keep_float: tuple) -> Finding | None:
    quantized = any(layer.bits not in (None, FLOAT_BITS) for layer in comparison.layers)
    total = comparison.compressed.kernel_ms
    heavy = [layer for layer in comparison.layers if quantized and (layer.bits == FLOAT_BITS or layer.layer in keep_float)
             and total > 0 and layer.after_ms / total >= FLOAT_SHARE]  # fmt: skip
    if not heavy:
        return None
    layer = max(heavy, key=lambda item: item.after_ms)
    return Finding("float_dominates", f"{layer.layer}, kept in float, takes {layer.after_ms / total:.0%} of the "
                   f"export's kernel time ({_ms(layer.after_ms)} per run): quantizing the rest cannot speed that "
                   "up.", True)  # fmt: skip


def _untouched(comparison: ProfileComparison, _: tuple) -> Finding | None:
    before = {node.name for node in comparison.original.nodes}  # nodes the export added are other findings
    nodes = [node for node in comparison.compressed.nodes
             if node.layer is None and node.op_type not in QUANTIZE_OPS and node.name in before]  # fmt: skip
    ms, total = sum(node.ms for node in nodes), comparison.compressed.kernel_ms
    if not nodes or total <= 0 or ms / total < UNTOUCHED_SHARE:
        return None
    by_op: dict[str, float] = {}
    for node in nodes:
        by_op[node.op_type] = by_op.get(node.op_type, 0.0) + node.ms
    led = ", ".join(f"{op} {_ms(time)}" for op, time in sorted(by_op.items(), key=lambda item: -item[1])[:3])
    bound = comparison.original.median_ms / (ms + comparison.compressed.outside_ms)
    return Finding("untouched", f"{ms / total:.0%} of the export's kernel time ({_ms(ms)} per run) is in ops that "
                   f"no pruning or quantization setting changes, led by {led}: even if every prunable layer took no "
                   f"time, the export could be at most {bound:.1f}x faster than the original.", True)  # fmt: skip


def _layout(comparison: ProfileComparison, _: tuple) -> Finding | None:
    def count(profile: Profile) -> dict[str, list]:
        found: dict[str, list] = {}
        for node in profile.nodes:
            if node.op_type in LAYOUT_OPS:
                found.setdefault(node.op_type, []).append(node)
        return found

    before, after = count(comparison.original), count(comparison.compressed)
    new = {op: nodes for op, nodes in after.items() if len(nodes) > len(before.get(op, []))}
    if not new:
        return None
    added = sum(len(nodes) - len(before.get(op, [])) for op, nodes in new.items())
    ms = sum(node.ms for nodes in new.values() for node in nodes) - sum(
        node.ms for op in new for node in before.get(op, [])
    )
    return Finding("layout", f"{added} new {', '.join(sorted(new))} node(s) in the export, {_ms(max(ms, 0.0))} per "
                   "run more than the original's: data moved or re-laid out, not computed.", ms > 0)  # fmt: skip


def _overhead(comparison: ProfileComparison, _: tuple) -> Finding | None:
    shares = [(name, profile.outside_ms / profile.median_ms, profile) for name, profile in
              (("original", comparison.original), ("export", comparison.compressed)) if profile.median_ms > 0]  # fmt: skip
    outside = [(name, share, profile) for name, share, profile in shares if share >= OUTSIDE_SHARE]
    if not outside:
        return None
    name, share, profile = max(outside, key=lambda item: item[1])
    return Finding("overhead", f"{share:.0%} of each run of the {name} ({_ms(profile.outside_ms)} of "
                   f"{_ms(profile.median_ms)}) is outside the kernels: session overhead that no compression "
                   "removes, so at this size the kernels' savings barely show.", True)  # fmt: skip


def _threads(comparison: ProfileComparison, _: tuple) -> Finding | None:
    profile = comparison.compressed
    spread = profile.spread_ms / profile.median_ms if profile.median_ms else 0.0
    if profile.threads <= 1 or spread < NOISY_SPREAD:
        return None
    return Finding("threads", f"With {profile.threads} intra-op threads the export's runs spread {spread:.0%} of "
                   "their median (p90 - p10): one thread, the default, gives steadier figures on a shared "
                   "machine.", False)  # fmt: skip


def _denormals(comparison: ProfileComparison, _: tuple) -> Finding | None:
    profile = comparison.compressed
    if profile.flushed_by_op is None:
        return None
    times = profile.by_op_type()
    slowed = {op: (ms, profile.flushed_by_op.get(op, 0.0)) for op, ms in times.items() if op in DENORMAL_SUSPECTS
              and ms - profile.flushed_by_op.get(op, ms) >= max(DENORMAL_GAIN_MS, DENORMAL_GAIN * ms)}  # fmt: skip
    if not slowed:
        return None
    spent, flushed = (sum(pair[index] for pair in slowed.values()) for index in (0, 1))
    return Finding("denormals", f"{', '.join(slowed)} takes {_ms(spent)} per run computing on denormal floats (a "
                   "masked attention's exp of scores near -3.4e38 underflows through them): profiled again with "
                   f"denormals flushed to zero, {_ms(flushed)}. That is ONNX Runtime's session option "
                   f"{FLUSH_DENORMALS} = 1, which holds for a whole process when its first session sets it: "
                   "`--flush-denormals` times both models so; set it where you deploy.", True)  # fmt: skip


FINDINGS: dict[str, Callable[[ProfileComparison, tuple], Finding | None]] = {
    "dequantize": _dequantize,
    "unfused": _unfused,
    "conv_integer": _conv_integer,
    "kernel_changed": _kernel_changed,
    "zeros": _zeros,
    "float_dominates": _float_dominates,
    "untouched": _untouched,
    "layout": _layout,
    "overhead": _overhead,
    "threads": _threads,
    "denormals": _denormals,
}
