"""Serialise the compressed model to the exact bytes the user downloads, checked before anything is written."""

from __future__ import annotations

import onnx

from core.compress import Compressed


def export_bytes(compressed: Compressed) -> bytes:
    """The export, validated with the full ONNX checker (including strict shape inference)."""
    proto = compressed.export_onnx()
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()
