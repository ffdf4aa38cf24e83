"""The working representation: an ONNX graph, its prunable weights as read-only numpy arrays, and its data.

Everything above this module works on a `Model`; it imports only `core.onnx` (graphs and sessions) and never
anything that measures, compresses or loads. Facts those layers derive from a model (histograms, sizes, the
channel graph) are kept with it through `per_model`, so a model computes each of them once without knowing them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx

from core.errors import UnsupportedModelError
from core.onnx import tensors
from core.onnx.batches import run_in_chunks
from core.onnx.graph import Layer, without_initializers
from core.onnx.inputs import GivenInput, InputPlan, batch_axes, sample_count, take
from core.onnx.macs import graph_macs
from core.onnx.runtime import OnnxModel, create_session, with_data_in

Derived = TypeVar("Derived")
SAMPLE_SOURCE_PREFIX = "sample:"  # a sample's source: the prefix and its name


@dataclass(frozen=True)
class EvalSet:
    """Inputs keyed by graph input name (batch first) and the labels, or None where the task has none."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    targets: np.ndarray | None = None  # what the first output should be, per sample (float)


@dataclass(frozen=True, eq=False)
class DataPreview:
    """One of the user's images as its file holds it and as the model receives it (float values stretched to
    0-255, from `low` to `high`, channels in the order the model reads them)."""

    name: str
    before: np.ndarray  # height x width x 3, uint8
    after: np.ndarray  # height x width x 3, uint8
    low: float
    high: float


@dataclass(frozen=True)
class DataInfo:
    """The user's data: where from, how it was made into inputs, and how it was split into a tuning and a
    held-out part."""

    source: str  # the file's or folder's name
    sha256: str
    tuning: int  # samples in the tuning part
    held_out: int  # samples in the held-out part
    tuning_fraction: float
    seed: int
    preprocessing: str = ""  # how images or text became inputs; "" for arrays
    classes: tuple[str, ...] = ()  # class folder names, in label order
    previews: tuple[DataPreview, ...] = field(default=(), compare=False, repr=False)
    path: str = ""  # where it was read from, so another process can read it again (not in reports)

    def to_dict(self) -> dict[str, Any]:
        """What a report keeps of it (not the previews)."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "tuning": self.tuning,
            "held_out": self.held_out,
            "tuning_fraction": self.tuning_fraction,
            "seed": self.seed,
            "preprocessing": self.preprocessing,
            "classes": list(self.classes),
        }

    def describe(self) -> str:
        split = f"{self.tuning_fraction:.0%}/{1 - self.tuning_fraction:.0%}"
        classes = f", {len(self.classes)} classes" if self.classes else ""
        how = f"; {self.preprocessing}" if self.preprocessing else ""
        return (
            f"{self.source} (sha256 {self.sha256[:12]}): {self.tuning} tuning and {self.held_out} held-out samples"
            f"{classes}, a seeded {split} split (seed {self.seed}){how}"
        )


class LazyWeights(Mapping[str, np.ndarray]):
    """Arrays computed from their name each time they are read: one layer's worth of memory at a time."""

    def __init__(self, names: list[str], compute: Callable[[str], np.ndarray]) -> None:
        self._names = dict.fromkeys(names)  # ordered, and a quick membership test
        self._compute = compute

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._compute(name)

    def __contains__(self, name: object) -> bool:  # Mapping's own would compute the array
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


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
    # The tuning part: what calibration, the sensitivity scan and allocation read, kept apart from `eval_set` (the
    # held-out part every accuracy and fidelity is measured on). None: there is no other data than `eval_set`.
    tuning_set: EvalSet | None = None
    data: DataInfo | None = None  # the user's own data, where it came from and how it was split
    opset_note: str = ""  # an old opset converted at load, or why it could not be
    # How the evaluation inputs were made up when the model came without data (core.onnx.inputs.InputPlan)
    input_plan: InputPlan | None = None
    # The inputs' shapes and values the user gave at load (--shape, --value, the page's Inputs panel)
    given_inputs: tuple[GivenInput, ...] = ()
    # A Hugging Face text model's folder, whose tokenizer makes the user's text into inputs; None: takes no text
    tokenizer_folder: Path | None = None
    metric: str | None = None  # the quality metric the user chose (core.data.quality); None: by the data
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def is_sample(self) -> bool:
        """One of the project's own samples; everything else is a user's file and runs in sandbox children."""
        return self.source.startswith(SAMPLE_SOURCE_PREFIX)

    @property
    def prunable_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def judged_by(self, metric: str | None) -> Model:
        """The same model and data judged by another quality metric: nothing computed from them is computed again
        (none of it depends on the metric)."""
        chosen = replace(self, metric=metric)
        object.__setattr__(chosen, "_derived", self._derived)
        for name in (
            "reference_outputs",
            "_reference_seconds",
            "macs",
            "tensor_shapes",
            "zeros",
            "skeleton",
        ):  # computed once
            if name in self.__dict__:
                chosen.__dict__[name] = self.__dict__[name]
        return chosen

    @property
    def batch_axes(self) -> dict[str, int | None]:
        """Each input's batch axis (see `core.onnx.inputs.batch_axes`): state inputs carry theirs on axis 1."""
        if "batch_axes" not in self._derived:
            self._derived["batch_axes"] = batch_axes(self.proto)
        return self._derived["batch_axes"]

    def first_inputs(self, count: int) -> dict[str, np.ndarray]:
        """The first `count` evaluation samples, cut along each input's batch axis."""
        return take(self.eval_set.inputs, self.batch_axes, 0, count)

    def tuning_part(self, count: int) -> tuple[EvalSet, bool]:
        """The first `count` samples of the tuning part, and whether it is apart from the evaluation set: what
        calibration, the scan and allocation read. A model with no other data gets its evaluation inputs (False)."""
        data, apart = (self.tuning_set, True) if self.tuning_set is not None else (self.eval_set, False)
        labels = None if data.labels is None else data.labels[:count]
        return EvalSet(take(data.inputs, self.batch_axes, 0, count), labels), apart

    def separate_tuning_part(self, count: int, what: str) -> EvalSet:
        """`tuning_part(count)` for work that must never read the held-out part (`what`, e.g. "recovery trains"),
        refused in one line where the model has no other data."""
        part, apart = self.tuning_part(count)
        if not apart:
            raise UnsupportedModelError(
                f"{what} on a tuning part apart from the held-out data, and this model has none: give your data "
                "(--data, or the sidebar's Data section)",
                self.source,
            )
        return part

    @property
    def latency_feed(self) -> dict[str, np.ndarray]:
        """One batch-1 input: the first evaluation sample."""
        return self.first_inputs(1)

    @property
    def runnable(self) -> OnnxModel:
        """What ONNX Runtime loads for the original: its bytes, with the folder of a large model's weights."""
        return with_data_in(self.onnx_bytes, self.external_data_folder)

    @cached_property
    def skeleton(self) -> onnx.ModelProto:
        """The graph without its prunable weights, which compression adds back changed."""
        return without_initializers(self.proto, {layer.name for layer in self.layers})

    def outputs_of(
        self,
        onnx_model: OnnxModel,
        progress: Callable[[float], None] | None = None,
        inputs: dict[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """What `onnx_model` (this model, or a compressed one) outputs on the evaluation set (or on `inputs`), run a
        chunk at a time."""
        feeds = self.eval_set.inputs if inputs is None else inputs
        return run_in_chunks(create_session(onnx_model), feeds, self.batch_axes, progress)

    @cached_property
    def reference_outputs(self) -> list[np.ndarray]:
        return self.run_original()

    def run_original(self, progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
        """`reference_outputs`, computed now with `progress` (a large evaluation set takes a while), and timed."""
        if "reference_outputs" not in self.__dict__:
            started = time.perf_counter()
            self.__dict__["reference_outputs"] = self.outputs_of(self.runnable, progress)
            self.__dict__["_reference_seconds"] = time.perf_counter() - started
        return self.__dict__["reference_outputs"]

    @property
    def reference_seconds(self) -> float:
        """How long the original took on every evaluation sample, session included (timed on its first run)."""
        self.run_original()
        return self.__dict__["_reference_seconds"]

    @property
    def eval_samples(self) -> int:
        return sample_count(self.eval_set.inputs, self.batch_axes)

    def evaluated_within(self, seconds: float, at_least: int) -> Model:
        """This model judged on as many of its first evaluation samples as the original runs in `seconds` (and
        `at_least` of them), or itself where all of them fit. What the page measures on every slider move: the
        held-out part is in seeded random order, so its first samples are a random subset of it."""
        every = self.eval_samples
        count = max(at_least, int(every * seconds / max(self.reference_seconds, 1e-9)))
        if count >= every:
            return self
        labels, targets = self.eval_set.labels, self.eval_set.targets
        subset = EvalSet(
            self.first_inputs(count),
            None if labels is None else labels[:count],
            None if targets is None else targets[:count],
        )
        chosen = replace(self, eval_set=subset)
        # facts of the graph and weights are shared; those of the evaluation set (its outputs) are not
        object.__setattr__(chosen, "_derived", self._derived)
        for name in ("macs", "tensor_shapes", "zeros", "skeleton"):
            if name in self.__dict__:
                chosen.__dict__[name] = self.__dict__[name]
        return chosen

    @cached_property
    def macs(self) -> dict[str, int]:
        return graph_macs(self.proto, self.layers, self.latency_feed, self.external_data_folder)

    @cached_property
    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor for one batch-1 run (the latency feed)."""
        return tensors.tensor_shapes(self.proto, self.latency_feed, self.external_data_folder)

    @cached_property
    def zeros(self) -> dict[str, int]:
        """Zero weights the original already has, per layer (counted once: the dashboard asks on every move)."""
        return {layer.name: layer.params - int(np.count_nonzero(self.weights[layer.name])) for layer in self.layers}


def per_model(function: Callable[[Model], Derived]) -> Callable[[Model], Derived]:
    """Computes `function(model)` once per model and keeps the result with it: a model never changes, so neither
    does anything derived from it. For facts of higher layers (sizes, histograms, the channel graph)."""
    key = f"{function.__module__}.{function.__qualname__}"

    @functools.wraps(function)
    def once(model: Model) -> Derived:
        if key not in model._derived:
            model._derived[key] = function(model)
        return model._derived[key]

    return once
