"""A user's Hugging Face folder: refused if it carries code, otherwise loaded by transformers with safetensors
only, no remote code and local files only, exported to ONNX once (in a sandbox child) and cached.

The exported model is the encoder followed by mean pooling and L2 normalisation (sentence embeddings), evaluated
by embedding fidelity on the sentences the project ships.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.errors import ModelLoadError, UnsupportedModelError
from core.load.files import atomic_path, cache_dir
from core.load.onnx_file import model_from_bytes
from core.model import EvalSet, Model
from core.onnx.sandbox import run_isolated

EXPORT_FORMAT = 2  # 2: a folder without a tokenizer saves no inputs
EXPORT_TIMEOUT_S = 600.0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _check_folder(folder: Path, source: str) -> None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ModelLoadError("config.json is not readable JSON", source) from None
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        if path.exists() and "auto_map" in path.read_text(encoding="utf-8", errors="replace"):
            raise UnsupportedModelError(f"{name} asks for remote code (auto_map): it is never run", source)
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelLoadError("config.json has no model_type", source)
    if not list(folder.glob("*.safetensors")):
        pickled = [path.name for path in folder.glob("*.bin")] + [path.name for path in folder.glob("*.pt")]
        detail = f" ({', '.join(pickled)} would need unpickling, which runs code)" if pickled else ""
        raise UnsupportedModelError(f"no *.safetensors weights in the folder{detail}", source)


def _digest(folder: Path) -> str:
    digest = hashlib.sha256(f"hf-export-{EXPORT_FORMAT}".encode())
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in (".json", ".safetensors", ".txt")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def export_folder(folder: str, onnx_path: str, eval_path: str, progress=None) -> str:
    """Runs in a sandbox child: load with transformers (safetensors, no remote code, offline), export, tokenize."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    # torch and transformers only here, in the child: the server never imports them for a user's folder
    from core.load.torch_export import export_sentence_encoder, tokenized_sentences

    export_sentence_encoder(Path(folder), Path(onnx_path))
    # without a tokenizer there are no real inputs: none are saved and the model gets flagged random inputs
    tokenized = tokenized_sentences(Path(folder)) if any((Path(folder) / n).exists() for n in TOKENIZER_FILES) else {}
    np.savez(eval_path, **tokenized)
    return "tokenizer" if tokenized else "random"


def load_hugging_face_folder(folder: Path, *, name: str, source: str) -> Model:
    _check_folder(folder, source)
    entry = cache_dir() / f"hf-{_digest(folder)[:24]}"
    onnx_path, eval_path, kind_path = entry / "model.onnx", entry / "eval.npz", entry / "inputs.txt"
    if not (onnx_path.exists() and eval_path.exists() and kind_path.exists()):
        entry.mkdir(parents=True, exist_ok=True)
        with atomic_path(onnx_path) as onnx_tmp, atomic_path(eval_path) as eval_tmp:
            kind = run_isolated(
                export_folder,
                str(folder),
                str(onnx_tmp),
                str(eval_tmp) + ".npz",
                source=source,
                what="loading the Hugging Face folder with transformers and exporting it to ONNX",
                timeout_s=EXPORT_TIMEOUT_S,
            )
            Path(str(eval_tmp) + ".npz").replace(eval_tmp)
        kind_path.write_text(kind)
    with np.load(eval_path, allow_pickle=False) as stored:
        inputs = {key: stored[key] for key in stored.files}
    model = model_from_bytes(
        onnx_path.read_bytes(),
        name=name,
        source=source,
        description="Hugging Face encoder, mean-pooled sentence embeddings",
        task="embedding",
        trained=True,
        eval_set=EvalSet(inputs, None) if inputs else None,
    )
    return replace(model, tokenizer_folder=folder) if inputs else model  # inputs: it has a tokenizer
