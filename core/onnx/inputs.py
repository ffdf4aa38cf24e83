"""What a graph takes as input: each input's element type and dimensions, and seeded inputs that fit them."""

from __future__ import annotations

import numpy as np
import onnx

from core.errors import UnsupportedModelError

RANDOM_EVAL_SEED = 0
RANDOM_EVAL_BATCH = 8
SYMBOLIC_DIM = 16  # what a symbolic dimension other than the batch becomes in random inputs


def input_specs(proto: onnx.ModelProto) -> dict[str, tuple[np.dtype, list[int | None]]]:
    """Each graph input (initializers excluded): its numpy dtype and dimensions, None where symbolic."""
    initializers = {init.name for init in proto.graph.initializer}
    specs = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in tensor.shape.dim]
        specs[value.name] = (onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type), dims)
    return specs


def random_inputs_for(
    proto: onnx.ModelProto, source: str, batch: int = RANDOM_EVAL_BATCH, seed: int = RANDOM_EVAL_SEED
) -> dict[str, np.ndarray]:
    """Seeded inputs matching the graph's input spec: normal floats, ones for integers; symbolic dims become
    `batch` (first axis) or 16."""
    rng = np.random.default_rng(seed)
    initializer_names = {init.name for init in proto.graph.initializer}
    feeds = {}
    for value in proto.graph.input:
        if value.name in initializer_names:
            continue
        if not value.type.HasField("tensor_type"):
            raise UnsupportedModelError(f"input {value.name!r} is not a tensor", source)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = [
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else (batch if axis == 0 else SYMBOLIC_DIM)
            for axis, dim in enumerate(value.type.tensor_type.shape.dim)
        ]
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[value.name] = np.ones(shape, dtype)
    return feeds
