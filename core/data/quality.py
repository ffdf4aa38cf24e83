"""How good a compressed model's outputs are: accuracy on labels, closeness to targets, fidelity to the original.

Which figure a model is judged by is decided in one place, `metric_of`: the metric the user chose (`--metric`, the
page's picker), else accuracy where the data has labels, closeness to the targets where it has targets, and the
mean cosine of the outputs to the original's where it has neither. Every scan, sweep, report and table asks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from core.errors import InvalidSettingError
from core.model import EvalSet, Model

TOP5_MIN_CLASSES = 10  # below this, top-5 says little


@dataclass(frozen=True)
class OutputFidelity:
    """One output of a multi-output model against the original's."""

    name: str
    cosine_mean: float
    sqnr_db: float
    top1_agreement: float | None


@dataclass(frozen=True)
class Fidelity:
    """The compressed model's outputs against the original's, on the same inputs (the first output, and each one
    where there are several)."""

    inputs: str  # "sample": the model's own or the user's held-out inputs; "random": seeded (accuracy unknown)
    samples: int
    top1_agreement: float | None  # classifiers only
    cosine_mean: float
    cosine_min: float
    max_abs_error: float
    sqnr_db: float = float("inf")
    outputs: tuple[OutputFidelity, ...] = ()  # every output, for a model with several


@dataclass(frozen=True)
class Accuracy:
    original: float
    compressed: float
    samples: int
    top5_original: float | None = None  # with at least TOP5_MIN_CLASSES classes
    top5_compressed: float | None = None
    classes: int = 0  # what the first output scores; 0: unknown

    @property
    def chance(self) -> float | None:
        return 1 / self.classes if self.classes else None

    @property
    def at_chance(self) -> bool:
        """The compressed model's top-1 is not above guessing: within two standard errors of 1/classes (on 359
        digits of 10 classes, up to 13.2 %), so it no longer works whatever its delta says."""
        chance = self.chance
        if chance is None:
            return False
        return self.compressed <= chance + 2 * np.sqrt(chance * (1 - chance) / max(self.samples, 1))


@dataclass(frozen=True)
class TargetFit:
    """The first output against the user's targets, for the original and the compressed model."""

    mse_original: float
    mse_compressed: float
    cosine_original: float
    cosine_compressed: float
    samples: int


class Measured(NamedTuple):
    """What one evaluation measured, from which every metric reads its figure."""

    accuracy: Accuracy | None
    fidelity: Fidelity
    targets: TargetFit | None


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per sample (first axis), the cosine of the candidate's output to the reference's; 1 where both are zero."""
    samples = reference.shape[0] if reference.ndim >= 2 else 1
    a = reference.reshape(samples, -1).astype(np.float64)
    b = candidate.reshape(samples, -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-300), np.where(np.allclose(a, b), 1.0, 0.0))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-noise ratio of the candidate against the reference in dB; infinite where they are equal."""
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def top5(logits: np.ndarray, labels: np.ndarray) -> float:
    best = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    return float((best == labels[:, None]).any(1).mean())


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float((reference.argmax(-1) == candidate.argmax(-1)).mean())


def _scores_classes(model: Model, reference: np.ndarray) -> bool:
    return model.task == "classification" or (
        model.task == "unknown" and reference.ndim == 2 and reference.shape[1] > 1
    )


def fidelity(model: Model, outputs: list[np.ndarray]) -> Fidelity:
    reference, candidate = model.reference_outputs[0], outputs[0]
    samples = reference.shape[0] if reference.ndim >= 2 else 1
    cosine = cosines(reference, candidate)
    names = [output.name for output in model.proto.graph.output]
    per_output = tuple(
        OutputFidelity(
            name,
            float(cosines(before, after).mean()),
            sqnr_db(before, after),
            agreement(before, after) if before.ndim >= 2 and before.shape[-1] > 1 else None,
        )
        for name, before, after in zip(names, model.reference_outputs, outputs, strict=True)
    )
    return Fidelity(
        inputs="random" if model.eval_inputs_are_random else "sample",
        samples=samples,
        top1_agreement=agreement(reference, candidate) if _scores_classes(model, reference) else None,
        cosine_mean=float(cosine.mean()),
        cosine_min=float(cosine.min()),
        max_abs_error=float(np.max(np.abs(reference.astype(np.float64) - candidate))),
        sqnr_db=sqnr_db(reference, candidate),
        outputs=per_output if len(per_output) > 1 else (),
    )


def accuracy(model: Model, outputs: list[np.ndarray]) -> Accuracy | None:
    labels = model.eval_set.labels
    if labels is None:
        return None
    reference, candidate = model.reference_outputs[0], outputs[0]
    with_top5 = reference.shape[-1] >= TOP5_MIN_CLASSES
    return Accuracy(
        top1(reference, labels),
        top1(candidate, labels),
        len(labels),
        top5(reference, labels) if with_top5 else None,
        top5(candidate, labels) if with_top5 else None,
        int(reference.shape[-1]),
    )


def target_fit(model: Model, outputs: list[np.ndarray]) -> TargetFit | None:
    targets = model.eval_set.targets
    if targets is None:
        return None
    reference, candidate = model.reference_outputs[0], outputs[0]

    def mse(values: np.ndarray) -> float:
        return float(np.mean((values.astype(np.float64) - targets) ** 2))

    return TargetFit(
        mse(reference),
        mse(candidate),
        float(cosines(targets, reference).mean()),
        float(cosines(targets, candidate).mean()),
        len(targets),
    )


def measure(model: Model, outputs: list[np.ndarray]) -> Measured:
    """Every figure of the compressed model's `outputs` on the held-out set."""
    return Measured(accuracy(model, outputs), fidelity(model, outputs), target_fit(model, outputs))


@dataclass(frozen=True)
class QualityMetric:
    """One way to judge a model's outputs; higher is better."""

    name: str
    help: str
    drop_name: str  # what a loss of it is called in a sensitivity scan
    # (the original's first output, the candidate's, the data they ran on) -> the candidate's quality
    score: Callable[[np.ndarray, np.ndarray, EvalSet | None], float]
    # the same figure, read from what a report measured
    measured: Callable[[Measured], float | None]
    # why it cannot judge this model, or "" where it can
    unfit: Callable[[Model], str] = lambda model: ""
    percent: bool = False  # a share (accuracy, agreement): shown as a percentage with one decimal

    def format(self, value: float | None) -> str:
        """The one way this metric's values are written, everywhere."""
        if value is None:
            return "—"
        return f"{value:.1%}" if self.percent else f"{value:.4f}"


def _needs_labels(classes: int = 0) -> Callable[[Model], str]:
    def unfit(model: Model) -> str:
        if model.eval_set.labels is None:
            return "needs labels (class folders, or 'labels' in an .npz)"
        if model.reference_outputs[0].shape[-1] < classes:
            return f"needs at least {classes} classes"
        return ""

    return unfit


def _needs_classes(model: Model) -> str:
    reference = model.reference_outputs[0]
    return "" if reference.ndim >= 2 and reference.shape[-1] > 1 else "needs an output of class scores"


QUALITY_METRICS: dict[str, QualityMetric] = {
    "accuracy": QualityMetric(
        "accuracy",
        "top-1 accuracy on the labels",
        "accuracy",
        lambda reference, outputs, data: top1(outputs, data.labels),
        lambda measured: measured.accuracy.compressed,
        _needs_labels(),
        percent=True,
    ),
    "top5": QualityMetric(
        "top5",
        f"top-5 accuracy on the labels ({TOP5_MIN_CLASSES}+ classes)",
        "top-5 accuracy",
        lambda reference, outputs, data: top5(outputs, data.labels),
        lambda measured: measured.accuracy.top5_compressed,
        _needs_labels(TOP5_MIN_CLASSES),
        percent=True,
    ),
    "target-cosine": QualityMetric(
        "target-cosine",
        "mean cosine similarity of the first output to the targets",
        "target cosine",
        lambda reference, outputs, data: float(cosines(data.targets, outputs).mean()),
        lambda measured: measured.targets.cosine_compressed,
        lambda model: "" if model.eval_set.targets is not None else "needs targets ('targets' in an .npz)",
    ),
    "agreement": QualityMetric(
        "agreement",
        "how often the top-1 class matches the original's (no labels)",
        "agreement",
        lambda reference, outputs, data: agreement(reference, outputs),
        lambda measured: measured.fidelity.top1_agreement,
        _needs_classes,
        percent=True,
    ),
    "cosine": QualityMetric(
        "cosine",
        "mean cosine similarity of the outputs to the original's (no labels)",
        "1 - cosine",
        lambda reference, outputs, data: float(cosines(reference, outputs).mean()),
        lambda measured: measured.fidelity.cosine_mean,
    ),
}


def default_metric(model: Model) -> str:
    """The rule where the user chose none: accuracy with labels, closeness to targets with targets, else fidelity."""
    if model.eval_set.labels is not None:
        return "accuracy"
    return "target-cosine" if model.eval_set.targets is not None else "cosine"


def metric_of(model: Model) -> QualityMetric:
    return QUALITY_METRICS[model.metric or default_metric(model)]


def fitting_metrics(model: Model) -> list[str]:
    """The metrics that can judge this model with its data, its default first."""
    default = default_metric(model)
    return [default] + [name for name, metric in QUALITY_METRICS.items() if name != default and not metric.unfit(model)]


def with_metric(model: Model, name: str | None) -> Model:
    """The model judged by metric `name` (None: by the rule), refused in one line where it cannot judge it."""
    if name is None or name == model.metric:
        return model
    metric = QUALITY_METRICS.get(name)
    if metric is None:
        raise InvalidSettingError(f"unknown metric {name!r}; use {', '.join(QUALITY_METRICS)}", "--metric")
    reason = metric.unfit(model)
    if reason:
        raise InvalidSettingError(
            f"{name} {reason}; this model and data fit {', '.join(fitting_metrics(model))}", "--metric"
        )
    return model.judged_by(name)
