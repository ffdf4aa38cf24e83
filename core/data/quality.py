"""How close a compressed model's outputs are to the original's: fidelity on the eval inputs, accuracy on labels.

Which figure a model is judged by is decided once, by `metric_name`: accuracy where its data has labels, else the
mean cosine of its outputs to the original's. Every scan, sweep, report and table asks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.model import Model


@dataclass(frozen=True)
class Fidelity:
    """The compressed model's first output against the original's, on the same inputs."""

    inputs: str  # "sample": the model's own eval inputs; "random": seeded random inputs (accuracy unknown)
    samples: int
    top1_agreement: float | None  # classifiers only
    cosine_mean: float
    cosine_min: float
    max_abs_error: float


@dataclass(frozen=True)
class Accuracy:
    original: float
    compressed: float
    samples: int


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per sample (first axis), the cosine of the candidate's output to the reference's; 1 where both are zero."""
    samples = reference.shape[0] if reference.ndim >= 2 else 1
    a = reference.reshape(samples, -1).astype(np.float64)
    b = candidate.reshape(samples, -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-300), np.where(np.allclose(a, b), 1.0, 0.0))


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def fidelity(model: Model, outputs: list[np.ndarray]) -> Fidelity:
    reference, candidate = model.reference_outputs[0], outputs[0]
    samples = reference.shape[0] if reference.ndim >= 2 else 1
    a = reference.reshape(samples, -1).astype(np.float64)
    b = candidate.reshape(samples, -1).astype(np.float64)
    cosine = cosines(reference, candidate)
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
    return Accuracy(top1(model.reference_outputs[0], labels), top1(outputs[0], labels), len(labels))


@dataclass(frozen=True)
class QualityMetric:
    """One way to judge a model's outputs; higher is better."""

    name: str
    help: str
    drop_name: str  # what a loss of it is called in a sensitivity scan
    # (the original's outputs, the candidate's, the labels) -> the candidate's quality
    score: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]
    # the same figure, read from what a report measured
    measured: Callable[[Accuracy | None, Fidelity], float]


QUALITY_METRICS: dict[str, QualityMetric] = {
    "accuracy": QualityMetric(
        "accuracy",
        "top-1 accuracy on the labelled evaluation inputs",
        "accuracy",
        lambda reference, outputs, labels: top1(outputs, labels),
        lambda measured_accuracy, measured_fidelity: measured_accuracy.compressed,
    ),
    "cosine": QualityMetric(
        "cosine",
        "mean cosine similarity of the outputs to the original's (no labels)",
        "1 - cosine",
        lambda reference, outputs, labels: float(cosines(reference, outputs).mean()),
        lambda measured_accuracy, measured_fidelity: measured_fidelity.cosine_mean,
    ),
}


def metric_name(has_labels: bool) -> str:
    """The one rule: a model is judged by accuracy where its data has labels, else by fidelity to the original."""
    return "accuracy" if has_labels else "cosine"


def metric_of(model: Model) -> QualityMetric:
    return QUALITY_METRICS[metric_name(model.eval_set.labels is not None)]


def measured_quality(measured_accuracy: Accuracy | None, measured_fidelity: Fidelity) -> tuple[str, float]:
    """The headline (metric, value) of a measurement: accuracy where there were labels, else mean cosine."""
    metric = QUALITY_METRICS[metric_name(measured_accuracy is not None)]
    return metric.name, metric.measured(measured_accuracy, measured_fidelity)
