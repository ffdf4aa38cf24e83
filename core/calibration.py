"""Calibration inputs for static int8: the sample's own inputs, a user's .npz (checked against the model), or
seeded random inputs (flagged: ranges measured on noise can be far from real data's)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from core.errors import InvalidSettingError
from core.model import Model
from sample_models import SAMPLES

MAX_CALIBRATION_SAMPLES = 64
RANDOM_CALIBRATION_BATCH = 32
RANDOM_CALIBRATION_SEED = 1  # not the eval seed: calibrating on the very inputs fidelity is measured on flatters it


@dataclass(frozen=True, eq=False)
class Calibration:
    inputs: dict[str, np.ndarray]
    random: bool  # seeded random inputs: accuracy after static quantization may be off
    description: str


def _input_specs(proto: onnx.ModelProto) -> dict[str, tuple[np.dtype, list[int | None]]]:
    initializers = {init.name for init in proto.graph.initializer}
    specs = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in tensor.shape.dim]
        specs[value.name] = (onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type), dims)
    return specs


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
    specs = _input_specs(model.proto)
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


def calibration_for(model: Model, source: str) -> Calibration:
    if source == "sample":
        sample = SAMPLES.get(model.source.removeprefix("sample:")) if model.is_sample else None
        if sample is not None and sample.calibration_inputs is not None:
            inputs = sample.calibration_inputs()
            count = len(next(iter(inputs.values())))
            return Calibration(
                inputs, False, f"{count} calibration inputs of the sample, apart from its evaluation set"
            )
        inputs = {name: values[:MAX_CALIBRATION_SAMPLES] for name, values in model.eval_set.inputs.items()}
        count = len(next(iter(inputs.values())))
        if model.eval_inputs_are_random:
            return Calibration(inputs, True, f"{count} seeded random inputs (the model has no evaluation data)")
        return Calibration(
            inputs, False, f"{count} of the model's evaluation inputs (the ones fidelity is measured on)"
        )
    if source == "random":
        from core.loading import random_inputs_for

        inputs = random_inputs_for(model.proto, model.source, RANDOM_CALIBRATION_BATCH, RANDOM_CALIBRATION_SEED)
        return Calibration(inputs, True, f"{RANDOM_CALIBRATION_BATCH} seeded random inputs")
    arrays = load_npz(Path(source), model)
    count = len(next(iter(arrays.values())))
    return Calibration(arrays, False, f"{count} inputs from {Path(source).name}")
