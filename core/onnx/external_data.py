"""ONNX external data, checked before onnx or ONNX Runtime read a byte of it.

Every tensor stored outside the .onnx (in the main graph, in subgraphs, in functions, in attributes) must name
a relative location that resolves inside the model's own folder: no `..`, no absolute path, no symbolic link on
the way, no hard link (a link to a file elsewhere), and offset + length within the file. Several ONNX and
ONNX Runtime CVEs came from trusting these locations (CVE-2024-27318, CVE-2026-27489, CVE-2026-34446).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx

from core.errors import ModelLoadError


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from model.graph.initializer
    yield from tensors_beside_initializers(model)


def tensors_beside_initializers(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor but the main graph's initializers: sparse ones, node attributes, subgraphs, functions."""
    for sparse in model.graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in model.graph.node:
        yield from _node_tensors(node)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def refer_to_external_data(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make `tensor` (with no data of its own left) point at `length` bytes at `offset` of the file `location`.
    onnx's set_external_data insists on raw_data being there first, which the tensors written here never have."""
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def has_external_data(model: onnx.ModelProto) -> bool:
    return any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in all_tensors(model))


def check_external_data(model: onnx.ModelProto, folder: Path, source: str) -> None:
    """Raise ModelLoadError naming the first tensor whose external data is not safely inside `folder`."""
    root = folder.resolve()
    for tensor in all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"external data of tensor {tensor.name!r} ({location!r})"
        if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location:
            raise ModelLoadError(f"{where} is not a relative path", source)
        parts = Path(location.replace("\\", "/")).parts
        if ".." in parts:
            raise ModelLoadError(f"{where} climbs out of the model's folder", source)
        path = root
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise ModelLoadError(f"{where} goes through a symbolic link", source)
        if not path.is_file():
            raise ModelLoadError(f"{where} is missing from the upload", source)
        if path.resolve().parent != root and root not in path.resolve().parents:
            raise ModelLoadError(f"{where} resolves outside the model's folder", source)
        status = path.stat()
        if status.st_nlink > 1:
            raise ModelLoadError(f"{where} is a hard link", source)
        offset = int(info.get("offset", 0) or 0)
        length = int(info.get("length", 0) or 0)
        if offset < 0 or length < 0 or offset + length > status.st_size:
            raise ModelLoadError(f"{where} asks for bytes beyond the end of its file", source)
