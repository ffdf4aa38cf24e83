"""What a user's file really is, judged by its bytes rather than its name, and which kinds are refused.

Model files are untrusted: pickles run code when loaded, TorchScript and `torch.export` archives are code.
Those are recognised and refused here, before anything parses them.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from core.errors import UnsupportedModelError

PICKLE_PROTOCOL_OPCODE = 0x80
MAX_SAFETENSORS_HEADER = 100_000_000

REFUSALS = {
    "pickle": "a pickled file (PyTorch .pt/.pth/.bin/.ckpt): loading it would run code inside it; save a "
    "safetensors state dict or export to ONNX instead",
    "torch-zip": "a PyTorch checkpoint (zip with data.pkl inside): loading it would unpickle, which runs code; "
    "save a safetensors state dict or export to ONNX instead",
    "torchscript": "a TorchScript archive: it is code, and this tool never runs users' code; export to ONNX instead",
    "pt2": "a torch.export (.pt2) archive: it is code, and this tool never runs users' code; export to ONNX instead",
}


def sniff(path: Path) -> str:
    """One of: directory, pickle, torch-zip, torchscript, pt2, zip, safetensors, other (perhaps ONNX)."""
    if path.is_dir():
        return "directory"
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) >= 2 and head[0] == PICKLE_PROTOCOL_OPCODE and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(path)
    if len(head) >= 9:
        (header_length,) = struct.unpack("<Q", head[:8])
        if (
            2 <= header_length <= MAX_SAFETENSORS_HEADER
            and head[8:9] == b"{"
            and _safetensors_header(path, header_length)
        ):
            return "safetensors"
    return "other"


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "other"
    leaves = {name.rsplit("/", 1)[-1] for name in names}
    if "constants.pkl" in leaves or any("/code/" in f"/{name}" for name in names):
        return "torchscript"
    if "archive_format" in leaves or any(name.endswith("models/model.json") for name in names):
        return "pt2"
    if "data.pkl" in leaves or any(name.endswith(".pkl") for name in names):
        return "torch-zip"
    return "zip"


def _safetensors_header(path: Path, length: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(8)
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError):
            return False
    return isinstance(header, dict)


def refuse_if_code(path: Path, kind: str) -> None:
    if kind in REFUSALS:
        raise UnsupportedModelError(REFUSALS[kind], str(path))
