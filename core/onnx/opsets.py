"""Old opsets brought up to the one weight quantization needs: a graph pass from a model to a new model, or the
reason it could not be done. Most models in the wild are exported at opset 11 or 12; per-axis DequantizeLinear,
which this tool's quantized weights use, exists from opset 13."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import version_converter

from core.onnx.graph import opset_version

MIN_QDQ_OPSET = 13  # per-axis DequantizeLinear
MAX_OUTPUT_CHANGE = 1e-5  # the converted model must compute this close to the original, in ONNX Runtime


@dataclass(frozen=True, eq=False)
class Upgrade:
    """The model converted to `MIN_QDQ_OPSET` (None when it already was, or could not be), and why not."""

    model: onnx.ModelProto | None
    from_opset: int
    failure: str = ""


def upgraded(model: onnx.ModelProto) -> Upgrade:
    """`model` converted by onnx's version converter and checked; the caller compares its outputs in ONNX Runtime."""
    version = opset_version(model)
    if version >= MIN_QDQ_OPSET:
        return Upgrade(None, version)
    try:
        converted = version_converter.convert_version(model, MIN_QDQ_OPSET)
        onnx.checker.check_model(converted)
    except Exception as error:  # noqa: BLE001 - the converter raises several types; any means "not converted"
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return Upgrade(None, version, lines[0] if lines else type(error).__name__)
    return Upgrade(converted, version)
