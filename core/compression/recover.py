"""Winning accuracy back after compression: the compressed graph is trained on the tuning part of the data (never the
held-out part), and the trained weights go back into the same graph's initializers, so export, checks and the
recipe work as for any other setting. The training itself is in `training` (PyTorch, imported only when a model is
recovered); a user's model trains in a sandbox child with memory and time limits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import numpy_helper

from core.compression.export import export_bytes
from core.compression.pipeline import Compressed, own_amounts, prepare_index
from core.compression.quantization import quantize_weight
from core.compression.recipe import MAX_RECOVERY_SECONDS, Recipe, RecoverConfig
from core.compression.recovery import MATMUL_LR, RECOVERY_METHODS, RecoveryInfo, RecoveryMethod
from core.compression.schedules import SCHEDULES, MaskSchedule, channel_cells, removed_per_group
from core.compression.structured import ChannelIndex, apply_channel_removal
from core.data.quality import measure, metric_of, sqnr_db
from core.errors import InvalidSettingError, UnsupportedModelError
from core.model import Model, per_model
from core.onnx.graph import with_weights, without_initializers
from core.onnx.sandbox import run_isolated

CLASSIFIER_METRICS = ("accuracy", "top5", "agreement")  # the first output is class logits
MAX_TUNING_SAMPLES = 20_000
# The held-out slice the live curve watches: as many samples as the original runs in this long, at least these
WATCH_SECONDS, WATCH_AT_LEAST = 0.05, 64
SANDBOX_GRACE_S = 120.0  # on top of the budget: converting the graph and importing torch in the child


@per_model
def teacher_outputs(model: Model) -> np.ndarray:
    """The original's first output on the tuning part, run once in ONNX Runtime and kept with the model."""
    part = model.separate_tuning_part(MAX_TUNING_SAMPLES, "recovery trains")
    return model.outputs_of(model.runnable, inputs=part.inputs)[0]


def recover(
    compressed: Compressed,
    settings: RecoverConfig,
    progress: Callable[[float], None] | None = None,
    on_point: Callable[[tuple[int, float, float, float]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Compressed:
    """`compressed` with its Conv/Gemm weights and biases trained by `settings.method` within its time budget (or
    until `stop()`, keeping the best checkpoint so far), masks and n-bit grids kept, quantized layers quantized
    again from the trained float weights; or, for a method that does not train (`correct`), with its biases
    corrected. `on_point` gets each point of the curve (`RecoveryInfo.curve`) as it is measured."""
    from core.compression.training import HeldOut, TrainPlan, correct, train  # torch: only where a model is recovered

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
    stepped = _stepped(compressed, settings) if settings.stepped else None
    if stepped is not None:  # pruned while training, from the original weights
        float_graph, floats = with_weights(model.skeleton, model.weights, {}), {}
    watched = model.evaluated_within(WATCH_SECONDS, WATCH_AT_LEAST)
    plan = TrainPlan(
        method=settings.method,
        seconds=settings.seconds,
        optimizer=settings.optimizer,
        lr=settings.lr or _default_lr(model, method),
        seed=settings.seed,
        masks={name: values != 0 for name, values in floats.items()},
        grids={name: (weight.bits, weight.axis) for name, weight in compressed.quantized.items()},
        classifier=metric_of(model).name in CLASSIFIER_METRICS,
        max_steps=settings.steps,
        schedule_steps=settings.schedule_steps,
        batch=settings.batch,
        check_every=settings.check_every,
        reference=b"" if trains else model.onnx_bytes,
        schedule=None if stepped is None else stepped.schedule,
        watch=HeldOut(metric_of(model).name, watched.eval_set, watched.reference_outputs[0]) if trains else None,
    )
    before = _quality(model, export_bytes(compressed))
    arguments = (float_graph.SerializeToString(), plan, part.inputs, teacher, part.labels)
    run = train if trains else correct

    def relay(value: float | tuple[int, float, float, float]) -> None:
        if isinstance(value, tuple):
            if on_point is not None:
                on_point(value)
        elif progress is not None:
            progress(value)

    if model.is_sample:
        result = run(*arguments, progress=relay, stop=stop)
    else:  # a user's graph runs in PyTorch: in a child, like ONNX Runtime on it
        result = run_isolated(
            run, *arguments, source=model.name, what="recovery", progress=relay, stop=stop,
            timeout_s=settings.seconds + SANDBOX_GRACE_S,
        )  # fmt: skip
    weights = result.weights
    if stepped is not None and stepped.index is not None:  # the classes removed at the end, sliced out
        weights = _sliced(compressed, stepped, result.removed, weights)
    prunable = {layer.name for layer in compressed.layers}
    trained = {name: values for name, values in weights.items() if name in prunable}
    others = {name: values for name, values in weights.items() if name not in prunable}
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
        schedule=settings.schedule,
        pruning_steps=settings.pruning_steps if settings.stepped else 1,
        soft=settings.soft,
        stopped=result.stopped,
        check_every=result.check_every,
        planned_steps=result.planned,
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


@dataclass(frozen=True)
class _Stepped:
    schedule: MaskSchedule
    index: ChannelIndex | None  # channels: the classes the schedule chooses among


def _stepped(compressed: Compressed, settings: RecoverConfig) -> _Stepped:
    """The mask schedule that ends where the recipe's pruning does: as many zeros per layer, or as many channels
    removed per group."""
    model, prune = compressed.model, compressed.recipe.prune
    ramp = SCHEDULES[settings.schedule].stepped
    if prune.granularity == "unstructured":
        zeros = {name: int(np.count_nonzero(compressed.float_weight(name) == 0)) for name in compressed.weights}
        zeros = {name: count for name, count in zeros.items() if count}
        return _Stepped(MaskSchedule(settings.pruning_steps, ramp, settings.soft, zeros), None)
    if prune.granularity != "channel":
        raise InvalidSettingError("a gradual or soft schedule prunes single weights or channels, not blocks")
    index = prepare_index(model, compressed.recipe)
    cells = channel_cells(index)
    roots = index.removed_roots(
        prune.amount, prune.scope, prune.channel_multiple, own_amounts(model, compressed.recipe)
    )
    removed = removed_per_group(cells, index, roots)
    return _Stepped(MaskSchedule(settings.pruning_steps, ramp, settings.soft, {}, cells, removed), index)


def _sliced(
    compressed: Compressed, stepped: _Stepped, removed: list[int], weights: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The trained weights of the whole graph, with the channel classes the schedule removed sliced out, as the
    recipe's own channel removal slices them."""
    index = stepped.index
    roots = {index.classes[number].root for number in removed}
    sliced = apply_channel_removal(compressed.model.proto, index.graph, roots, weights)
    kept = {init.name: numpy_helper.to_array(init) for init in sliced.graph.initializer if init.name in weights}
    expected = {init.name: tuple(init.dims) for init in compressed.skeleton.graph.initializer}
    expected |= {name: values.shape for name, values in compressed.weights.items()}
    wrong = [name for name, values in kept.items() if expected.get(name, values.shape) != values.shape]
    if wrong:
        raise UnsupportedModelError(f"internal: the schedule's channels do not match the recipe's at {wrong[0]}")
    return kept


def _default_lr(model: Model, method: RecoveryMethod) -> float:
    initializers = {init.name for init in model.proto.graph.initializer}
    matmul = any(node.op_type == "MatMul" and node.input[1] in initializers for node in model.proto.graph.node)
    return MATMUL_LR if matmul and method.trains else method.lr


def replayable(recipe: Recipe, info: RecoveryInfo | None) -> Recipe:
    """The recipe as it should be saved after a recovery: with the number of steps it trained and the steps between
    its checks, so applying it again trains the same steps in the same order (the learning rate, the pruning steps
    and the checks follow steps, not time) and reproduces the accuracy; its time limit doubled, so a slower machine
    still gets through them. A run that ran out of time (or was stopped) before the end of its plan also records
    the plan's length, which its learning rate decayed over."""
    settings = recipe.recover
    if settings is None or info is None or settings.steps is not None or not RECOVERY_METHODS[info.method].trains:
        return recipe
    seconds = min(MAX_RECOVERY_SECONDS, 2 * settings.seconds)
    steps = max(1, info.steps)
    planned = info.planned_steps if info.planned_steps > steps else None
    return replace(
        recipe,
        recover=replace(settings, steps=steps, seconds=seconds, check_every=info.check_every, schedule_steps=planned),
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
