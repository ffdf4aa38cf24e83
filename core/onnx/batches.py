"""Running a session over many samples a few at a time: a large evaluation set (thousands of 224x224 images) never
sits in memory as one float batch, and neither do its activations."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from core.onnx.inputs import sample_count, take
from core.onnx.runtime import run

CHUNK_BYTES = 16 * 1024**2  # of inputs per run: a few dozen 224x224 images, every digit at once


def chunk_samples(feeds: dict[str, np.ndarray], axes: dict[str, int | None]) -> int:
    """How many samples one run takes: as many as fit CHUNK_BYTES of inputs, at least one."""
    count = sample_count(feeds, axes)
    per_sample = sum(
        np.dtype(values.dtype).itemsize * int(np.prod(values.shape)) // max(count, 1)
        for name, values in feeds.items()
        if axes.get(name, 0) is not None and values.ndim > axes.get(name, 0)
    )
    return max(1, CHUNK_BYTES // max(per_sample, 1))


def run_in_chunks(
    session: ort.InferenceSession,
    feeds: dict[str, np.ndarray],
    axes: dict[str, int | None],
    progress: Callable[[float], None] | None = None,
) -> list[np.ndarray]:
    """The outputs for every sample, run `chunk_samples` at a time and joined along each output's batch axis (the
    first axis as long as the chunk). Inputs may be lazy arrays that make each chunk when sliced (images kept as
    bytes); an output with no batch axis cannot be joined, so such a model runs whole."""
    count, size = sample_count(feeds, axes), chunk_samples(feeds, axes)
    if count <= size:
        outputs = run(session, take(feeds, axes, 0, count))
        if progress:
            progress(1.0)
        return outputs
    parts: list[list[np.ndarray]] = []
    joins: list[int] = []
    for start in range(0, count, size):
        stop = min(start + size, count)
        outputs = run(session, take(feeds, axes, start, stop))
        if not joins:
            joins = [
                next((axis for axis, length in enumerate(out.shape) if length == stop - start), -1) for out in outputs
            ]
            if -1 in joins:  # an output without a batch axis: nothing to join it along
                return run(session, take(feeds, axes, 0, count))
        parts.append(outputs)
        if progress:
            progress(stop / count)
    return [np.concatenate([part[index] for part in parts], axis=axis) for index, axis in enumerate(joins)]
