"""Intermediate tensors of a graph, read by running it in ONNX Runtime with those tensors exposed as outputs.

Shapes come from a real run rather than static inference, because exported graphs often leave shapes symbolic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from core.onnx.runtime import create_session, with_data_in


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor whose type shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def intermediate_values(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    names: list[str] | None = None,
    external_data_folder: Path | None = None,
) -> dict[str, np.ndarray]:
    """Values of `names` (default: every node output whose type is known) for one run on `feeds`.
    `external_data_folder`: where a large model's external weights are."""
    types = _element_types(model)
    produced = [name for node in model.graph.node for name in node.output if name]
    available = set(produced) | set(feeds)
    wanted = [name for name in (produced if names is None else names) if name in types and name in available]
    if not wanted:
        return {}  # ONNX Runtime reads an empty output list as "every output"
    # The wanted tensors become extra graph outputs. Protobuf merges a message serialised after another into it
    # (repeated fields append), so the probe is the model's bytes followed by a graph holding only those outputs:
    # the model (shared, never changed) is neither copied nor touched.
    known = {output.name for output in model.graph.output}
    extra = onnx.ModelProto()
    extra.graph.output.extend(
        helper.make_tensor_value_info(name, types[name], None) for name in wanted if name not in known
    )
    session = create_session(with_data_in(model.SerializeToString() + extra.SerializeToString(), external_data_folder))
    return dict(zip(wanted, session.run(wanted, feeds), strict=True))


def tensor_shapes(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], external_data_folder: Path | None = None
) -> dict[str, tuple[int, ...]]:
    shapes = {name: tuple(values.shape) for name, values in feeds.items()}
    values = intermediate_values(model, feeds, None, external_data_folder)
    shapes |= {name: tuple(array.shape) for name, array in values.items()}
    shapes |= {init.name: tuple(init.dims) for init in model.graph.initializer}
    return shapes
