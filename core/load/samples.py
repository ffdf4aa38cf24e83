"""Sample models, found through the `squeezelab.samples` entry point rather than imported: `core` never depends on
the package that provides them (`sample_models`, declared in pyproject.toml), which hands each one over through
the `Sample` protocol below. A sample is exported to ONNX once and cached, keyed by a hash of its weights."""

from __future__ import annotations

import functools
import hashlib
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

import numpy as np

from core.load.files import atomic_path, cache_dir
from core.load.onnx_file import model_from_bytes
from core.model import SAMPLE_SOURCE_PREFIX, EvalSet, Model

ENTRY_POINT_GROUP = "squeezelab.samples"
# Bump when the export of sample models changes, so stale cache entries are not reused.
EXPORT_FORMAT = 1

StateDict = dict[str, np.ndarray]


class Sample(Protocol):
    """What a provider of sample models hands over for each one."""

    name: str
    description: str
    task: str  # "classification" or "embedding"
    trained: bool
    state_dict: Callable[[], StateDict]
    export_onnx: Callable[[StateDict, Path], None]
    eval_set: Callable[[], EvalSet]
    # The tuning part (calibration, sensitivity, allocation), apart from the evaluation set; None: there is only that.
    tuning_set: Callable[[], EvalSet] | None
    # The parameter names and shapes of its architecture, so a user's safetensors state dict of the same
    # architecture can be recognised and exported with it; None: it takes no state dicts.
    parameter_shapes: Callable[[], dict[str, tuple[int, ...]]] | None
    # A text model's Hugging Face folder, whose tokenizer makes a user's text into its inputs; None: takes no text.
    tokenizer_folder: Callable[[], Path] | None


@functools.cache
def samples() -> Mapping[str, Sample]:
    """Every sample the installed providers declare, by name: a live view of their registries."""
    return ChainMap(*(entry.load() for entry in entry_points(group=ENTRY_POINT_GROUP)))


def load_sample(name: str) -> Model:
    sample = samples()[name]
    state = sample.state_dict()
    entry = cache_dir() / f"{name}-{_state_digest(state)[:20]}"
    # eval-v3: the digits' tuning part is every training digit (v2: the first 64; v1: unlabelled inputs)
    onnx_path, eval_path = entry / "model.onnx", entry / "eval-v3.npz"
    entry.mkdir(parents=True, exist_ok=True)
    if not onnx_path.exists():
        with atomic_path(onnx_path) as temporary:
            sample.export_onnx(state, temporary)
    if not eval_path.exists():
        arrays = _as_arrays(sample.eval_set(), "")
        if sample.tuning_set is not None:
            arrays |= _as_arrays(sample.tuning_set(), "tuning/")
        with atomic_path(eval_path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
    with np.load(eval_path, allow_pickle=False) as stored:
        eval_set = _from_arrays(stored, "")
        tuning_set = _from_arrays(stored, "tuning/") if sample.tuning_set is not None else None
    model = model_from_bytes(
        onnx_path.read_bytes(),
        name=name,
        source=f"{SAMPLE_SOURCE_PREFIX}{name}",
        description=sample.description,
        task=sample.task,
        trained=sample.trained,
        eval_set=eval_set,
        tuning_set=tuning_set,
    )
    return model if sample.tokenizer_folder is None else replace(model, tokenizer_folder=sample.tokenizer_folder())


def _as_arrays(data: EvalSet, prefix: str) -> dict[str, np.ndarray]:
    arrays = {f"{prefix}input/{key}": value for key, value in data.inputs.items()}
    return arrays | ({f"{prefix}labels": data.labels} if data.labels is not None else {})


def _from_arrays(stored: np.lib.npyio.NpzFile, prefix: str) -> EvalSet:
    inputs = {
        key.removeprefix(f"{prefix}input/"): stored[key] for key in stored.files if key.startswith(f"{prefix}input/")
    }
    return EvalSet(inputs, stored[f"{prefix}labels"] if f"{prefix}labels" in stored.files else None)


def _state_digest(state: StateDict) -> str:
    digest = hashlib.sha256(f"export-format-{EXPORT_FORMAT}".encode())
    for key in sorted(state):
        value = np.ascontiguousarray(state[key])
        digest.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()
