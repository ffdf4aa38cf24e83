"""Winning accuracy back after compression: the compressed graph is trained on the tuning part of the data (never the
held-out part), and the trained weights go back into the same graph's initializers, so export, checks and the
recipe work as for any other setting. The training itself is in `training` (PyTorch, imported only when a model is
recovered); a user's model trains in a sandbox child with memory and time limits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import onnx
from onnx import numpy_helper

from core.compression.export import export_bytes
from core.compression.pipeline import Compressed
from core.compression.quantization import quantize_weight
from core.compression.recipe import RecoverConfig
from core.compression.recovery import RECOVERY_METHODS, RecoveryInfo
from core.data.quality import measure, metric_of, sqnr_db
from core.errors import UnsupportedModelError
from core.model import Model, per_model
from core.onnx.graph import without_initializers
from core.onnx.sandbox import run_isolated

CLASSIFIER_METRICS = ("accuracy", "top5", "agreement")  # the first output is class logits
MAX_TUNING_SAMPLES = 20_000
SANDBOX_GRACE_S = 120.0  # on top of the budget: converting the graph and importing torch in the child


@per_model
def teacher_outputs(model: Model) -> np.ndarray:
    """The original's first output on the tuning part, run once in ONNX Runtime and kept with the model."""
    part, apart = model.tuning_part(MAX_TUNING_SAMPLES)
    if not apart:
        raise UnsupportedModelError(
            "recovery trains on a tuning part apart from the held-out data, and this model has none: give your data "
            "(--data, or the sidebar's Data section)",
            model.source,
        )
    return model.outputs_of(model.runnable, inputs=part.inputs)[0]


def recover(
    compressed: Compressed, settings: RecoverConfig, progress: Callable[[float], None] | None = None
) -> Compressed:
    """`compressed` with its Conv/Gemm weights and biases trained by `settings.method` within its time budget,
    masks and n-bit grids kept, quantized layers quantized again from the trained float weights; or, for a method
    that does not train (`correct`), with its biases corrected."""
    from core.compression.training import TrainPlan, correct, train  # torch: only where a model is recovered

    model = compressed.model
    method = RECOVERY_METHODS[settings.method]
    part, _ = model.tuning_part(MAX_TUNING_SAMPLES)
    teacher = teacher_outputs(model)
    if method.needs_labels and part.labels is None:
        raise UnsupportedModelError(f"{settings.method} needs labels in the tuning data; distill needs none")
    if any(axis not in (0, None) for axis in model.batch_axes.values()):
        raise UnsupportedModelError("recovery needs every input's batch on its first axis", model.source)
    # training starts from the float weights (quantization is redone after); correction works on what the export
    # computes, quantization's error included
    trains = method.trains
    float_graph = compressed.pruned_float_onnx() if compressed.quantized and trains else compressed.reference_onnx()
    floats = {layer.name: compressed.float_weight(layer.name) for layer in compressed.layers}
    plan = TrainPlan(
        method=settings.method,
        seconds=settings.seconds,
        optimizer=settings.optimizer,
        lr=settings.lr or method.lr,
        seed=settings.seed,
        masks={name: values != 0 for name, values in floats.items()},
        grids={name: (weight.bits, weight.axis) for name, weight in compressed.quantized.items()},
        classifier=metric_of(model).name in CLASSIFIER_METRICS,
        max_steps=settings.steps,
        reference=b"" if trains else model.onnx_bytes,
    )
    before = _quality(model, export_bytes(compressed))
    arguments = (float_graph.SerializeToString(), plan, part.inputs, teacher, part.labels)
    run = train if trains else correct
    if model.is_sample:
        result = run(*arguments, progress=progress)
    else:  # a user's graph runs in PyTorch: in a child, like ONNX Runtime on it
        result = run_isolated(
            run, *arguments, source=model.name, what="recovery", progress=progress,
            timeout_s=settings.seconds + SANDBOX_GRACE_S,
        )  # fmt: skip
    prunable = {layer.name for layer in compressed.layers}
    trained = {name: values for name, values in result.weights.items() if name in prunable}
    others = {name: values for name, values in result.weights.items() if name not in prunable}
    quantized, weights, sqnr = dict(compressed.quantized), dict(compressed.weights) | trained, {}
    for name, old in compressed.quantized.items():
        if name in trained:
            quantized[name] = quantize_weight(trained[name], old.bits, old.axis)
            weights[name] = quantized[name].dequantize()
    float_weights = {name: trained.get(name, compressed.float_weight(name)) for name in quantized}
    sqnr = {name: sqnr_db(float_weights[name], weights[name]) for name in quantized}
    info = RecoveryInfo(
        method=settings.method,
        seconds=round(result.seconds, 2),
        steps=result.steps,
        best_step=result.best_step,
        seed=settings.seed,
        optimizer=settings.optimizer,
        lr=plan.lr,
        tuning_samples=len(teacher),
        metric=metric_of(model).name,
        before=before,
        curve=result.curve,
    )
    return replace(
        compressed,
        skeleton=_with_initializers(compressed.skeleton, others),
        weights=weights,
        quantized=quantized,
        weight_sqnr=sqnr,
        float_weights=float_weights,
        recovery=info,
    )


def _quality(model: Model, export: bytes) -> float:
    """The export's quality on the held-out part, by the model's metric."""
    measured = measure(model, model.outputs_of(export))
    value = metric_of(model).measured(measured)
    return float("nan") if value is None else float(value)


def _with_initializers(skeleton: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The skeleton with these initializers (biases, weights of layers that are not pruned) replaced."""
    if not values:
        return skeleton
    updated = without_initializers(skeleton, set(values))
    updated.graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in values.items())
    return updated
