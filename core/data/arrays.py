"""A user's data as the model's inputs, and the reader of an .npz: one array per graph input (samples along its
batch axis), plus optional `labels` or `targets`, checked against the model before anything runs."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InvalidSettingError
from core.model import DataPreview, Model
from core.onnx.inputs import input_specs

LABELS = "labels"  # int class ids, one per sample
TARGETS = "targets"  # float, what the first output should be for each sample


@dataclass(frozen=True, eq=False)
class Arrays:
    """Data read for a model: its inputs (arrays, or lazy arrays such as `images.PixelArray`), and what its
    outputs are compared with, if anything."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    count: int  # samples
    sha256: str  # of the file (or of every file of a folder)
    targets: np.ndarray | None = None
    preprocessing: str = ""
    classes: tuple[str, ...] = ()
    previews: tuple[DataPreview, ...] = ()


def read_npz(path: Path, model: Model, labels_allowed: bool = False) -> Arrays:
    """Input arrays (and `labels` or `targets`, where allowed) from an .npz, with names, ranks, fixed dimensions,
    element kinds and sample counts checked against the model. Never unpickles."""
    source = str(path)
    if not path.is_file():
        raise InvalidSettingError("no such file", source)
    data = path.read_bytes()
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        raise InvalidSettingError("not an .npz of arrays (numpy.savez)", source) from None
    labels = arrays.pop(LABELS, None) if labels_allowed else None
    targets = arrays.pop(TARGETS, None) if labels_allowed else None
    if labels is not None and targets is not None:
        raise InvalidSettingError(f"give {LABELS} or {TARGETS}, not both", source)
    specs = input_specs(model.proto)
    missing, unknown = sorted(set(specs) - set(arrays)), sorted(set(arrays) - set(specs))
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(unknown)}" if unknown else ""]
        extra = f" (and optional {LABELS} or {TARGETS})" if labels_allowed else ""
        raise InvalidSettingError(
            f"input names do not match the model ({'; '.join(p for p in parts if p)}); it takes "
            f"{', '.join(specs)}{extra}",
            source,
        )
    counts = set()
    axes = model.batch_axes
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
        axis = axes.get(name, 0)
        if axis is not None and values.ndim > axis:
            counts.add(values.shape[axis])
    if len(counts) > 1:
        raise InvalidSettingError("the arrays hold different numbers of samples", source)
    count = counts.pop() if counts else 1
    if labels is not None:
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise InvalidSettingError(f"{LABELS} must be one whole-number class id per sample", source)
        if len(labels) != count:
            raise InvalidSettingError(f"{len(labels)} {LABELS} for {count} samples", source)
        if labels.min(initial=0) < 0:
            raise InvalidSettingError(f"{LABELS} must not be negative", source)
    if targets is not None:
        if not np.issubdtype(targets.dtype, np.floating) or targets.ndim < 1 or len(targets) != count:
            raise InvalidSettingError(f"{TARGETS} must be float arrays, one per sample ({count})", source)
        targets = targets.astype(np.float32, copy=False)
    return Arrays(arrays, labels, count, hashlib.sha256(data).hexdigest(), targets)
