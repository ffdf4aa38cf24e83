"""Peak memory while compressing a model too large for one protobuf: a generated ~500 M-parameter MLP (2 GB of
float32 weights kept in external data), compressed by the CLI in a child process whose peak RSS is printed.

Target (issue 6): peak resident memory <= 3x the model's fp32 size, for loading, pruning, quantizing and writing
the export together (the CLI's `compress`). The export over 2 GB is written with external data.
Run: .venv/bin/python bench/large_model.py [--width 4096] [--layers 30] [--keep]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

TARGET_RATIO = 3.0


def generate_mlp(folder: Path, width: int, layers: int, seed: int = 0) -> Path:
    """`layers` Gemm layers of width x width with ReLU between, weights streamed to `weights.bin` one layer at a
    time (the generator never holds the model in memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    initializers, nodes, offset = [], [], 0
    previous = "input"
    with open(folder / "weights.bin", "wb") as data:
        for index in range(layers):
            for name, shape in ((f"fc{index}.weight", (width, width)), (f"fc{index}.bias", (width,))):
                values = (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(width)).astype(np.float32)
                data.write(values.tobytes())
                tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (
                    ("location", "weights.bin"),
                    ("offset", str(offset)),
                    ("length", str(values.nbytes)),
                ):
                    tensor.external_data.add(key=key, value=value)
                initializers.append(tensor)
                offset += values.nbytes
            output = f"fc{index}" if index == layers - 1 else f"relu{index}"
            nodes.append(
                helper.make_node(
                    "Gemm",
                    [previous, f"fc{index}.weight", f"fc{index}.bias"],
                    [f"fc{index}"],
                    name=f"fc{index}",
                    transB=1,
                )
            )
            if index < layers - 1:
                nodes.append(helper.make_node("Relu", [f"fc{index}"], [output], name=f"relu{index}"))
            previous = output
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["batch", width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "mlp.onnx"
    onnx.save_model(model, path)
    return path
