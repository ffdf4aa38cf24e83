"""Multiply-accumulates per prunable layer, from the tensor shapes ONNX Runtime really produces."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from core.onnx.graph import PRUNABLE_OPS, Layer
from core.onnx.tensors import intermediate_values


def graph_macs(
    proto: onnx.ModelProto,
    layers: Sequence[Layer],
    feeds: dict[str, np.ndarray],
    external_data_folder: Path | None = None,
) -> dict[str, int]:
    """Multiply-accumulates per prunable weight for one sample, from tensor shapes ONNX Runtime really produces."""
    by_name = {layer.name: layer for layer in layers}
    uses = []  # (weight name, node)
    for node in proto.graph.node:
        if node.op_type in PRUNABLE_OPS:
            uses += [(name, node) for name in node.input if name in by_name]
    wanted = sorted({node.output[0] for _, node in uses} | {node.input[0] for _, node in uses})
    shapes = {
        name: values.shape for name, values in intermediate_values(proto, feeds, wanted, external_data_folder).items()
    }
    shapes |= {name: values.shape for name, values in feeds.items()}
    macs = dict.fromkeys(by_name, 0)
    for name, node in uses:
        layer = by_name[name]
        if node.op_type == "ConvTranspose":
            # every input pixel meets every weight once
            macs[name] += int(np.prod(shapes[node.input[0]][2:])) * layer.params
        else:
            # each output element is a dot product over params / out_channels weights
            macs[name] += int(np.prod(shapes[node.output[0]])) * layer.params // layer.out_channels
    return macs
