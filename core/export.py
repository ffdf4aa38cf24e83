"""Serialise the compressed model to the exact bytes the user downloads, checked before anything is written.

Weight-only quantization is written by this tool (int8 codes + DequantizeLinear). Int8 activations are written by
ONNX Runtime's own quantizers from the float graph with the weights already on their n-bit grid, so the codes
they store are that grid's.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from core.activations import quantize_dynamic_int8, quantize_static_qdq
from core.calibration import calibration_for
from core.compress import Compressed


def export_bytes(compressed: Compressed, progress: Callable[[float], None] | None = None) -> bytes:
    """The export, validated with the full ONNX checker (including strict shape inference).

    `progress` hears how far static calibration has got (0-1).
    """
    mode = compressed.activation_mode
    if mode == "none":
        proto = compressed.export_onnx()
    else:
        float_model = compressed.reference_onnx()
        keep = list(compressed.recipe.quant.keep_float)
        if mode == "static":
            calibration = calibration_for(compressed.model, compressed.recipe.quant.calibration)
            method = compressed.recipe.quant.calib_method
            data = quantize_static_qdq(float_model, calibration.inputs, method, keep, progress)
        else:
            data = quantize_dynamic_int8(float_model, keep)
        proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()
