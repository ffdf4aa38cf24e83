"""A user's own data for a model: read by its kind, split by a seed into a tuning part (calibration, the
sensitivity scan, allocation, criteria and block costs read it) and a held-out part (every accuracy and fidelity
shown)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.data.arrays import Arrays, read_npz
from core.data.images import IMAGE_SUFFIXES, PixelArray, read_images
from core.data.text import read_text
from core.errors import InvalidSettingError
from core.model import DataInfo, EvalSet, Model

DEFAULT_TUNING_FRACTION = 0.8
DEFAULT_SPLIT_SEED = 0
MIN_HELD_OUT = 1
Progress = Callable[[float], None] | None


def _images(path: Path, model: Model, settings: dict[str, str], progress: Progress) -> Arrays:
    images = read_images(path, model, settings, progress)
    return Arrays(
        {images.input_name: images.pixels},
        images.labels,
        len(images.pixels),
        images.sha256,
        preprocessing=images.pixels.preprocessing.describe(),
        classes=images.classes,
        previews=images.previews,
    )


def _no_settings(reader: Callable[[Path, Model], Arrays]):
    def read(path: Path, model: Model, settings: dict[str, str], progress: Progress) -> Arrays:
        if settings:
            raise InvalidSettingError("--preprocess is for images (a folder or .zip of them)", str(path))
        return reader(path, model)

    return read


# what the data is (a file's suffix, or "folder") -> its reader
DATA_READERS: dict[str, Callable[[Path, Model, dict[str, str], Progress], Arrays]] = {
    ".npz": _no_settings(lambda path, model: read_npz(path, model, labels_allowed=True)),
    "folder": _images,
    ".zip": _images,
    ".txt": _no_settings(read_text),
}
DATA_KINDS = "an .npz of arrays, a folder or .zip of images (ImageFolder layout), or a .txt of lines"


def with_data(
    model: Model,
    path: Path,
    tuning_fraction: float = DEFAULT_TUNING_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
    preprocess: dict[str, str] | None = None,
    progress: Progress = None,
) -> Model:
    """The model with the user's data: a seeded shuffle, the first `tuning_fraction` for tuning, the rest held
    out and scored on. Replaces whatever data the model had (its own, or made-up inputs). `preprocess`: how images
    become inputs (see `core.data.images`); `progress` hears how far reading the data (the first half) and
    running the original model on the held-out part (the second) have got (0-1)."""
    source = str(path)
    if not 0 < tuning_fraction < 1:
        raise InvalidSettingError(f"the tuning fraction must be between 0 and 1, not {tuning_fraction:g}", "--split")
    if not path.exists():
        raise InvalidSettingError("no such file or folder", source)
    kind = "folder" if path.is_dir() else path.suffix.lower()
    reader = DATA_READERS.get(kind)
    if reader is None:
        hint = " (a single image: put it in a folder)" if kind in IMAGE_SUFFIXES else ""
        raise InvalidSettingError(f"unknown data format {path.suffix or '(none)'}{hint}; use {DATA_KINDS}", source)
    arrays = reader(path, model, preprocess or {}, _stage(progress, 0.0, 0.5))
    tuning_count = int(round(arrays.count * tuning_fraction))
    if tuning_count < 1 or arrays.count - tuning_count < MIN_HELD_OUT:
        raise InvalidSettingError(
            f"{arrays.count} samples cannot be split {tuning_fraction:.0%}/{1 - tuning_fraction:.0%} into a tuning "
            "and a held-out part",
            source,
        )
    order = np.random.default_rng(seed).permutation(arrays.count)
    parts = [order[:tuning_count], order[tuning_count:]]
    tuning, held_out = (_part(arrays, model.batch_axes, indices) for indices in parts)
    info = DataInfo(
        path.name,
        arrays.sha256,
        tuning_count,
        arrays.count - tuning_count,
        tuning_fraction,
        seed,
        arrays.preprocessing,
        arrays.classes,
        arrays.previews,
        str(path.resolve()),
    )
    given = replace(
        model, eval_set=held_out, tuning_set=tuning, eval_inputs_are_random=False, input_plan=None, data=info
    )
    given.run_original(_stage(progress, 0.5, 1.0))
    _check_outputs(given, source)
    return given


def _stage(progress: Progress, start: float, stop: float) -> Progress:
    """`progress` for one stage of the work, from `start` to `stop` of the whole."""
    if progress is None:
        return None
    return lambda fraction: progress(start + (stop - start) * fraction)


def _part(arrays: Arrays, axes: dict[str, int | None], indices: np.ndarray) -> EvalSet:
    """These samples of every input (images stay bytes), with their labels or targets."""
    inputs = {}
    for name, values in arrays.inputs.items():
        axis = axes.get(name, 0)
        if isinstance(values, PixelArray):
            inputs[name] = values.select(indices)
        elif axis is None or values.ndim <= axis:
            inputs[name] = values
        else:
            inputs[name] = np.take(values, indices, axis=axis)
    labels = None if arrays.labels is None else arrays.labels[indices]
    targets = None if arrays.targets is None else arrays.targets[indices]
    return EvalSet(inputs, labels, targets)


def _check_outputs(model: Model, source: str) -> None:
    """Labels must name one of the classes the model's first output scores; targets must have its shape."""
    reference = model.reference_outputs[0]
    labels, targets = model.eval_set.labels, model.eval_set.targets
    if labels is not None:
        classes = reference.shape[-1]
        highest = int(max(labels.max(initial=0), model.tuning_set.labels.max(initial=0)))
        if highest >= classes:
            raise InvalidSettingError(
                f"labels go up to {highest}; the model's first output scores {classes} classes", source
            )
    if targets is not None and targets.shape != reference.shape:
        shape, expected = "x".join(map(str, targets.shape[1:])), "x".join(map(str, reference.shape[1:]))
        raise InvalidSettingError(f"targets are {shape} per sample; the model's first output is {expected}", source)
