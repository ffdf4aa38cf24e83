"""Calibration inputs for static int8: the sample's own inputs, a user's .npz (checked against the model), or
seeded random inputs (flagged: ranges measured on noise can be far from real data's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.arrays import read_npz
from core.model import Model
from core.onnx.inputs import random_inputs_for, sample_count

MAX_CALIBRATION_SAMPLES = 64
RANDOM_CALIBRATION_BATCH = 32
RANDOM_CALIBRATION_SEED = 1  # not the eval seed: calibrating on the very inputs fidelity is measured on flatters it


@dataclass(frozen=True, eq=False)
class Calibration:
    inputs: dict[str, np.ndarray]
    random: bool  # seeded random inputs: accuracy after static quantization may be off
    description: str


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


# Where static int8 takes its calibration inputs from, by name; any other value is the path of an .npz (`core.data.arrays.read_npz`).
CALIBRATION_SOURCES: dict[str, CalibrationSource] = {
    "sample": CalibrationSource(
        "the tuning part of the model's data, apart from the held-out part results are scored on", _sample_inputs
    ),
    "random": CalibrationSource("seeded random inputs (accuracy may be off)", _random_inputs),
}


def calibration_for(model: Model, source: str) -> Calibration:
    """`source`: a name in CALIBRATION_SOURCES, or the path of an .npz of input arrays."""
    if source in CALIBRATION_SOURCES:
        return CALIBRATION_SOURCES[source].inputs(model)
    arrays = read_npz(Path(source), model)
    return Calibration(arrays.inputs, False, f"{arrays.count} inputs from {Path(source).name}")
