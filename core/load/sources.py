"""`load_model`: a sample name, or a user's file or folder handed to the loader for what its bytes say it is."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

from core.archive import safe_extract
from core.errors import InvalidSettingError, ModelLoadError, UnsupportedModelError
from core.load.formats import refuse_if_code, sniff
from core.load.hugging_face import load_hugging_face_folder
from core.load.onnx_file import file_digest, load_onnx_file, parse_onnx
from core.load.samples import load_sample, samples
from core.load.state_dicts import load_state_dict
from core.model import Model
from core.onnx.external_data import has_external_data
from core.onnx.inputs import DeclaredInput, GivenInput, declared_inputs
from core.onnx.runtime import OnnxModel, with_data_in


def load_model(
    source: str | os.PathLike[str], workdir: Path | None = None, given: dict[str, GivenInput] | None = None
) -> Model:
    """A sample name (see `core.load.samples`), or a user's file or folder: an .onnx (external data beside it),
    a .zip of one (or of a Hugging Face folder), a Hugging Face folder, or a safetensors state dict of a sample
    architecture. What a file is comes from its bytes; code formats are refused. Zips are extracted into
    `workdir` (a fresh temporary folder when not given). `given`: shapes and values of an ONNX model's inputs,
    used instead of made-up ones (see `core.onnx.inputs`)."""
    text = str(source)
    if text in samples():
        _refuse_given(given, text)
        return load_sample(text)
    path = Path(text)
    if path.suffix == "" and os.sep not in text and not path.exists():
        raise ModelLoadError(f"unknown sample model; known samples: {', '.join(samples())}", text)
    if not path.exists():
        raise ModelLoadError("no such file", text)
    kind = sniff(path)
    refuse_if_code(path, kind)
    return LOADERS.get(kind, _onnx)(path, text, workdir, given or {})


def load_runnable(source: str | os.PathLike[str]) -> tuple[OnnxModel, frozenset[str]]:
    """A model only to be run beside the one it was made from (an export to time or profile against its
    original), and the names of its inputs. An .onnx file is parsed and checked like any model, its external data
    left beside it, but it needs no prunable weights: an int8 export has none. Anything else loads as a model."""
    text = str(source)
    path = Path(text)
    if text in samples() or not path.is_file() or sniff(path) != "other":
        model = load_model(source)
        return model.runnable, frozenset(model.latency_feed)
    data = path.read_bytes()
    proto = parse_onnx(data, text, path=path)
    runnable = with_data_in(data, path.parent if has_external_data(proto) else None)
    return runnable, frozenset(value.name for value in declared_inputs(proto))


def inputs_to_set(source: str | os.PathLike[str]) -> list[DeclaredInput]:
    """The inputs a user can give shapes and values for (see `load_model`'s `given`): those of a single .onnx file,
    read without its weights; none for a sample or any other format, or a file that does not parse."""
    path = Path(source)
    if str(source) in samples() or not path.is_file() or sniff(path) != "other":
        return []
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX, or corrupt: loading it says why, in its own words
        return []
    return declared_inputs(proto)


def _refuse_given(given: dict[str, GivenInput] | None, source: str) -> None:
    if given:
        raise InvalidSettingError("comes with its own data: --shape and --value are for an ONNX model without", source)


def _zip(path: Path, source: str, workdir: Path | None, given: dict[str, GivenInput]) -> Model:
    digest = file_digest(path)[:16]
    root = workdir or Path(tempfile.mkdtemp(prefix="squeezelab-"))
    folder = safe_extract(path, root / f"{path.stem}-{digest}")
    return load_folder(folder, name=path.name, source=source, given=given)


def _directory(path: Path, source: str, workdir: Path | None, given: dict[str, GivenInput]) -> Model:
    return load_folder(path, name=path.name, source=source, given=given)


def _state_dict(path: Path, source: str, workdir: Path | None, given: dict[str, GivenInput]) -> Model:
    _refuse_given(given, source)
    return load_state_dict(path)


def _onnx(path: Path, source: str, workdir: Path | None, given: dict[str, GivenInput]) -> Model:
    return load_onnx_file(path, given=given)


# What `core.load.formats.sniff` says a file is -> its loader; anything else is tried as ONNX.
LOADERS: dict[str, Callable[[Path, str, Path | None, dict[str, GivenInput]], Model]] = {
    "zip": _zip,
    "directory": _directory,
    "safetensors": _state_dict,
}


def load_folder(folder: Path, *, name: str, source: str, given: dict[str, GivenInput] | None = None) -> Model:
    """A Hugging Face folder (config.json + safetensors) or a folder holding one .onnx with its external data."""
    code = sorted(str(path.relative_to(folder)) for path in folder.rglob("*.py"))
    if code:
        raise UnsupportedModelError(f"the folder holds Python code ({', '.join(code[:3])}): it is never run", source)
    # the model's config sits beside its weights (sentence-transformers folders hold other config.json files)
    configs = sorted(
        (path for path in folder.rglob("config.json") if list(path.parent.glob("*.safetensors"))),
        key=lambda path: len(path.parts),
    )
    models = list(folder.rglob("*.onnx"))
    if len(models) == 1:
        return load_onnx_file(models[0], name=name, source=source, given=given)
    if len(models) > 1:
        listed = ", ".join(sorted(str(path.relative_to(folder)) for path in models)[:4])
        raise UnsupportedModelError(f"several .onnx files ({listed}); upload one model at a time", source)
    if not configs:
        configs = sorted(folder.rglob("config.json"), key=lambda path: len(path.parts))
    if configs:
        _refuse_given(given, source)
        return load_hugging_face_folder(configs[0].parent, name=name, source=source)
    raise UnsupportedModelError(
        "no model inside: expected one .onnx file, or a Hugging Face folder (config.json + *.safetensors)", source
    )
