"""Int8 activations with ONNX Runtime's own quantization tools: `quantize_static` (QDQ, calibrated) and
`quantize_dynamic` (activation ranges computed at run time), plus the smoothing that makes dynamic int8 accurate.

These tools write files, so each call works in a private temporary folder and returns the model's bytes.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from core.onnx.batchnorm import fold_batch_norms
from core.onnx.inputs import batch_axes, sample_count, take
from core.onnx.tensors import intermediate_values

Progress = Callable[[float], None]


@dataclass(frozen=True)
class CalibrationMethod:
    help: str
    onnxruntime: str  # the member of onnxruntime.quantization.CalibrationMethod


CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod("the observed minimum and maximum", "MinMax"),
    "entropy": CalibrationMethod("the range that keeps the activation histogram's KL divergence smallest", "Entropy"),
    "percentile": CalibrationMethod(
        "the 99.999th percentile of |activation|, so rare outliers are clipped", "Percentile"
    ),
}
# Dynamic quantization of convolutions gives ConvInteger, which ran 2-3x slower than float on x86 here.
DYNAMIC_OPS = ["MatMul", "Gemm"]
# SmoothQuant's migration strength: on all-MiniLM-L6-v2, dynamic int8 reached a mean cosine to fp32 of 0.9967
# at 0.7 (0.9928 at 0.5, 0.9934 with per-channel weights and no smoothing).
SMOOTH_ALPHA = 0.7
SMOOTH_SAMPLES = 16
CALIBRATION_BATCH = 8


def _quiet_ort_logging() -> None:
    # The tools log a "consider pre-processing" hint on every call; it is not actionable for the user here.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))


def choose_mode(conv_macs: int, matmul_macs: int) -> tuple[str, str]:
    """`auto`: the mode for a model, with the reason shown to the user."""
    if conv_macs >= matmul_macs:
        return "static", (
            f"convolutions carry {conv_macs / max(conv_macs + matmul_macs, 1):.0%} of the MACs: static int8 (QDQ) "
            "fuses into QLinearConv; dynamic quantization of convolutions (ConvInteger) runs slower than float on x86"
        )
    return "dynamic", (
        f"MatMul/Gemm carry {matmul_macs / max(conv_macs + matmul_macs, 1):.0%} of the MACs: dynamic int8 needs no "
        "calibration and suits transformers, whose activation ranges vary per input"
    )


class _Reader:
    """ONNX Runtime's calibration data reader over in-memory inputs, in batches, reporting progress."""

    def __init__(self, feeds: dict[str, np.ndarray], axes: dict[str, int | None], progress: Progress | None) -> None:
        total = sample_count(feeds, axes)
        self.batches = [
            take(feeds, axes, start, start + CALIBRATION_BATCH) for start in range(0, total, CALIBRATION_BATCH)
        ]
        self.position, self.progress = 0, progress

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        batch = self.batches[self.position]
        self.position += 1
        if self.progress:
            self.progress(self.position / len(self.batches))
        return batch

    def rewind(self) -> None:
        self.position = 0


def quantize_static_qdq(
    model: onnx.ModelProto,
    calibration: dict[str, np.ndarray],
    method: str,
    keep_float: list[str],
    progress: Progress | None = None,
) -> bytes:
    """Static int8: uint8 activations (x86 kernels prefer U8S8), per-channel symmetric int8 weights, QDQ; each
    BatchNormalization that alone reads a convolution's output is folded into it first, so no float op is left between their
    converters (see `core.onnx.batchnorm`)."""
    from onnxruntime import quantization  # here, not at the top: it takes 1.4 s to import and only exports need it

    model, _ = fold_batch_norms(model)
    _quiet_ort_logging()

    class Reader(_Reader, quantization.CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="squeezelab-quant-") as folder:
        output = Path(folder) / "quantized.onnx"
        quantization.quantize_static(
            model,
            output,
            Reader(calibration, batch_axes(model), progress),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=keep_float,
            calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[method].onnxruntime),
            extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False},
        )
        return output.read_bytes()


def quantize_dynamic_int8(
    model: onnx.ModelProto,
    calibration: dict[str, np.ndarray],
    method: str,
    keep_float: list[str],
    progress: Progress | None = None,
) -> bytes:
    """Dynamic int8 on MatMul/Gemm: activation ranges taken at run time, so calibration is not used."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # 1.4 s to import: only exports need it

    _quiet_ort_logging()
    with tempfile.TemporaryDirectory(prefix="squeezelab-quant-") as folder:
        output = Path(folder) / "quantized.onnx"
        quantize_dynamic(
            model,
            output,
            op_types_to_quantize=DYNAMIC_OPS,
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
        )
        return output.read_bytes()


def smooth_matmul_inputs(
    model: onnx.ModelProto, calibration: dict[str, np.ndarray], alpha: float, keep_float: set[str]
) -> onnx.ModelProto:
    """SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before int8 quantization.

    For each activation X feeding MatMuls with constant weights W: s_k = max|X_k|^alpha / max|W_k|^(1-alpha),
    then X / s (one Mul on the activation) and diag(s) W: the float result is unchanged, and X's per-tensor int8
    range is no longer set by a few large channels.
    """
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    targets: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if (
            weight in constants
            and uses[weight] == 1
            and len(constants[weight].dims) == 2
            and node.name not in keep_float
        ):
            targets.setdefault(node.input[0], []).append(node)
    if not targets:
        return model
    feeds = {name: values[:SMOOTH_SAMPLES] for name, values in calibration.items()}
    activations = intermediate_values(model, feeds, [name for name in targets if name not in feeds]) | feeds
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    weights = {init.name: numpy_helper.to_array(init) for init in smoothed.graph.initializer}
    muls: dict[str, onnx.NodeProto] = {}
    for tensor, nodes in targets.items():
        values = activations[tensor]
        x_max = np.abs(values.reshape(-1, values.shape[-1])).max(0).astype(np.float64)
        w_max = np.max([np.abs(weights[node.input[1]]).max(1) for node in nodes], axis=0).astype(np.float64)
        scale = np.where((x_max > 0) & (w_max > 0), x_max**alpha / np.maximum(w_max, 1e-12) ** (1 - alpha), 1.0)
        for node in nodes:
            weights[node.input[1]] = (weights[node.input[1]] * scale[:, None]).astype(np.float32)
        inverse = f"{tensor}_smooth_inverse"
        weights[inverse] = (1 / scale).astype(np.float32)
        muls[tensor] = helper.make_node("Mul", [tensor, inverse], [f"{tensor}_smoothed"], name=f"{tensor}_smooth")
    ordered, placed = [], set()
    for node in smoothed.graph.node:
        if node.op_type == "MatMul" and node.input[0] in muls:
            tensor = node.input[0]
            if tensor not in placed:  # the Mul goes right before the first MatMul that reads it
                ordered.append(muls[tensor])
                placed.add(tensor)
            node.input[0] = f"{tensor}_smoothed"
        ordered.append(node)
    del smoothed.graph.node[:]
    smoothed.graph.node.extend(ordered)
    del smoothed.graph.initializer[:]
    smoothed.graph.initializer.extend(numpy_helper.from_array(values, name) for name, values in weights.items())
    return smoothed


# (float model, calibration inputs, calibration method, nodes left in float, progress) -> the quantized ONNX bytes
Quantizer = Callable[[onnx.ModelProto, dict[str, np.ndarray], str, list[str], Progress | None], bytes]


@dataclass(frozen=True)
class ActivationMode:
    """How activations are computed in the export."""

    name: str
    help: str
    activations: str  # what they are at run time, for the report ({method}: the calibration method)
    quantize: Quantizer | None = None  # ONNX Runtime's quantizer that writes the export; None: weights only
    calibrated: bool = False  # needs calibration inputs
    smoothing: bool = False  # SmoothQuant's scaling applies by default
    choose: Callable[[int, int], tuple[str, str]] | None = None  # picks a mode from (conv MACs, MatMul MACs)

    @property
    def int8(self) -> bool:
        """Quantizes activations (or may, once chosen), so it needs quantized weights."""
        return self.quantize is not None or self.choose is not None

    @property
    def may_calibrate(self) -> bool:
        return self.calibrated or self.choose is not None


ACTIVATION_MODES: dict[str, ActivationMode] = {
    mode.name: mode
    for mode in (
        ActivationMode("none", "weights only: smaller file, float compute", "float"),
        ActivationMode(
            "dynamic",
            "int8 MatMul/Gemm, activation ranges taken at run time (transformers, MLPs)",
            "uint8, range taken from each input at run time",
            quantize_dynamic_int8,
            smoothing=True,
        ),
        ActivationMode(
            "static",
            "int8 everywhere, activation ranges calibrated beforehand, QDQ format (CNNs)",
            "uint8, ranges calibrated beforehand ({method})",
            quantize_static_qdq,
            calibrated=True,
        ),
        ActivationMode(
            "auto",
            "static for convolution-heavy models, dynamic for MatMul-heavy ones",
            "chosen per model",
            smoothing=True,  # if it picks dynamic
            choose=choose_mode,
        ),
    )
}
