"""Typed results. The JSON report is `asdict` of these, so the dashboard, the CLI and files agree."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.compression.blocks import BlockCost
from core.compression.recovery import RecoveryInfo
from core.data.quality import QUALITY_METRICS, Accuracy, Fidelity, Measured, TargetFit


@dataclass(frozen=True)
class LayerStats:
    """One prunable layer of the original model and what compression left of it."""

    name: str
    node: str
    op_type: str
    shape: list[int]
    params: int
    zeros: int  # weights set to zero or physically removed
    sparsity: float  # zeros / params
    bits: int
    macs: int  # per sample, original
    collapsed: bool  # every weight zero: the layer's output no longer depends on its input
    shape_after: list[int] = field(default_factory=list)  # empty when the layer was removed with its block
    channels: int = 0  # output channels, original
    channels_kept: int = 0
    macs_after: int = 0  # per sample, as ONNX Runtime runs the compressed graph (dense kernels)
    left_whole: str | None = None  # structured pruning: why none of its channels could be removed
    original_zeros: int = 0  # zeros the original already had


@dataclass(frozen=True)
class Histogram:
    """Counts of original and compressed weights on the same bin edges (len(edges) == len(counts) + 1)."""

    edges: list[float]
    original: list[int]
    compressed: list[int]


@dataclass(frozen=True)
class CodeCounts:
    """How many weights sit on each level of the quantization grid (integer codes, zero included)."""

    codes: list[int]
    counts: list[int]
    bits: int = 8  # the grid's width (over all layers with mixed widths: the widest)


@dataclass(frozen=True)
class WeightSummary:
    """What the weights alone tell, without running the model: cheap enough to redo on every slider move."""

    layers: list[LayerStats]
    totals: dict[str, Any]
    collapsed_layers: list[str]
    histograms: dict[str, Histogram]  # "all" and one per layer name
    quantization_codes: dict[str, CodeCounts]  # "all" and one per layer name; empty when quantization is off


@dataclass(frozen=True)
class LayerSqnr:
    """Signal-to-quantization-noise ratio in dB: higher is better; every 6 dB is about one bit."""

    node: str
    weight_db: float | None  # None: the weights came through unchanged
    output_db: float | None  # the layer's output, pruned float model against the export: quantization alone
    total_db: float | None = None  # the same output, original model against the export: pruning and quantization


@dataclass(frozen=True)
class QuantizationInfo:
    mode: str  # resolved activation mode: none, dynamic, static
    reason: str
    weight_bits: int
    levels: int  # distinct values of the weight grid
    stored_as: str
    activations: str
    calibration: str | None
    calibration_is_random: bool
    keep_float: list[str]
    smooth_alpha: float
    sqnr: list[LayerSqnr]
    kernel_note: str | None = None  # what this CPU's int8 kernels do to accuracy, where it matters


@dataclass(frozen=True)
class SizeStats:
    raw: int
    gzip: int | None  # None above GZIP_UP_TO (compressing gigabytes here runs at ~40 MB/s), or not measured yet
    unmeasured: str = "not measured (over 1 GiB)"  # what stands for gzip when it is None

    @classmethod
    def raw_only(cls, raw: int) -> SizeStats:
        return cls(raw, None, "being measured")

    def gzip_text(self) -> str:
        return self.unmeasured if self.gzip is None else f"{self.gzip:,} B"


@dataclass(frozen=True)
class LatencyStats:
    median: float
    p90: float
    p10: float
    spread: float  # p90 - p10
    runs: int
    samples: list[float]


@dataclass(frozen=True)
class Environment:
    threads: int
    onnxruntime: str
    cpu: str
    cpu_flags: list[str]
    flush_denormals: bool = False  # both models timed with denormal floats computed as zero (FLUSH_DENORMALS)


@dataclass(frozen=True)
class Latency:
    original: LatencyStats
    compressed: LatencyStats | None
    environment: Environment
    speedup: float | None  # original median / compressed median
    # its confidence interval from the interleaved pairs (core.measure.noise); None where not compared
    speedup_interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class Reason:
    effect: str  # "faster", "slower" or "same"
    text: str


@dataclass(frozen=True)
class Verdict:
    expectation: str  # "faster", "slower", "no faster", or "mixed"
    reasons: list[Reason]

    @property
    def summary(self) -> str:
        return {
            "faster": "should run faster",
            "slower": "should run slower",
            "no faster": "should run no faster",
            "mixed": "may go either way",
        }[self.expectation]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    description: str
    task: str
    trained: bool | None
    sha256: str
    prunable_params: int
    eval_inputs: str  # "sample" (the model's own), "random" (made up) or "data" (the user's, see `data`)
    # the user's data: source, sha256, samples in the tuning and held-out parts, split; None without
    data: dict | None = None


@dataclass(frozen=True)
class Report:
    model: ModelInfo
    settings: dict[str, Any]
    layers: list[LayerStats]
    totals: dict[str, Any]
    collapsed_layers: list[str]
    histograms: dict[str, Histogram]  # "all" and one per layer name
    quantization_codes: dict[str, CodeCounts]
    left_whole: dict[str, str]  # structured pruning: layer node -> why it could not be pruned
    blocks: list[BlockCost]  # block granularity: every droppable block, its cost alone, whether dropped
    size_bytes: dict[str, SizeStats]  # "original" and "compressed"
    fidelity: Fidelity
    accuracy: Accuracy | None
    targets: TargetFit | None = None  # the first output against the user's targets
    metric: str = "cosine"  # what the model is judged by (core.data.quality.metric_of)
    quantization: QuantizationInfo | None = None
    verdict: Verdict | None = None  # the expected speed effect and its reasons
    latency_ms: Latency | None = None
    notes: list[str] = field(default_factory=list)
    recovery: RecoveryInfo | None = None  # the export's weights were trained after compression

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def quality(self) -> tuple[str, float]:
        """The headline (metric, value), by the metric the model is judged by."""
        return self.metric, QUALITY_METRICS[self.metric].measured(Measured(self.accuracy, self.fidelity, self.targets))
