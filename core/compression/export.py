"""Serialise the compressed model to the exact bytes the user downloads, checked before anything is written.

An export over 2 GB cannot be one protobuf: it is written as model.onnx with its weights in model.onnx.data
beside it (ONNX external data), one tensor at a time, and travels as a .zip of the two.

Weight-only quantization is written by this tool (int8 codes + DequantizeLinear). Int8 activations are written by
ONNX Runtime's own quantizers from the float graph with the weights already on their n-bit grid, so the codes
they store are that grid's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from core.compression.activations import ACTIVATION_MODES
from core.compression.pipeline import Compressed
from core.errors import InvalidSettingError, UnsupportedModelError
from core.load.files import write_atomic
from core.model import Model, per_model
from core.onnx.external_data import all_tensors, refer_to_external_data
from core.onnx.graph import sort_topologically
from core.onnx.runtime import OnnxModel
from core.onnx.sandbox import run_isolated

# Protobuf refuses messages of 2 GiB and more; an export estimated above this is written with external data.
SINGLE_FILE_LIMIT = 2_000_000_000
MODEL_NAME = "model.onnx"
INLINE_BELOW = 1024  # bytes: smaller tensors (scales, zero points, biases) stay inside the .onnx
ALIGNMENT = 64 * 1024  # each external tensor starts on this boundary, so ONNX Runtime can memory-map it


def quantize_activations(
    float_model: bytes, mode: str, calibration: dict, method: str, keep: list[str], progress=None
) -> bytes:
    """The activation mode's own quantizer on the float graph (a module-level function: it may run in a child)."""
    return ACTIVATION_MODES[mode].quantize(onnx.load_from_string(float_model), calibration, method, keep, progress)


def export_bytes(compressed: Compressed, progress: Callable[[float], None] | None = None) -> bytes:
    """The export, validated with the full ONNX checker (including strict shape inference).

    `progress` hears how far static calibration has got (0-1).
    """
    if estimated_size(compressed) > SINGLE_FILE_LIMIT:
        raise UnsupportedModelError(
            "the export is over 2 GB, more than one .onnx file holds: export it with external data",
            compressed.model.source,
        )
    mode = compressed.activation_mode
    if ACTIVATION_MODES[mode].quantize is None:
        proto = compressed.export_onnx()
    else:
        quant = compressed.recipe.quant
        float_model = compressed.reference_onnx().SerializeToString()
        inputs = compressed.calibration.inputs if compressed.calibration else {}
        # every layer this tool left in float (keep_float, skipped, 32-bit overrides) stays float in ONNX Runtime too
        keep = [layer.node for layer in compressed.layers if layer.name not in compressed.quantized]
        arguments = (float_model, mode, inputs, quant.calib_method, keep)
        if compressed.model.is_sample:
            data = quantize_activations(*arguments, progress=progress)
        else:  # a user's model: ONNX Runtime's quantizers run it, so they run in a sandbox child
            data = run_isolated(
                quantize_activations, *arguments, source=compressed.model.name, what="quantization", progress=progress
            )
        proto = onnx.load_from_string(data)
        sort_topologically(proto.graph)
    data = proto.SerializeToString()
    onnx.checker.check_model(data, full_check=True)  # the bytes, not the proto: it would serialise it again
    return data


def export_size(export: OnnxModel) -> int:
    """Bytes on disk: the single file, or the .onnx with the external data beside it."""
    if isinstance(export, bytes):
        return len(export)
    return sum(path.stat().st_size for path in export.parent.iterdir())


@per_model
def _skeleton_size(model: Model) -> int:
    return model.skeleton.ByteSize()  # 46 ms on minilm, whose embeddings stay in the skeleton: once per model


def estimated_size(compressed: Compressed) -> int:
    """The export's size in bytes, from the layers' shapes and storage (no weight is computed)."""
    weights = sum(
        layer.params * (1 if layer.name in compressed.quantized else 4)
        for layer in compressed.layers
        if layer.name in compressed.weights
    )
    model = compressed.model
    skeleton = _skeleton_size(model) if compressed.skeleton is model.skeleton else compressed.skeleton.ByteSize()
    return skeleton + weights


def export_model(compressed: Compressed, folder: Path, progress: Callable[[float], None] | None = None) -> OnnxModel:
    """The export: bytes when it fits one protobuf, else the path of `folder`/model.onnx with its external data."""
    if estimated_size(compressed) <= SINGLE_FILE_LIMIT:
        return export_bytes(compressed, progress)
    if ACTIVATION_MODES[compressed.activation_mode].quantize is not None:
        raise UnsupportedModelError("int8 activations are not written for exports over 2 GB", compressed.model.source)
    return write_with_external_data(compressed, folder)


def write_with_external_data(compressed: Compressed, folder: Path) -> Path:
    """`folder`/model.onnx and model.onnx.data, written one tensor at a time (nothing holds every weight at once)
    and checked with the full ONNX checker."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MODEL_NAME
    data_name = f"{MODEL_NAME}.data"
    with open(folder / data_name, "wb") as data:

        def store(values: np.ndarray, name: str) -> onnx.TensorProto:
            values = np.ascontiguousarray(values)
            if values.nbytes < INLINE_BELOW:
                return numpy_helper.from_array(values, name)
            data.write(b"\0" * (-data.tell() % ALIGNMENT))
            tensor = onnx.TensorProto(
                name=name, data_type=helper.np_dtype_to_tensor_dtype(values.dtype), dims=values.shape
            )
            refer_to_external_data(tensor, data_name, data.tell(), values.nbytes)
            data.write(memoryview(values.reshape(-1)).cast("B"))
            return tensor

        proto = compressed.export_onnx(store)
    onnx.save_model(proto, path)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def check_export_target(target: Path) -> None:
    """Refuse an output name an export cannot take: a folder, or one an export's external data would clash with."""
    if target.is_dir():
        raise InvalidSettingError("is a folder; name the file to write", str(target))
    if target.suffix == ".data":
        raise InvalidSettingError("ends in .data, the name given to an export's external data; use .onnx", str(target))


def save_export(export: OnnxModel, target: Path) -> list[Path]:
    """Put an export at `target` (replacing what was there only once it is complete); the files written.

    `target` ending in .zip gets a zip of the model (with its external data); an .onnx target of an export with
    external data gets that data beside it as `<target>.data`.
    """
    check_export_target(target)
    if target.suffix == ".zip":
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as handle:
            temporary = Path(handle.name)
        try:
            write_zip(export, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return [target]
    if isinstance(export, bytes):
        write_atomic(target, export)
        return [target]
    data_target = target.with_name(f"{target.name}.data")
    proto = onnx.load(str(export), load_external_data=False)
    for tensor in all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_target.name
    staged = export.parent / f"staged-{target.name}"
    onnx.save_model(proto, staged)
    os.replace(export.parent / f"{MODEL_NAME}.data", data_target)  # the data first: the .onnx names it
    try:
        os.replace(staged, target)
    except OSError:
        data_target.unlink(missing_ok=True)  # never leave weights that no .onnx of this export names
        raise
    return [target, data_target]


def write_zip(export: OnnxModel, archive: Path) -> None:
    """A zip holding model.onnx (and, for a large export, model.onnx.data), stored uncompressed: the weights
    barely compress, and unzip tools read stored entries at disk speed."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as output:
        if isinstance(export, bytes):
            output.writestr(MODEL_NAME, export)
            return
        for path in sorted(export.parent.iterdir()):
            with open(path, "rb") as source, output.open(path.name, "w", force_zip64=True) as entry:
                shutil.copyfileobj(source, entry, 16 * 1024**2)
