"""Load a model from a sample name or an .onnx file into the working representation.

Sample models are exported from PyTorch once and cached on disk, keyed by a hash of their weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from core.errors import ModelLoadError, UnsupportedModelError
from core.files import atomic_path
from core.folding import fold_constants
from core.graph import find_prunable_layers
from core.model import Model
from sample_models import SAMPLES, EvalSet

# Bump when the export of sample models changes, so stale cache entries are not reused.
EXPORT_FORMAT = 1
RANDOM_EVAL_SEED = 0
RANDOM_EVAL_BATCH = 8


def cache_dir() -> Path:
    root = (
        os.environ.get("SQUEEZELAB_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "squeezelab"
    )
    return Path(root)


def load_model(source: str | os.PathLike[str]) -> Model:
    """A sample name (see `sample_models.SAMPLES`) or the path of an .onnx file."""
    text = str(source)
    if text in SAMPLES:
        return load_sample(text)
    path = Path(text)
    if path.suffix == "" and os.sep not in text and not path.exists():
        raise ModelLoadError(f"unknown sample model; known samples: {', '.join(SAMPLES)}", text)
    return load_onnx_file(path)


def load_onnx_file(path: Path) -> Model:
    if not path.exists():
        raise ModelLoadError("no such file", str(path))
    if not path.is_file():
        raise ModelLoadError("not a file", str(path))
    if path.suffix.lower() != ".onnx":
        raise UnsupportedModelError("unsupported file type; expected an .onnx file", str(path))
    data = path.read_bytes()
    return model_from_bytes(data, name=path.name, source=str(path))


def model_from_bytes(
    data: bytes,
    *,
    name: str,
    source: str,
    description: str = "",
    task: str = "unknown",
    trained: bool | None = None,
    eval_set: EvalSet | None = None,
) -> Model:
    """Validate ONNX bytes and build the working representation; eval inputs are seeded random when none are given."""
    sha256 = hashlib.sha256(data).hexdigest()  # of the user's own bytes, so a recipe names the file they have
    proto, folded_nodes = fold_constants(parse_onnx(data, source))
    if folded_nodes:
        data = proto.SerializeToString()  # the folded graph is the "original" every comparison runs against
    layers = find_prunable_layers(proto)
    if not layers:
        raise UnsupportedModelError(
            "no prunable weights (a Conv, ConvTranspose, Gemm or MatMul with a constant float weight)", source
        )
    weights = {}
    initializers = {init.name: init for init in proto.graph.initializer}
    for layer in layers:
        array = numpy_helper.to_array(initializers[layer.name])
        array.flags.writeable = False  # shared by every session: nobody may change it in place
        weights[layer.name] = array
    random_inputs = eval_set is None
    if eval_set is None:
        eval_set = EvalSet(random_inputs_for(proto, source), None)
    model = Model(
        name=name,
        source=source,
        description=description,
        task=task,
        trained=trained,
        onnx_bytes=data,
        sha256=sha256,
        proto=proto,
        layers=tuple(layers),
        weights=weights,
        eval_set=eval_set,
        eval_inputs_are_random=random_inputs,
        folded_nodes=folded_nodes,
    )
    try:
        model.reference_outputs  # noqa: B018 - runs the model once: ONNX Runtime is the final judge of validity
    except Exception as error:  # ONNX Runtime raises its own exception types for broken graphs
        raise ModelLoadError(f"ONNX Runtime cannot run it: {_first_line(error)}", source) from None
    return model


def parse_onnx(data: bytes, source: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError("empty file", source)
    try:
        proto = onnx.ModelProto.FromString(data)
    except DecodeError:
        raise ModelLoadError("not an ONNX model (the protobuf does not parse; corrupt or truncated?)", source) from None
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.graph.node:
        raise ModelLoadError("not an ONNX model (no graph inside)", source)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise UnsupportedModelError("ONNX models with external data are not supported yet", source)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ModelLoadError(f"invalid ONNX model: {_first_line(error)}", source) from None
    return proto


def random_inputs_for(
    proto: onnx.ModelProto, source: str, batch: int = RANDOM_EVAL_BATCH, seed: int = RANDOM_EVAL_SEED
) -> dict[str, np.ndarray]:
    """Seeded inputs matching the graph's input spec: normal floats, ones for integers; symbolic dims become
    `batch` (first axis) or 16."""
    rng = np.random.default_rng(seed)
    initializer_names = {init.name for init in proto.graph.initializer}
    feeds = {}
    for value in proto.graph.input:
        if value.name in initializer_names:
            continue
        if not value.type.HasField("tensor_type"):
            raise UnsupportedModelError(f"input {value.name!r} is not a tensor", source)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = [
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else (batch if axis == 0 else 16)
            for axis, dim in enumerate(value.type.tensor_type.shape.dim)
        ]
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[value.name] = np.ones(shape, dtype)
    return feeds


def load_sample(name: str) -> Model:
    sample = SAMPLES[name]
    state = sample.state_dict()
    entry = cache_dir() / f"{name}-{_state_digest(state)[:20]}"
    onnx_path, eval_path = entry / "model.onnx", entry / "eval.npz"
    entry.mkdir(parents=True, exist_ok=True)
    if not onnx_path.exists():
        with atomic_path(onnx_path) as temporary:
            sample.export_onnx(state, temporary)
    if not eval_path.exists():
        eval_set = sample.eval_set()
        arrays = {f"input/{key}": value for key, value in eval_set.inputs.items()}
        if eval_set.labels is not None:
            arrays["labels"] = eval_set.labels
        with atomic_path(eval_path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
    with np.load(eval_path, allow_pickle=False) as stored:
        inputs = {key.removeprefix("input/"): stored[key] for key in stored.files if key.startswith("input/")}
        labels = stored["labels"] if "labels" in stored.files else None
    return model_from_bytes(
        onnx_path.read_bytes(),
        name=name,
        source=f"sample:{name}",
        description=sample.description,
        task=sample.task,
        trained=sample.trained,
        eval_set=EvalSet(inputs, labels),
    )


def _state_digest(state: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(f"export-format-{EXPORT_FORMAT}".encode())
    for key in sorted(state):
        value = np.ascontiguousarray(state[key])
        digest.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
