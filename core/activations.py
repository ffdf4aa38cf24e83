"""Int8 activations with ONNX Runtime's own quantization tools: `quantize_static` (QDQ, calibrated) and
`quantize_dynamic` (activation ranges computed at run time), plus the smoothing that makes dynamic int8 accurate.

These tools write files, so each call works in a private temporary folder and returns the model's bytes.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from core.tensors import intermediate_values

Progress = Callable[[float], None]

ACTIVATION_MODES: dict[str, str] = {
    "none": "weights only: smaller file, float compute",
    "dynamic": "int8 MatMul/Gemm, activation ranges taken at run time (transformers, MLPs)",
    "static": "int8 everywhere, activation ranges calibrated beforehand, QDQ format (CNNs)",
    "auto": "static for convolution-heavy models, dynamic for MatMul-heavy ones",
}
CALIBRATION_METHODS: dict[str, str] = {
    "minmax": "the observed minimum and maximum",
    "entropy": "the range that keeps the activation histogram's KL divergence smallest",
    "percentile": "the 99.999th percentile of |activation|, so rare outliers are clipped",
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

    def __init__(self, feeds: dict[str, np.ndarray], progress: Progress | None) -> None:
        total = len(next(iter(feeds.values())))
        self.batches = [
            {name: values[start : start + CALIBRATION_BATCH] for name, values in feeds.items()}
            for start in range(0, total, CALIBRATION_BATCH)
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
    """Static int8: uint8 activations (x86 kernels prefer U8S8), per-channel symmetric int8 weights, QDQ."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    _quiet_ort_logging()
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }

    class Reader(_Reader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="squeezelab-quant-") as folder:
        output = Path(folder) / "quantized.onnx"
        quantize_static(
            model,
            output,
            Reader(calibration, progress),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
            calibrate_method=methods[method],
            extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False},
        )
        return output.read_bytes()


def quantize_dynamic_int8(model: onnx.ModelProto, keep_float: list[str]) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

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
