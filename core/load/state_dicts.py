"""A safetensors state dict for one of the sample architectures: matched by parameter names and shapes, exported
to ONNX in a sandbox child, cached, and evaluated on that sample's evaluation data.

Safetensors holds only arrays and a JSON header, so reading it runs nothing; pickled checkpoints are refused
earlier (`core.load.formats`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from core.errors import ModelLoadError, UnsupportedModelError
from core.load.files import atomic_path, cache_dir
from core.load.onnx_file import model_from_bytes
from core.load.samples import samples
from core.model import Model
from core.onnx.sandbox import run_isolated


def export_state_dict(sample: str, weights_path: str, onnx_path: str, progress=None) -> None:
    """Runs in a sandbox child."""
    samples()[sample].export_onnx(load_file(weights_path), Path(onnx_path))


def load_state_dict(path: Path) -> Model:
    source = str(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f"not a readable safetensors file ({error})", source) from None
    shapes = {name: tuple(values.shape) for name, values in state.items()}
    architectures = {name: sample for name, sample in samples().items() if sample.parameter_shapes is not None}
    match = next((name for name, sample in architectures.items() if sample.parameter_shapes() == shapes), None)
    if match is None:
        raise UnsupportedModelError(
            "a safetensors state dict that matches no sample architecture "
            f"({', '.join(architectures)}); for other models upload ONNX or a Hugging Face folder",
            source,
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = cache_dir() / f"state-{match}-{digest[:24]}"
    onnx_path = entry / "model.onnx"
    if not onnx_path.exists():
        entry.mkdir(parents=True, exist_ok=True)
        with atomic_path(onnx_path) as temporary:
            run_isolated(
                export_state_dict, match, source, str(temporary), source=source, what=f"exporting the {match} weights"
            )
    sample = samples()[match]
    eval_set = sample.eval_set()
    floats = [values for values in state.values() if np.issubdtype(values.dtype, np.floating)]
    if not all(np.all(np.isfinite(values)) for values in floats):
        raise ModelLoadError("the state dict holds NaN or infinite weights", source)
    return model_from_bytes(
        onnx_path.read_bytes(),
        name=path.name,
        source=source,
        description=f"the {match} architecture with these weights",
        task=sample.task,
        trained=None,
        eval_set=eval_set,
    )
