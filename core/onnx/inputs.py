"""What a graph takes as input, and inputs made up to fit it when the user gave none.

Symbolic dimensions get candidate sizes, tried in order until ONNX Runtime runs the model (in the sandboxed
child): detectors that downsample by 32 need image sides like 224, 320 or 640, then the sizes the model's own
metadata names; sequence models take 16, 128 or 512 tokens. The batch axis takes the evaluation batch. Inputs named like recurrent state start at zero, a sample
rate at 16000; other integer inputs are tried as ones, zeros, then small values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx

from core.errors import InvalidSettingError, UnsupportedModelError

RANDOM_EVAL_SEED = 0
RANDOM_TUNING_SEED = 1  # another draw for the tuning part: a scan or calibration on the scored inputs flatters
RANDOM_EVAL_BATCH = 8
IMAGE_SIDES = (224, 320, 640)  # multiples of 32, for the spatial dims of a 4-D float input with 1 or 3 channels
OTHER_SIZES = (16, 128, 512)  # any other symbolic dim (tokens, time steps); the last one again after these
INTEGER_FILLS = ("ones", "zeros", "small")
# metadata_props naming an input size (ultralytics writes imgsz "[640, 640]"); tried after IMAGE_SIDES
SIZE_HINT_KEY = re.compile(r"(img|image|input)_?(sz|size|shape)|height|width|resolution", re.IGNORECASE)
HINTED_SIDES = range(8, 4097)
# (height, width) of a text line, last: OCR recognisers take a fixed height (CRNN 32, PP-OCR 48, others 64)
TEXT_LINE_SIDES = ((48, 320), (32, 320), (64, 256))
STATE_NAME = re.compile(r"(^|[_./])(state|states|hidden|h0|c0|h|c|cache|past)([_./]|\d|$)", re.IGNORECASE)
RATE_NAME = re.compile(r"(^|_)(sr|sample_?rate|sampling_?rate)$", re.IGNORECASE)
SAMPLE_RATE = 16000


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


@dataclass(frozen=True)
class DeclaredInput:
    """One graph input as the file declares it, for a user to set: dims are sizes, symbolic names, or None."""

    name: str
    dtype: str  # numpy's name: float32, int64 ...
    dims: tuple[int | str | None, ...]

    @property
    def declared(self) -> str:
        """e.g. "N x 3 x height x width"; "?" for an unnamed symbolic dim, "scalar" for none."""
        return " x ".join("?" if dim is None else str(dim) for dim in self.dims) or "scalar"

    @property
    def takes_value(self) -> bool:
        """A scalar or an integer input: one value for every element can make sense (a sample rate, a token)."""
        return not self.dims or not np.issubdtype(np.dtype(self.dtype), np.floating)


def declared_inputs(proto: onnx.ModelProto) -> list[DeclaredInput]:
    """The graph's inputs (initializers excluded) with their declared dims, symbolic names kept."""
    initializers = {init.name for init in proto.graph.initializer}
    declared = []
    for value in proto.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        tensor = value.type.tensor_type
        dims = tuple(
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else (dim.dim_param or None)
            for dim in tensor.shape.dim
        )
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        declared.append(DeclaredInput(value.name, dtype, dims))
    return declared


@dataclass(frozen=True)
class GivenInput:
    """What the user said about one input: its shape (`--shape x=1x3x640x640`) and/or the value every element
    takes (`--value sr=16000`)."""

    name: str
    shape: tuple[int, ...] | None = None
    value: float | None = None

    @classmethod
    def parse(cls, kind: str, text: str) -> GivenInput:
        """`kind` "shape": NAME=AxBxC; "value": NAME=NUMBER."""
        name, _, given = text.rpartition("=")
        try:
            if not name:
                raise ValueError
            if kind == "shape":
                shape = tuple(int(size) for size in given.lower().split("x")) if given else ()
                if any(size <= 0 for size in shape):
                    raise ValueError
                return cls(name, shape=shape)
            return cls(name, value=float(given))
        except ValueError:
            example = "NAME=1x3x640x640" if kind == "shape" else "NAME=16000"
            raise InvalidSettingError(f"--{kind} {text!r}: expected {example}") from None

    def to_dict(self) -> dict:
        """As a recipe stores it: only what was given."""
        entry: dict = {"name": self.name}
        if self.shape is not None:
            entry["shape"] = list(self.shape)
        if self.value is not None:
            entry["value"] = self.value
        return entry

    @classmethod
    def from_dict(cls, data: object) -> GivenInput:
        """A recipe's entry, checked as `parse` checks the command line."""
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("name"), str)
            or set(data) - {"name", "shape", "value"}
        ):
            raise InvalidSettingError('an input must be {"name": ..., "shape": [...], "value": ...}')
        shape, value = data.get("shape"), data.get("value")
        if shape is not None and (
            not isinstance(shape, list) or not all(isinstance(size, int) and size > 0 for size in shape)
        ):
            raise InvalidSettingError(f"input {data['name']!r}: shape must be a list of positive whole numbers")
        if value is not None and not isinstance(value, int | float):
            raise InvalidSettingError(f"input {data['name']!r}: value must be a number")
        return cls(data["name"], None if shape is None else tuple(shape), None if value is None else float(value))

    def describe(self) -> str:
        """As the command line gives it: "--shape x=1x3x640x640 --value sr=16000"."""
        flags = []
        if self.shape is not None:
            flags.append(f"--shape {self.name}={'x'.join(map(str, self.shape))}")
        if self.value is not None:
            flags.append(f"--value {self.name}={self.value:g}")
        return " ".join(flags)


def merge_given(given: list[GivenInput]) -> dict[str, GivenInput]:
    """By input name, a --shape and a --value of the same input combined."""
    merged: dict[str, GivenInput] = {}
    for entry in given:
        before = merged.get(entry.name, GivenInput(entry.name))
        value = entry.value if entry.value is not None else before.value
        merged[entry.name] = GivenInput(entry.name, entry.shape or before.shape, value)
    return merged


@dataclass(frozen=True)
class InputPlan:
    """One way to make up every input: its shape (None where the batch goes), dtype and values."""

    shapes: dict[str, tuple[int | None, ...]]
    dtypes: dict[str, str]
    fills: dict[str, str]  # "normal", "ones", "zeros", "small", or a number every element takes
    made_up: tuple[str, ...]  # the inputs whose shape or values were guessed, not declared

    def feeds(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {
            name: _filled(rng, self.fills[name], self.shape(name, batch), self.dtypes[name]) for name in self.shapes
        }

    @property
    def batch_axes(self) -> dict[str, int | None]:
        """Each input's batch axis: 0 for most, 1 for recurrent state laid out [layers, batch, hidden], None where
        the input has none (a scalar, a fixed batch)."""
        return {name: next((axis for axis, size in enumerate(shape) if size is None), None)
                for name, shape in self.shapes.items()}  # fmt: skip

    def shape(self, name: str, batch: int) -> tuple[int, ...]:
        return tuple(batch if size is None else size for size in self.shapes[name])

    def describe(self, batch: int = RANDOM_EVAL_BATCH) -> str:
        """e.g. "x: 8x3x224x224, sr: 16000" for the inputs that were made up."""
        parts = []
        for name in self.made_up:
            shape = "x".join(map(str, self.shape(name, batch))) or "scalar"
            fill = self.fills[name]
            parts.append(f"{name}: {shape}" + (f" = {fill}" if fill not in ("normal", "ones", "small") else ""))
        return ", ".join(parts)


def _filled(rng: np.random.Generator, fill: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if fill == "normal":
        return rng.standard_normal(shape).astype(dtype)
    if fill == "ones":
        return np.ones(shape, dtype)
    if fill == "zeros":
        return np.zeros(shape, dtype)
    if fill == "small":
        return rng.integers(0, 10, shape).astype(dtype)
    return np.full(shape, float(fill)).astype(dtype)


def input_plans(proto: onnx.ModelProto, source: str, given: dict[str, GivenInput] | None = None) -> list[InputPlan]:
    """Candidate ways to fill the inputs, most likely first: the i-th tries the i-th candidate size of every kind of
    symbolic dim and the i-th way to fill integers. What the user `given` for an input is used as it is (a
    symbolic batch axis still takes the evaluation batch)."""
    given = given or {}
    initializer_names = {init.name for init in proto.graph.initializer}
    values = [value for value in proto.graph.input if value.name not in initializer_names]
    for value in values:
        if not value.type.HasField("tensor_type"):
            raise UnsupportedModelError(f"input {value.name!r} is not a tensor", source)
    unknown = sorted(set(given) - {value.name for value in values})
    if unknown:
        takes = ", ".join(value.name for value in values)
        raise InvalidSettingError(f"no input named {', '.join(unknown)}; the model takes {takes}", source)
    sides = [(side, side) for side in IMAGE_SIDES]
    sides += [hint for hint in [*hinted_sides(proto), *TEXT_LINE_SIDES] if hint not in sides]
    batch_names = _batch_names(values)
    plans = []
    for attempt, (height, width) in enumerate(sides):
        other = OTHER_SIZES[min(attempt, len(OTHER_SIZES) - 1)]
        shapes, dtypes, fills, made_up = {}, {}, {}, []
        for value in values:
            tensor = value.type.tensor_type
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
            dims = [
                dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in tensor.shape.dim
            ]
            told = given.get(value.name, GivenInput(value.name))
            if told.shape is not None:
                dims = _given_dims(value.name, dims, told.shape, source)
            floating = np.issubdtype(dtype, np.floating)
            image = floating and len(dims) == 4 and dims[1] in (1, 3)
            names = _dim_names(value)
            # recurrent state is laid out [layers, batch, hidden]: its first symbolic dim is the batch
            state_batch = next((axis for axis, size in enumerate(dims) if size is None), None)
            if not STATE_NAME.search(value.name) or told.shape is not None:
                state_batch = None
            shape: list[int | None] = []
            for axis, size in enumerate(dims):
                if size is not None:
                    shape.append(size)
                elif axis == 0 or axis == state_batch or (names[axis] and names[axis] in batch_names):
                    shape.append(None)  # the batch
                elif image and axis >= 2:
                    shape.append(height if axis == 2 else width)
                else:
                    shape.append(other)
            if told.value is not None:
                fill = repr(told.value)
            elif RATE_NAME.search(value.name) and not floating:
                fill = str(SAMPLE_RATE)
            elif STATE_NAME.search(value.name):
                fill = "zeros"
            else:
                fill = "normal" if floating else INTEGER_FILLS[min(attempt, len(INTEGER_FILLS) - 1)]
            guessed = told.value is None and (any(size is None for size in dims[1:]) or fill not in ("normal", "ones"))
            shapes[value.name], dtypes[value.name], fills[value.name] = tuple(shape), dtype.str, fill
            if guessed:
                made_up.append(value.name)
        plan = InputPlan(shapes, dtypes, fills, tuple(made_up))
        if plan not in plans:  # a model without image inputs has fewer candidates than there are sides
            plans.append(plan)
    return plans


def _dim_names(value: onnx.ValueInfoProto) -> list[str]:
    """Each dim's symbolic name ("" where it has none, or only "?")."""
    return [dim.dim_param if dim.dim_param not in ("", "?") else "" for dim in value.type.tensor_type.shape.dim]


def _batch_names(values: list[onnx.ValueInfoProto]) -> set[str]:
    """The symbolic names of the inputs' first dims: wherever else such a name appears, it is the batch too."""
    return {names[0] for names in map(_dim_names, values) if names and names[0]}


def hinted_sides(proto: onnx.ModelProto) -> list[tuple[int, int]]:
    """(height, width) an image input may take, from the model's own metadata: a key like `imgsz`, `input_size`
    or `height`/`width`, whose value holds one size (square), two (height, width) or more (NCHW: the last two)."""
    height = width = None
    sides = []
    for prop in proto.metadata_props:
        if not SIZE_HINT_KEY.search(prop.key):
            continue
        numbers = [int(text) for text in re.findall(r"\d+", prop.value) if int(text) in HINTED_SIDES]
        key = prop.key.lower()
        if numbers and "height" in key:
            height = numbers[0]
        elif numbers and "width" in key:
            width = numbers[0]
        elif len(numbers) == 1:
            sides.append((numbers[0], numbers[0]))
        elif len(numbers) >= 2:
            sides.append((numbers[-2], numbers[-1]))
    if height or width:
        sides.append((height or width, width or height))
    return list(dict.fromkeys(sides))


def _given_dims(name: str, dims: list[int | None], shape: tuple[int, ...], source: str) -> list[int | None]:
    """The user's shape, checked against the declared one; a symbolic batch axis stays the evaluation batch's."""
    declared = "x".join("?" if size is None else str(size) for size in dims) or "scalar"
    fits = len(shape) == len(dims) and all(
        size is None or size == told for size, told in zip(dims, shape, strict=False)
    )
    if not fits:
        raise InvalidSettingError(f"--shape of {name!r} does not fit its declared {declared}", source)
    return [None if axis == 0 and dims[0] is None else size for axis, size in enumerate(shape)]


def batch_axes(proto: onnx.ModelProto) -> dict[str, int | None]:
    """Each graph input's batch axis, by the rules inputs are made up with (see `InputPlan.batch_axes`)."""
    return input_plans(proto, "the model")[0].batch_axes


def take(inputs: dict[str, np.ndarray], axes: dict[str, int | None], start: int, stop: int) -> dict[str, np.ndarray]:
    """Samples `start` to `stop` of every input, along its batch axis (axis 0 where `axes` does not say); an
    input without one (a scalar, a sample rate) is passed whole to every slice."""
    taken = {}
    for name, values in inputs.items():
        axis = axes.get(name, 0)
        if axis is None or values.ndim <= axis:
            taken[name] = values
        else:
            index = [slice(None)] * values.ndim
            index[axis] = slice(start, stop)
            taken[name] = values[tuple(index)]
    return taken


def sample_count(inputs: dict[str, np.ndarray], axes: dict[str, int | None]) -> int:
    """How many samples the inputs hold: the length of the first batch axis (1 where no input has one)."""
    for name, values in inputs.items():
        axis = axes.get(name, 0)
        if axis is not None and values.ndim > axis:
            return values.shape[axis]
    return 1


def random_inputs_for(
    proto: onnx.ModelProto,
    source: str,
    batch: int = RANDOM_EVAL_BATCH,
    seed: int = RANDOM_EVAL_SEED,
    plan: InputPlan | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs matching the graph's input spec, by `plan` (default: the first candidate)."""
    return (plan or input_plans(proto, source)[0]).feeds(batch, seed)
