"""Training a compressed ONNX graph in PyTorch, then handing its weights back by initializer name.

The graph becomes a torch module through onnx2torch, which makes each Conv and Gemm a torch layer holding that
node's weight and bias. Only those are trained; everything else stays as the graph has it. While training:
- pruned weights stay zero (a mask multiplies each weight on every forward pass), and removed channels stay removed
  (the graph is already sliced);
- a quantized layer's weight runs through fake quantization on its own n-bit grid (symmetric, per output channel,
  scaled by the channel's largest magnitude, as `quantize_weight` does), with a straight-through gradient, so the
  weights handed back quantize to what the last step computed;
- the module is in eval mode: BatchNorm, where onnx2torch keeps one, uses its stored statistics (torch's exporter
  folds it into the convolutions of our samples), and dropout is off.

Imports torch and onnx2torch: only imported where a model is recovered, in a sandbox child for a user's model.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from core.compression.schedules import PRUNING_SPAN, MaskSchedule
from core.data.quality import QUALITY_METRICS
from core.errors import UnsupportedModelError
from core.model import EvalSet

VALIDATION_FRACTION = 0.1  # of the tuning part, held aside to pick the best checkpoint (never the held-out part)
VALIDATION_MOST = 128  # samples: enough to rank checkpoints, few enough to check often on a slow model
CURVE_POINTS = 60  # checks of the validation loss over a run, at most
CHECK_SHARE = 0.2  # and on a model slow to check (minilm: seconds for 128 sentences), at most this share of the time
# Steps timed, then undone, to turn the budget into steps: chunks of CHUNK until two agree within STEADY, at most
# CALIBRATION_STEPS or CALIBRATION_SHARE of the budget
CHUNK, STEADY, CALIBRATION_STEPS, CALIBRATION_SHARE = 5, 0.1, 100, 0.1
BUDGET_USED = 0.95  # of what is left after timing: the rest absorbs timing's error
PROGRESS_EVERY_S = 0.25


def _onnx2torch():
    """onnx2torch imports torchvision for its NMS and RoiAlign converters only, and PyPI's torchvision does not
    import with the CPU torch here (`operator torchvision::nms does not exist`): onnx2torch is installed without
    it (`--no-deps`), and these stand in for the two while it is imported, refusing a graph that needs them. They
    leave sys.modules after, so nothing else (transformers asks whether torchvision is there) ever sees them."""
    if "onnx2torch" in sys.modules or "torchvision" in sys.modules or importlib.util.find_spec("torchvision"):
        import onnx2torch

        return _with_newer_versions(onnx2torch)

    def missing(*args, **kwargs):
        raise UnsupportedModelError("NMS and RoiAlign cannot be trained here: they need torchvision")

    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.box_convert = ops.roi_align = missing
    stand_in = types.ModuleType("torchvision")
    stand_in.ops = ops
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stand_in, ops
    try:
        import onnx2torch
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]
    return _with_newer_versions(onnx2torch)


# ONNX op versions that changed only the types they accept (bfloat16 added), which onnx2torch 1.5.15 has no
# converter for: (op, newer version, the version whose converter computes the same). torch's exporter writes
# GreaterOrEqual-16 into the attention masks of transformers, minilm's among them.
SAME_AS_OLDER = (("GreaterOrEqual", 16, 12), ("LessOrEqual", 16, 12))


def _with_newer_versions(onnx2torch):
    """onnx2torch with the converters of SAME_AS_OLDER registered through its own `add_converter`, and its Flatten
    made to follow ONNX where the axis is the input's rank (minilm's attention mask: [batch, tokens] at axis 2 is
    [batch * tokens, 1]; onnx2torch 1.5.15 flattens to one dimension, then fails)."""
    from onnx2torch.node_converters.flatten import OnnxFlatten
    from onnx2torch.node_converters.registry import add_converter, get_converter

    for operation, newer, older in SAME_AS_OLDER:
        try:
            get_converter(operation, newer)
        except NotImplementedError:
            add_converter(operation, newer)(get_converter(operation, older))
    OnnxFlatten.forward = _flatten
    return onnx2torch


def _flatten(self, x: torch.Tensor) -> torch.Tensor:
    """ONNX Flatten: the dimensions before `axis` multiplied into the first, the rest into the second (1 if none)."""
    return x.reshape(math.prod(x.shape[: self.axis]), -1)


@dataclass(frozen=True)
class HeldOut:
    """A slice of the held-out part, watched while training for the live curve: shown, never used to choose."""

    metric: str  # a name in QUALITY_METRICS
    data: EvalSet
    original: np.ndarray  # the original's first output on it

    def score(self, net: nn.Module, names: list[str]) -> float:
        with torch.no_grad():
            output = net(*[torch.from_numpy(np.ascontiguousarray(self.data.inputs[name])) for name in names])
        output = output[0] if isinstance(output, tuple | list) else output
        return float(QUALITY_METRICS[self.metric].score(self.original, output.numpy(), self.data))


@dataclass(frozen=True)
class TrainPlan:
    """What to train and how; plain values, so it crosses into a sandbox child."""

    method: str  # "distill" or "finetune"
    seconds: float
    optimizer: str  # "adam" or "sgd"
    lr: float
    seed: int
    masks: dict[str, np.ndarray]  # initializer name -> True where the weight may be non-zero
    grids: dict[str, tuple[int, int]]  # quantized initializer name -> (bits, channel axis)
    classifier: bool  # outputs are logits: distill on softened class probabilities, else on the values
    temperature: float = 4.0
    label_weight: float = 0.5  # finetune: cross-entropy's share; distillation has the rest
    batch: int = 64
    max_steps: int | None = None  # None: as many as fit in `seconds`, timed on a few steps first
    # the steps the learning rate's decay and the pruning steps are spread over (None: `max_steps`): a replay of a
    # run that ran out of time or was stopped trains its steps on the schedule that run had planned
    schedule_steps: int | None = None
    check_every: int | None = None  # steps between checks (None: by the time they take)
    reference: bytes = b""  # correct: the original graph, whose layer outputs the compressed ones are matched to
    schedule: MaskSchedule | None = None  # a stepped schedule: `masks` are chosen during training, from none
    watch: HeldOut | None = None


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]  # initializer name -> trained values (masked, float)
    steps: int
    seconds: float
    best_step: int
    # (step, training loss, validation loss on the tuning slice, held-out quality on the watched slice)
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)  # a stepped channel schedule: the classes removed at the end
    stopped: bool = False  # asked to stop before the budget ran out
    check_every: int = 1  # steps between two checks of the validation loss
    planned: int = 0  # the steps the schedule was spread over (more than `steps` when time ran out or it stopped)


class _Masked(nn.Module):
    """The weight times its mask; a stepped schedule changes the mask in place between pruning steps."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class _OnGrid(nn.Module):
    """Fake quantization with a straight-through gradient."""

    def __init__(self, bits: int, axis: int) -> None:
        super().__init__()
        self.largest, self.axis = 2 ** (bits - 1) - 1, axis

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dims = [dim for dim in range(weight.ndim) if dim != self.axis]
        peak = weight.detach().abs().amax(dim=dims, keepdim=True)
        scale = torch.where(peak > 0, peak / self.largest, torch.ones_like(peak))
        grid = torch.clamp(torch.round(weight / scale), -self.largest, self.largest) * scale
        return weight + (grid - weight).detach()


@dataclass
class _Trainable:
    module: nn.Module
    attribute: str  # "weight" or "bias"
    transposed: bool  # the torch tensor is the initializer transposed (Gemm without transB)
    module_name: str  # onnx2torch's name for its node's module


def trainable_module(float_onnx: bytes) -> tuple[nn.Module, list[str], dict[str, _Trainable]]:
    """onnx2torch's module for the graph, its input names in call order, and every Conv/Gemm weight and bias and
    every MatMul's constant weight it holds, by initializer name."""
    proto = onnx.load_from_string(float_onnx)
    for node in proto.graph.node:  # a trailing '' input means "not given", as no input does; onnx2torch's Clip
        while node.input and not node.input[-1]:  # reads '' as a tensor name (torch's exporter writes Clip(x, min, ''))
            node.input.pop()
    onnx2torch = _onnx2torch()
    try:
        net = onnx2torch.convert(proto)
    except NotImplementedError as error:
        raise UnsupportedModelError(f"cannot train this graph in PyTorch: onnx2torch {error}") from None
    from onnx2torch.onnx_graph import OnnxGraph

    initializers = {init.name: init for init in proto.graph.initializer}
    names = list(OnnxGraph(proto.graph).nodes)  # onnx2torch's module names, in the graph's node order
    constants = _constant_inputs(net)
    trainable = {}
    for name, node in zip(names, proto.graph.node, strict=True):
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in initializers:
            trainable[node.input[1]] = _as_parameter(net, constants[name][1], name)
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            continue
        module = net.get_submodule(name)
        for index, attribute in ((1, "weight"), (2, "bias")):
            tensor = getattr(module, attribute, None)
            if (
                index >= len(node.input)
                or node.input[index] not in initializers
                or not isinstance(tensor, nn.Parameter)
            ):
                continue
            shape = tuple(initializers[node.input[index]].dims)
            transposed = tuple(tensor.shape) != shape
            trainable[node.input[index]] = _Trainable(module, attribute, transposed, name)
    inputs = [value.name for value in proto.graph.input if value.name not in initializers]
    return net, inputs, trainable


def _constant_inputs(net: nn.Module) -> dict[str, dict[int, str]]:
    """Module name -> {argument position: the buffer onnx2torch made of an initializer given there}."""
    found: dict[str, dict[int, str]] = {}
    for node in net.graph.nodes:
        if node.op == "call_module":
            for position, argument in enumerate(node.args):
                if getattr(argument, "op", None) == "get_attr":
                    found.setdefault(node.target, {})[position] = argument.target
    return found


def _as_parameter(net: nn.Module, path: str, module_name: str) -> _Trainable:
    """onnx2torch keeps a MatMul's constant weight as a buffer: made a parameter here, so it trains."""
    owner_path, _, attribute = path.rpartition(".")
    owner = net.get_submodule(owner_path)
    tensor = owner._buffers.pop(attribute)
    owner.register_parameter(attribute, nn.Parameter(tensor.clone()))
    return _Trainable(owner, attribute, False, module_name)


def _constrain(trainable: dict[str, _Trainable], plan: TrainPlan, masks: dict[str, np.ndarray]) -> dict[str, _Masked]:
    """Masks and n-bit grids put on the trainable tensors; the masks' modules by initializer name."""
    masked = {}
    for name, entry in trainable.items():
        mask, grid = masks.get(name), plan.grids.get(name)
        if mask is not None:
            masked[name] = _Masked(torch.from_numpy(mask.T if entry.transposed else mask).to(torch.float32))
            parametrize.register_parametrization(entry.module, entry.attribute, masked[name])
        if grid is not None:
            bits, axis = grid
            axis = 1 - axis if entry.transposed else axis
            parametrize.register_parametrization(entry.module, entry.attribute, _OnGrid(bits, axis))
    return masked


def _raw(entry: _Trainable) -> torch.Tensor:
    """The trained tensor itself, before its mask and grid."""
    if parametrize.is_parametrized(entry.module, entry.attribute):
        return getattr(entry.module.parametrizations, entry.attribute).original
    return getattr(entry.module, entry.attribute)


def _values(entry: _Trainable, masks: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The trained float values in the initializer's layout, masked (before fake quantization: the export
    quantizes them on the same grid)."""
    values = _raw(entry).detach().numpy().copy()
    values = values.T if entry.transposed else values
    return (values * masks[name]).astype(np.float32) if name in masks else values.astype(np.float32)


class _Pruner:
    """Runs a stepped schedule: pruning step k of K falls at k/K of `PRUNING_SPAN` of the budget. Between steps a
    hard schedule keeps its masks on the forward pass (what is pruned stays pruned); a soft one zeroes the pruned
    weights and lets them train, and only its last step puts the masks on."""

    def __init__(self, schedule: MaskSchedule, trainable: dict[str, _Trainable], masked: dict[str, _Masked]) -> None:
        self.schedule, self.trainable, self.masked = schedule, trainable, masked
        self.done, self.masks, self.removed = 0, {name: np.ones(1, bool) for name in masked}, []

    @property
    def finished(self) -> bool:
        return self.done == self.schedule.steps

    def due(self, spent: float) -> bool:
        return not self.finished and spent >= PRUNING_SPAN * (self.done + 1) / self.schedule.steps

    def step(self) -> None:
        self.done += 1
        last = self.finished
        values = {}
        for name in self.masked:
            entry = self.trainable[name]
            raw = _raw(entry).detach().numpy()
            raw = raw.T if entry.transposed else raw
            hard = not self.schedule.soft and self.done > 1
            values[name] = raw * self.masks[name] if hard else raw  # hard: the pruned stay the smallest
        self.masks, self.removed = self.schedule.masks(self.done, values)
        for name, module in self.masked.items():
            mask = self.masks[name]
            tensor = torch.from_numpy(np.ascontiguousarray(mask.T if self.trainable[name].transposed else mask))
            if self.schedule.soft and not last:  # pruned for now: zeroed, still trained
                with torch.no_grad():
                    _raw(self.trainable[name]).mul_(tensor.to(torch.float32))
            else:
                module.mask.copy_(tensor.to(torch.float32))


def _loss(plan: TrainPlan, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    if plan.classifier:
        heat = plan.temperature
        distill = nn.functional.kl_div(
            nn.functional.log_softmax(student / heat, -1), nn.functional.softmax(teacher / heat, -1),
            reduction="batchmean",
        ) * heat**2  # fmt: skip
    else:
        distill = nn.functional.mse_loss(student, teacher) / teacher.var().clamp_min(1e-12)
    if plan.method == "finetune" and labels is not None:
        return plan.label_weight * nn.functional.cross_entropy(student, labels) + (1 - plan.label_weight) * distill
    return distill


def train(
    float_onnx: bytes,
    plan: TrainPlan,
    inputs: dict[str, np.ndarray],
    teacher: np.ndarray,
    labels: np.ndarray | None,
    progress: Callable[[float | tuple[int, float, float, float]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Trains the graph's Conv/Gemm weights and biases to match `teacher` (the original's first output on
    `inputs`, the tuning part) within `plan.seconds`, or until `stop()`; the checkpoint with the lowest loss on a
    validation slice of the tuning part is handed back (with a stepped schedule, the best after its last step).
    `progress` gets the fraction of the budget spent, and each point of the curve as it is measured."""
    started = time.monotonic()
    torch.manual_seed(plan.seed)
    net, names, trainable = trainable_module(float_onnx)
    if not trainable:
        raise UnsupportedModelError("no Conv or Gemm weights to train after converting the graph to PyTorch")
    schedule = plan.schedule
    masks = plan.masks if schedule is None else _unmasked(schedule, trainable)
    missing = sorted(set(plan.masks) - set(trainable))
    if missing:
        raise UnsupportedModelError(f"cannot train {len(missing)} prunable layer(s) in PyTorch, e.g. {missing[0]}")
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    for entry in trainable.values():
        getattr(entry.module, entry.attribute).requires_grad_(True)
    masked = _constrain(trainable, plan, masks)
    pruner = None if schedule is None else _Pruner(schedule, trainable, masked)
    net.eval()
    parameters = [parameter for parameter in net.parameters() if parameter.requires_grad]

    def new_optimizer() -> torch.optim.Optimizer:  # the fused CPU kernels: one pass over every parameter
        if plan.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=plan.lr, fused=True)
        return torch.optim.SGD(parameters, lr=plan.lr, momentum=0.9, fused=True)

    feeds = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in names]
    targets = torch.from_numpy(np.ascontiguousarray(teacher))
    classes = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(plan.seed))
    held = min(VALIDATION_MOST, max(1, round(VALIDATION_FRACTION * len(order)))) if len(order) > 1 else 0
    validation, training = order[:held], order[held:] if held < len(order) else order

    def loss_on(indexes: torch.Tensor) -> torch.Tensor:
        output = net(*[feed[indexes] for feed in feeds])
        output = output[0] if isinstance(output, tuple | list) else output
        return _loss(plan, output, targets[indexes], None if classes is None else classes[indexes])

    def validation_loss() -> float:
        if not held:
            return math.nan
        with torch.no_grad():
            return float(loss_on(validation))

    def out_of_time() -> bool:
        return time.monotonic() - started >= plan.seconds

    def timed_step(optimizer: torch.optim.Optimizer, indexes: torch.Tensor) -> torch.Tensor:
        loss = loss_on(indexes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    def plan_steps() -> tuple[int, int]:
        """How many steps fit in what is left of the budget, and every how many steps to check, timed on a few
        steps whose effect is then undone: training itself is counted in steps, so the recipe that records them
        trains the same again. Checks take at most CHECK_SHARE of the time."""
        saved, trial = copy.deepcopy(net.state_dict()), new_optimizer()
        shuffle = torch.Generator().manual_seed(plan.seed + 2)
        rates: list[float] = []  # seconds per step, chunk by chunk: the first chunks warm up, and are slower
        calibrating = time.monotonic()
        while len(rates) < 2 or abs(rates[-1] - rates[-2]) > STEADY * rates[-1]:
            out_of_share = time.monotonic() - calibrating > CALIBRATION_SHARE * plan.seconds
            if rates and (len(rates) * CHUNK >= CALIBRATION_STEPS or out_of_share):
                break
            begun = time.monotonic()
            for _ in range(CHUNK):
                timed_step(trial, training[torch.randperm(len(training), generator=shuffle)[: plan.batch]])
            rates.append((time.monotonic() - begun) / CHUNK)
        per_step = rates[-1]
        checked = time.monotonic()
        validation_loss()
        if plan.watch is not None:
            plan.watch.score(net, names)
        check = time.monotonic() - checked
        net.load_state_dict(saved)
        left = (plan.seconds - (time.monotonic() - started)) * BUDGET_USED
        every = max(1, math.ceil(check / (CHECK_SHARE * per_step)))
        total = max(1, int(left / (per_step + check / every)))
        every = max(every, total // CURVE_POINTS)
        return max(1, int(left / (per_step + check / every))), every

    def measure(loss: float, watch: bool = True) -> None:
        """A point of the curve; the held-out slice is watched between the first and the last (the page has the
        figures before and after from ONNX Runtime, and the budget is not spent on them)."""
        nonlocal best_loss, best_step, best
        current = validation_loss()
        watched = plan.watch.score(net, names) if plan.watch is not None and watch else math.nan
        curve.append((step, loss, current, watched))
        if progress is not None:
            progress(curve[-1])
        if held and (pruner is None or pruner.finished) and not current >= best_loss:  # NaN: none yet
            best_loss, best_step, best = current, step, copy.deepcopy(net.state_dict())

    step, best_loss, best_step, best, curve = 0, math.nan, 0, None, []
    try:
        measure(math.nan, watch=False)  # the first run of the converted graph
    except (RuntimeError, IndexError, ValueError, TypeError) as error:
        line = next((text for text in str(error).splitlines() if text.strip()), type(error).__name__)
        raise UnsupportedModelError(
            f"cannot train this graph in PyTorch: its conversion does not run ({line})"
        ) from None
    if plan.max_steps:
        total = plan.schedule_steps or plan.max_steps
        every = plan.check_every or max(1, total // CURVE_POINTS)
    else:
        total, every = plan_steps()
    last = plan.max_steps or total
    optimizer, generator, stopped, reported = new_optimizer(), torch.Generator().manual_seed(plan.seed + 1), False, 0.0

    def spent() -> float:
        """The share of the schedule done: the cosine decay and the pruning steps follow steps, not time."""
        return step / total

    shuffled, position = training[torch.randperm(len(training), generator=generator)], 0
    while step < last and not out_of_time():
        if stop is not None and stop():
            stopped = True
            break
        if pruner is not None and pruner.due(spent()):
            pruner.step()
            if pruner.finished:
                measure(math.nan)  # the first checkpoint that has the final masks
        for group in optimizer.param_groups:  # cosine decay over the budget
            group["lr"] = plan.lr * 0.5 * (1 + math.cos(math.pi * min(spent(), 1.0)))
        if position >= len(shuffled):  # a new epoch, newly shuffled
            shuffled, position = training[torch.randperm(len(training), generator=generator)], 0
        loss = timed_step(optimizer, shuffled[position : position + plan.batch])
        position += plan.batch
        step += 1
        now = time.monotonic()
        if step % every == 0:
            measure(loss.item())
        if progress is not None and now - reported >= PROGRESS_EVERY_S:
            progress(min(1.0, max(step / last, (now - started) / plan.seconds)))
            reported = now
    while pruner is not None and not pruner.finished:  # stopped early: the schedule's end is still the result
        pruner.step()
    measure(math.nan if not step else loss.item(), watch=False)
    if held and best is not None:
        net.load_state_dict(best)
    final = masks if pruner is None else pruner.masks
    weights = {name: _values(entry, final, name) for name, entry in trainable.items()}
    removed = [] if pruner is None else pruner.removed
    return TrainResult(
        weights, step, time.monotonic() - started, best_step if held else step, curve, removed, stopped, every, total
    )


def _unmasked(schedule: MaskSchedule, trainable: dict[str, _Trainable]) -> dict[str, np.ndarray]:
    """A stepped schedule's starting masks, all True, on every trainable tensor it prunes."""
    names = set(schedule.zeros) | {name for item in schedule.classes for name, _, _ in item.cells}
    return {
        name: np.ones(tuple(reversed(shape)) if entry.transposed else shape, bool)
        for name, entry in trainable.items()
        if name in names
        for shape in [tuple(_raw(entry).shape)]
    }


CORRECT_SAMPLES = 256  # tuning inputs the per-channel output means are taken on


def _channel_means(net: nn.Module, module: nn.Module, feeds: list[torch.Tensor]) -> torch.Tensor:
    """The mean of each output channel (axis 1) of `module` when `net` runs on `feeds`."""
    seen = []
    hook = module.register_forward_hook(lambda _, __, output: seen.append(output.detach()))
    try:
        with torch.no_grad():
            net(*feeds)
    finally:
        hook.remove()
    output = seen[0]
    return output.mean(dim=[dim for dim in range(output.ndim) if dim != 1])


def correct(
    float_onnx: bytes,
    plan: TrainPlan,
    inputs: dict[str, np.ndarray],
    teacher: np.ndarray,
    labels: np.ndarray | None,
    progress: Callable[[float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Bias correction, without training: layer by layer in graph order, each Conv/Gemm bias is shifted so the
    layer's per-channel output mean on the tuning inputs matches the original's (the folded-graph form of
    re-estimating BatchNorm). A shift is kept only where it brings the model's output on those inputs closer to the
    original's: matching means alone made digits-mlp at 90 % sparsity worse (54.3 % -> 28.7 % held out). A layer
    whose output channels were removed, or without a bias, is left as it is."""
    started = time.monotonic()
    student, names, trainable = trainable_module(float_onnx)
    original, original_names, _ = trainable_module(plan.reference)
    feeds = [torch.from_numpy(np.ascontiguousarray(inputs[name][:CORRECT_SAMPLES])) for name in names]
    original_feeds = [torch.from_numpy(np.ascontiguousarray(inputs[name][:CORRECT_SAMPLES])) for name in original_names]
    modules = dict(original.named_modules())
    student.eval(), original.eval()
    target = torch.from_numpy(np.ascontiguousarray(teacher[:CORRECT_SAMPLES]))

    def distance() -> float:
        with torch.no_grad():
            output = student(*feeds)
        return float(_loss(plan, output[0] if isinstance(output, tuple | list) else output, target, None))

    biases = [(name, entry) for name, entry in trainable.items() if entry.attribute == "bias"]
    corrected, before = {}, distance()
    for done, (name, entry) in enumerate(biases, 1):
        reference = modules.get(entry.module_name)
        if reference is not None:
            wanted = _channel_means(original, reference, original_feeds)
            current = _channel_means(student, entry.module, feeds)
            if wanted.shape == current.shape:
                kept = entry.module.bias.data.clone()
                entry.module.bias.data += wanted - current
                after = distance()
                if after < before:
                    before, corrected[name] = after, entry.module.bias.detach().numpy().astype(np.float32).copy()
                else:
                    entry.module.bias.data = kept
        if progress is not None:
            progress(done / len(biases))
    return TrainResult(corrected, len(corrected), time.monotonic() - started, len(corrected))
