"""How close a compressed model's outputs are to the original's: fidelity on the eval inputs, accuracy on labels."""

from __future__ import annotations

import numpy as np

from core.model import Model
from core.report import Accuracy, Fidelity


def fidelity(model: Model, outputs: list[np.ndarray]) -> Fidelity:
    reference, candidate = model.reference_outputs[0], outputs[0]
    samples = reference.shape[0] if reference.ndim >= 2 else 1
    a = reference.reshape(samples, -1).astype(np.float64)
    b = candidate.reshape(samples, -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-300), np.where(np.allclose(a, b), 1.0, 0.0))
    is_classifier = model.task == "classification" or (
        model.task == "unknown" and reference.ndim == 2 and reference.shape[1] > 1
    )
    agreement = float((a.argmax(1) == b.argmax(1)).mean()) if is_classifier else None
    return Fidelity(
        inputs="random" if model.eval_inputs_are_random else "sample",
        samples=samples,
        top1_agreement=agreement,
        cosine_mean=float(cosine.mean()),
        cosine_min=float(cosine.min()),
        max_abs_error=float(np.max(np.abs(a - b))),
    )


def accuracy(model: Model, outputs: list[np.ndarray]) -> Accuracy | None:
    labels = model.eval_set.labels
    if labels is None:
        return None

    def score(logits: np.ndarray) -> float:
        return float((logits.argmax(1) == labels).mean())

    return Accuracy(score(model.reference_outputs[0]), score(outputs[0]), len(labels))
