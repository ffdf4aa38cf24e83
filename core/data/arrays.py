"""A user's arrays from an .npz: one per graph input (samples along its batch axis), plus optional `labels`,
checked against the model before anything runs."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InvalidSettingError
from core.model import Model
from core.onnx.inputs import input_specs

LABELS = "labels"  # int class ids, one per sample


@dataclass(frozen=True, eq=False)
class Arrays:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    count: int  # samples
    sha256: str  # of the file


def read_npz(path: Path, model: Model, labels_allowed: bool = False) -> Arrays:
    """Input arrays (and `labels`, where allowed) from an .npz, with names, ranks, fixed dimensions, element
    kinds and sample counts checked against the model. Never unpickles."""
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
    specs = input_specs(model.proto)
    missing, unknown = sorted(set(specs) - set(arrays)), sorted(set(arrays) - set(specs))
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(unknown)}" if unknown else ""]
        extra = f" (and optional {LABELS})" if labels_allowed else ""
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
    return Arrays(arrays, labels, count, hashlib.sha256(data).hexdigest())
