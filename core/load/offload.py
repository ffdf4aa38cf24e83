"""A single-file model over the in-memory limit gets its prunable weights moved into an external data file in
the cache, so it takes the same memory-mapped path as a model that came with external data.

Protobuf keeps a parsed model's bytes in one arena that clearing fields does not give back, so the slimmed
model is serialised and parsed afresh: the caller drops the big message and keeps the small one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx
from onnx import numpy_helper

from core.errors import ModelLoadError
from core.onnx.external_data import refer_to_external_data
from core.onnx.graph import find_prunable_layers

FORMAT = 1  # in the folder's name: bump when the layout changes, so an old folder is never read the new way
DATA_NAME = "weights.bin"
SLIM_MODEL_NAME = "model.onnx"  # the graph with its weights referring to weights.bin: a model the checker can read
ALIGNMENT = 64 * 1024  # tensors start on this boundary, so ONNX Runtime can memory-map each


def move_weights_to_disk(proto: onnx.ModelProto, folder: Path, source: str) -> onnx.ModelProto:
    """A slim copy of `proto` whose prunable weights are external data in `folder`/weights.bin, saved there as
    model.onnx too. Written once per folder (name it by the file's digest and FORMAT): a complete folder from an
    earlier load of the same file is reused. `proto` loses its prunable weights' data."""
    prunable = {layer.name for layer in find_prunable_layers(proto)}
    tensors = [init for init in proto.graph.initializer if init.name in prunable]
    layout, offset = {}, 0
    for tensor in tensors:
        length = _nbytes(tensor)
        layout[tensor.name] = (offset, length)
        offset += length + (-length % ALIGNMENT)
    written = folder / DATA_NAME
    needed = max((start + length for start, length in layout.values()), default=0)
    complete = (folder / SLIM_MODEL_NAME).is_file() and written.is_file() and written.stat().st_size == needed
    staging = None
    try:
        if not complete:
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder (a disk that filled up, say)
            staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
            _write_data(tensors, layout, staging / DATA_NAME, source)
        for tensor in tensors:
            start, length = layout[tensor.name]
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")
            refer_to_external_data(tensor, DATA_NAME, start, length)
        slim = onnx.ModelProto.FromString(proto.SerializeToString())
        if staging is not None:  # renamed into place complete: a reader never sees half a folder
            onnx.save_model(slim, staging / SLIM_MODEL_NAME)
            try:
                os.replace(staging, folder)
            except OSError:  # another process finished the same folder first
                if not (folder / SLIM_MODEL_NAME).is_file():
                    raise
        return slim
    except OSError as error:
        raise ModelLoadError(
            f"cannot write its weights to {folder.parent}: {error.strerror or error}", source
        ) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _nbytes(tensor: onnx.TensorProto) -> int:
    elements = 1
    for dim in tensor.dims:
        elements *= dim
    return elements * 4  # prunable weights are float32


def _write_data(tensors: list[onnx.TensorProto], layout: dict[str, tuple[int, int]], path: Path, source: str) -> None:
    with open(path, "wb") as data:
        for tensor in tensors:
            start, _ = layout[tensor.name]
            try:
                values = numpy_helper.to_array(tensor)  # one tensor in memory at a time
            except ValueError:  # float_data whose count does not match the declared shape
                raise ModelLoadError(
                    f"tensor {tensor.name!r} holds a different number of values than it declares", source
                ) from None
            data.write(b"\0" * (start - data.tell()))
            data.write(values.tobytes())
