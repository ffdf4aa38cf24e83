"""A user's own data for a model: read by its kind, split by a seed into a tuning part (calibration, the
sensitivity scan, allocation and criteria read it) and a held-out part (every accuracy and fidelity shown)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.data.arrays import Arrays, read_npz
from core.errors import InvalidSettingError
from core.model import DataInfo, EvalSet, Model
from core.onnx.inputs import take

DEFAULT_TUNING_FRACTION = 0.8
DEFAULT_SPLIT_SEED = 0
MIN_HELD_OUT = 1

# a data file's suffix -> its reader (images and text come next)
DATA_READERS: dict[str, Callable[[Path, Model], Arrays]] = {
    ".npz": lambda path, model: read_npz(path, model, labels_allowed=True),
}


def with_data(
    model: Model, path: Path, tuning_fraction: float = DEFAULT_TUNING_FRACTION, seed: int = DEFAULT_SPLIT_SEED
) -> Model:
    """The model with the user's data: a seeded shuffle, the first `tuning_fraction` for tuning, the rest held
    out and scored on. Replaces whatever data the model had (its own, or made-up inputs)."""
    source = str(path)
    if not 0 < tuning_fraction < 1:
        raise InvalidSettingError(f"the tuning fraction must be between 0 and 1, not {tuning_fraction:g}", "--split")
    reader = DATA_READERS.get(path.suffix.lower())
    if reader is None:
        raise InvalidSettingError(
            f"unknown data format {path.suffix or '(none)'}; use {', '.join(DATA_READERS)}", source
        )
    arrays = reader(path, model)
    tuning_count = int(round(arrays.count * tuning_fraction))
    if tuning_count < 1 or arrays.count - tuning_count < MIN_HELD_OUT:
        raise InvalidSettingError(
            f"{arrays.count} samples cannot be split {tuning_fraction:.0%}/{1 - tuning_fraction:.0%} into a tuning "
            "and a held-out part",
            source,
        )
    order = np.random.default_rng(seed).permutation(arrays.count)
    shuffled = _reorder(arrays.inputs, model.batch_axes, order)
    labels = None if arrays.labels is None else arrays.labels[order]
    tuning = EvalSet(
        take(shuffled, model.batch_axes, 0, tuning_count), None if labels is None else labels[:tuning_count]
    )
    held_out = EvalSet(
        take(shuffled, model.batch_axes, tuning_count, arrays.count), None if labels is None else labels[tuning_count:]
    )
    info = DataInfo(path.name, arrays.sha256, tuning_count, arrays.count - tuning_count, tuning_fraction, seed)
    given = replace(
        model, eval_set=held_out, tuning_set=tuning, eval_inputs_are_random=False, input_plan=None, data=info
    )
    _check_labels(given, source)
    return given


def _reorder(inputs: dict[str, np.ndarray], axes: dict[str, int | None], order: np.ndarray) -> dict[str, np.ndarray]:
    moved = {}
    for name, values in inputs.items():
        axis = axes.get(name, 0)
        moved[name] = values if axis is None or values.ndim <= axis else np.take(values, order, axis=axis)
    return moved


def _check_labels(model: Model, source: str) -> None:
    """Labels must name one of the classes the model's first output scores."""
    labels = model.eval_set.labels
    if labels is None:
        return
    classes = model.reference_outputs[0].shape[-1]
    highest = int(max(labels.max(initial=0), model.tuning_set.labels.max(initial=0)))
    if highest >= classes:
        raise InvalidSettingError(
            f"labels go up to {highest}; the model's first output scores {classes} classes", source
        )
