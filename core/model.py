"""The working representation: an ONNX graph, its prunable weights as read-only numpy arrays, and its eval data."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx

from core.channels import ChannelGraph
from core.graph import Layer, without_initializers
from core.report import SizeStats
from core.runtime import OnnxModel
from sample_models import EvalSet

TASKS = ("classification", "embedding", "unknown")


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded model. Shared between sessions and never mutated; lazily computed facts are memoised."""

    name: str
    source: str
    description: str
    task: str
    trained: bool | None  # None: unknown (an uploaded model)
    onnx_bytes: bytes
    sha256: str
    proto: onnx.ModelProto
    layers: tuple[Layer, ...]
    weights: Mapping[str, np.ndarray]
    eval_set: EvalSet
    eval_inputs_are_random: bool
    folded_nodes: int = 0  # constant nodes turned into initializers at load
    # A large model's prunable weights stay in its external data files, memory-mapped: `weights` are views of
    # them, and `onnx_bytes` / `proto` refer to them by location in this folder.
    external_data_folder: Path | None = None

    @property
    def is_sample(self) -> bool:
        """One of the project's own samples; everything else is a user's file and runs in sandbox children."""
        return self.source.startswith("sample:")

    @property
    def prunable_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def latency_feed(self) -> dict[str, np.ndarray]:
        """One batch-1 input: the first evaluation sample."""
        return {name: values[:1] for name, values in self.eval_set.inputs.items()}

    @property
    def runnable(self) -> OnnxModel:
        """What ONNX Runtime loads for the original: its bytes, with the folder of a large model's weights."""
        from core.runtime import with_data_in

        return with_data_in(self.onnx_bytes, self.external_data_folder)

    @cached_property
    def skeleton(self) -> onnx.ModelProto:
        """The graph without its prunable weights, which compression adds back changed."""
        return without_initializers(self.proto, {layer.name for layer in self.layers})

    @cached_property
    def reference_outputs(self) -> list[np.ndarray]:
        from core.runtime import create_session, run

        return run(create_session(self.runnable), self.eval_set.inputs)

    @cached_property
    def macs(self) -> dict[str, int]:
        from core.macs import graph_macs

        return graph_macs(self.proto, self.layers, self.latency_feed, self.external_data_folder)

    @cached_property
    def original_histograms(self) -> dict:
        from core.measure import original_histograms

        return original_histograms(self)

    @cached_property
    def size(self) -> SizeStats:
        """Raw and gzip size of the original ONNX bytes (gzip takes ~0.7 s on resnet18: worth remembering)."""
        from core.measure import SIZE_CHUNK, size_of, size_of_parts

        if self.external_data_folder is None:
            return size_of(self.onnx_bytes)
        # a generator: one layer's memory map is alive at a time
        flats = (self.weights[layer.name].reshape(-1) for layer in self.layers)
        chunks = (flat[start : start + SIZE_CHUNK] for flat in flats for start in range(0, flat.size, SIZE_CHUNK))
        return size_of_parts(
            itertools.chain([self.onnx_bytes], chunks), len(self.onnx_bytes) + 4 * self.prunable_params
        )

    @cached_property
    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor for one batch-1 run (the latency feed)."""
        from core.tensors import tensor_shapes

        return tensor_shapes(self.proto, self.latency_feed, self.external_data_folder)

    @cached_property
    def channel_graph(self) -> ChannelGraph:
        """Which output channels can be removed together, and what shrinks with them."""
        from core.channels import analyse

        return analyse(self.proto, self.tensor_shapes)

    @cached_property
    def zeros(self) -> dict[str, int]:
        """Zero weights the original already has, per layer (counted once: the dashboard asks on every move)."""
        return {layer.name: layer.params - int(np.count_nonzero(self.weights[layer.name])) for layer in self.layers}
