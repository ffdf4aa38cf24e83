"""Serialise the compressed model to the exact bytes the user downloads, checked before anything is written.

Weight-only quantization is written by this tool (int8 codes + DequantizeLinear). Int8 activations are written by
ONNX Runtime's own quantizers from the float graph with the weights already on their n-bit grid, so the codes
they store are that grid's.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from core.activations import quantize_dynamic_int8, quantize_static_qdq
from core.compress import Compressed
from core.sandbox import run_isolated


def quantize_activations(
    float_model: bytes, mode: str, calibration: dict, method: str, keep: list[str], progress=None
) -> bytes:
    model = onnx.load_from_string(float_model)
    if mode == "static":
        return quantize_static_qdq(model, calibration, method, keep, progress)
    return quantize_dynamic_int8(model, keep)


def export_bytes(compressed: Compressed, progress: Callable[[float], None] | None = None) -> bytes:
    """The export, validated with the full ONNX checker (including strict shape inference).

    `progress` hears how far static calibration has got (0-1).
    """
    mode = compressed.activation_mode
    if mode == "none":
        proto = compressed.export_onnx()
    else:
        quant = compressed.recipe.quant
        float_model = compressed.reference_onnx().SerializeToString()
        inputs = compressed.calibration.inputs if compressed.calibration else {}
        # every layer this tool left in float (keep_float, skipped, 32-bit overrides) stays float in ONNX Runtime too
        keep = [layer.node for layer in compressed.layers if layer.name not in compressed.quantized]
        arguments = (float_model, mode, inputs, quant.calib_method, keep)
        if compressed.model.is_sample:
            data = quantize_activations(*arguments, progress=progress)
        else:  # a user's model: ONNX Runtime's quantizers run it, so they run in a sandbox child
            data = run_isolated(
                quantize_activations, *arguments, source=compressed.model.name, what="quantization", progress=progress
            )
        proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()
