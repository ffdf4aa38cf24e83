"""Calibration inputs for static int8: the sample's own inputs, a user's .npz (checked against the model), or
seeded random inputs (flagged: ranges measured on noise can be far from real data's)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InvalidSettingError
from core.model import Model
from core.onnx.inputs import input_specs, random_inputs_for, sample_count

MAX_CALIBRATION_SAMPLES = 64
RANDOM_CALIBRATION_BATCH = 32
RANDOM_CALIBRATION_SEED = 1  # not the eval seed: calibrating on the very inputs fidelity is measured on flatters it


@dataclass(frozen=True, eq=False)
class Calibration:
    inputs: dict[str, np.ndarray]
    random: bool  # seeded random inputs: accuracy after static quantization may be off
    description: str


def load_npz(path: Path, model: Model) -> dict[str, np.ndarray]:
    """Input arrays from an .npz, with names, ranks, fixed dimensions and element kinds checked against the model."""
    source = str(path)
    if not path.is_file():
        raise InvalidSettingError("no such calibration file", source)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        raise InvalidSettingError("not an .npz of arrays (numpy.savez)", source) from None
    specs = input_specs(model.proto)
    missing, unknown = sorted(set(specs) - set(arrays)), sorted(set(arrays) - set(specs))
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(unknown)}" if unknown else ""]
        raise InvalidSettingError(
            f"input names do not match the model ({'; '.join(p for p in parts if p)}); it takes {', '.join(specs)}",
            source,
        )
    batches = set()
    for name, (dtype, dims) in specs.items():
        values = arrays[name]
        expected = "x".join("?" if dim is None else str(dim) for dim in dims)
        fits = values.ndim == len(dims) and all(
            dim is None or dim == size for dim, size in zip(dims, values.shape, strict=True)
        )
        if not fits:
            shape = "x".join(map(str, values.shape))
            raise InvalidSettingError(f"input {name!r} has shape {shape}; the model expects {expected}", source)
        if np.issubdtype(values.dtype, np.floating) != np.issubdtype(dtype, np.floating):
            raise InvalidSettingError(
                f"input {name!r} holds {values.dtype}; the model expects {np.dtype(dtype)}", source
            )
        arrays[name] = values.astype(dtype, copy=False)
        batches.add(values.shape[0] if values.ndim else 1)
    if len(batches) > 1:
        raise InvalidSettingError("the arrays hold different numbers of samples", source)
    return arrays


def _sample_inputs(model: Model) -> Calibration:
    """The model's own: its tuning part where it has one, else its first evaluation inputs."""
    part, apart = model.tuning_part(MAX_CALIBRATION_SAMPLES)
    inputs = part.inputs
    count = sample_count(inputs, model.batch_axes)
    if apart and model.eval_inputs_are_random:
        return Calibration(
            inputs,
            True,
            f"{count} seeded random inputs (the model has no data), apart from those fidelity is measured on",
        )
    if apart:
        return Calibration(inputs, False, f"{count} inputs of the tuning part, apart from the held-out evaluation set")
    return Calibration(inputs, False, f"{count} of the model's evaluation inputs (the ones fidelity is measured on)")


def _random_inputs(model: Model) -> Calibration:
    inputs = random_inputs_for(
        model.proto, model.source, RANDOM_CALIBRATION_BATCH, RANDOM_CALIBRATION_SEED, model.input_plan
    )
    return Calibration(inputs, True, f"{RANDOM_CALIBRATION_BATCH} seeded random inputs")


@dataclass(frozen=True)
class CalibrationSource:
    help: str
    inputs: Callable[[Model], Calibration]


# Where static int8 takes its calibration inputs from, by name; any other value is the path of an .npz (`load_npz`).
CALIBRATION_SOURCES: dict[str, CalibrationSource] = {
    "sample": CalibrationSource(
        "the model's own inputs (a sample's are set apart from its evaluation set)", _sample_inputs
    ),
    "random": CalibrationSource("seeded random inputs (accuracy may be off)", _random_inputs),
}


def calibration_for(model: Model, source: str) -> Calibration:
    """`source`: a name in CALIBRATION_SOURCES, or the path of an .npz of input arrays."""
    if source in CALIBRATION_SOURCES:
        return CALIBRATION_SOURCES[source].inputs(model)
    arrays = load_npz(Path(source), model)
    count = len(next(iter(arrays.values())))
    return Calibration(arrays, False, f"{count} inputs from {Path(source).name}")
