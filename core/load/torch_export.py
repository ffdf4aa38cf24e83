"""PyTorch modules to ONNX, for sources that arrive as weights: a Hugging Face encoder becomes mean-pooled, normalised
sentence embeddings, tokenized from the sentences this tool ships for text models without data of their own.

Imports torch at the top (transformers where it is used, as it takes seconds to import), so this module is imported
only where a model is exported (in a sandbox child for a user's folder): `import core` stays free of both.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17
MAX_TOKENS = 128
SENTENCES = Path(__file__).with_name("sentences.txt")


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder followed by mean pooling and L2 normalisation, as sentence-transformers does."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def export_module(
    module: nn.Module,
    example: tuple,
    path: Path,
    input_names: list[str],
    output_name: str,
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    # The TorchScript exporter is deprecated but 4x faster here than dynamo=True (design notes), and we export once.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
        )


def export_sentence_encoder(folder: Path, path: Path) -> None:
    """A Hugging Face encoder folder exported as mean-pooled, normalised sentence embeddings."""
    from transformers import AutoModel

    # Local files only, safetensors only, no remote code: the same rules for the samples as for a user's folder.
    encoder = AutoModel.from_pretrained(
        str(folder), local_files_only=True, use_safetensors=True, trust_remote_code=False, attn_implementation="eager"
    )
    axes = {0: "batch", 1: "tokens"}
    example = (torch.ones(1, 16, dtype=torch.int64), torch.ones(1, 16, dtype=torch.int64))
    export_module(
        SentenceEncoder(encoder),
        example,
        path,
        ["input_ids", "attention_mask"],
        "embedding",
        {"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
    )


def sentences() -> list[str]:
    """The fixed sentences a sentence encoder without data of its own is evaluated on."""
    lines = SENTENCES.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def tokenized_sentences(folder: Path) -> dict[str, np.ndarray]:
    """The shipped sentences, tokenized by the folder's own tokenizer to MAX_TOKENS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    tokens = tokenizer(sentences(), padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="np")
    return {name: tokens[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
