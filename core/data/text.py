"""A user's text for a Hugging Face text model: a UTF-8 .txt, one sample per line, tokenized by the model's own
tokenizer (in a sandbox child for a user's folder: its tokenizer files are untrusted) to the length the model's
own inputs have."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from core.data.arrays import Arrays
from core.errors import InvalidSettingError
from core.model import Model
from core.onnx.inputs import input_specs
from core.onnx.sandbox import run_isolated

MAX_LINES = 20_000
TOKENIZE_TIMEOUT_S = 300.0


def tokenize(folder: str, lines: list[str], length: int, progress=None) -> dict[str, np.ndarray]:
    """Runs in a sandbox child for a user's folder: the folder's tokenizer, local files only, no remote code."""
    from transformers import AutoTokenizer  # only where text is tokenized

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    tokens = tokenizer(lines, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return {name: np.asarray(values, np.int64) for name, values in tokens.items()}


def read_text(path: Path, model: Model) -> Arrays:
    source = str(path)
    if model.tokenizer_folder is None:
        raise InvalidSettingError(
            "text needs a Hugging Face text model with its tokenizer (a folder with tokenizer.json); this model has none",
            source,
        )
    data = path.read_bytes()
    try:
        lines = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise InvalidSettingError("not UTF-8 text", source) from None
    if not lines:
        raise InvalidSettingError("no lines of text", source)
    if len(lines) > MAX_LINES:
        raise InvalidSettingError(f"{len(lines):,} lines; the limit is {MAX_LINES:,}", source)
    specs = input_specs(model.proto)
    length = next(iter(model.eval_set.inputs.values())).shape[-1]  # as long as the model's own inputs
    arguments = (str(model.tokenizer_folder), lines, length)
    if model.is_sample:
        tokens = tokenize(*arguments)
    else:
        tokens = run_isolated(tokenize, *arguments, source=source, what="tokenizing", timeout_s=TOKENIZE_TIMEOUT_S)
    missing = sorted(set(specs) - set(tokens))
    if missing:
        raise InvalidSettingError(f"the tokenizer gives no {', '.join(missing)}, which the model takes", source)
    inputs = {name: tokens[name].astype(specs[name][0], copy=False) for name in specs}
    return Arrays(
        inputs,
        None,
        len(lines),
        hashlib.sha256(data).hexdigest(),
        preprocessing=f"tokenized by the model's tokenizer, padded or cut to {length} tokens",
    )
