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

from core.errors import UnsupportedModelError

VALIDATION_FRACTION = 0.1  # of the tuning part, held aside to pick the best checkpoint (never the held-out part)
VALIDATE_EVERY_S = 1.0  # seconds of training between two checks of the validation loss


def _onnx2torch():
    """onnx2torch imports torchvision for its NMS and RoiAlign converters only, and PyPI's torchvision does not
    import with the CPU torch here (`operator torchvision::nms does not exist`): onnx2torch is installed without
    it (`--no-deps`), and these stand in for the two while it is imported, refusing a graph that needs them. They
    leave sys.modules after, so nothing else (transformers asks whether torchvision is there) ever sees them."""
    if "onnx2torch" in sys.modules or "torchvision" in sys.modules or importlib.util.find_spec("torchvision"):
        import onnx2torch

        return onnx2torch

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
    return onnx2torch


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
    max_steps: int | None = None
    reference: bytes = b""  # correct: the original graph, whose layer outputs the compressed ones are matched to


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]  # initializer name -> trained values (masked, float)
    steps: int
    seconds: float
    best_step: int
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, training loss, validation loss)


class _Masked(nn.Module):
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


def _constrain(trainable: dict[str, _Trainable], plan: TrainPlan) -> None:
    for name, entry in trainable.items():
        mask, grid = plan.masks.get(name), plan.grids.get(name)
        if mask is not None:
            mask = torch.from_numpy(mask.T if entry.transposed else mask).to(torch.float32)
            parametrize.register_parametrization(entry.module, entry.attribute, _Masked(mask))
        if grid is not None:
            bits, axis = grid
            axis = 1 - axis if entry.transposed else axis
            parametrize.register_parametrization(entry.module, entry.attribute, _OnGrid(bits, axis))


def _values(entry: _Trainable, masks: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The trained float values in the initializer's layout, masked (before fake quantization: the export
    quantizes them on the same grid)."""
    if parametrize.is_parametrized(entry.module, entry.attribute):
        raw = getattr(entry.module.parametrizations, entry.attribute).original
    else:
        raw = getattr(entry.module, entry.attribute)
    values = raw.detach().numpy().copy()
    values = values.T if entry.transposed else values
    return (values * masks[name]).astype(np.float32) if name in masks else values.astype(np.float32)


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
    progress: Callable[[float], None] | None = None,
) -> TrainResult:
    """Trains the graph's Conv/Gemm weights and biases to match `teacher` (the original's first output on
    `inputs`, the tuning part) within `plan.seconds`; the checkpoint with the lowest loss on a validation slice of
    the tuning part is handed back."""
    started = time.monotonic()
    torch.manual_seed(plan.seed)
    net, names, trainable = trainable_module(float_onnx)
    if not trainable:
        raise UnsupportedModelError("no Conv or Gemm weights to train after converting the graph to PyTorch")
    missing = sorted(set(plan.masks) - set(trainable))
    if missing:
        raise UnsupportedModelError(f"cannot train {len(missing)} prunable layer(s) in PyTorch, e.g. {missing[0]}")
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    for entry in trainable.values():
        getattr(entry.module, entry.attribute).requires_grad_(True)
    _constrain(trainable, plan)
    net.eval()
    parameters = [parameter for parameter in net.parameters() if parameter.requires_grad]
    optimizer = (
        torch.optim.Adam(parameters, lr=plan.lr)
        if plan.optimizer == "adam"
        else torch.optim.SGD(parameters, lr=plan.lr, momentum=0.9)
    )
    feeds = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in names]
    targets = torch.from_numpy(np.ascontiguousarray(teacher))
    classes = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(plan.seed))
    held = max(1, round(VALIDATION_FRACTION * len(order))) if len(order) > 1 else 0
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

    best_loss, best_step, best = validation_loss(), 0, copy.deepcopy(net.state_dict())
    curve = [(0, math.nan, best_loss)]
    step, checked, generator = 0, time.monotonic(), torch.Generator().manual_seed(plan.seed + 1)
    while True:
        spent = (time.monotonic() - started) / plan.seconds
        if spent >= 1 or (plan.max_steps is not None and step >= plan.max_steps):
            break
        done = max(spent, step / plan.max_steps if plan.max_steps else 0.0)
        for group in optimizer.param_groups:  # cosine decay over the budget
            group["lr"] = plan.lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        shuffled = training[torch.randperm(len(training), generator=generator)]
        for start in range(0, len(shuffled), plan.batch):
            loss = loss_on(shuffled[start : start + plan.batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if time.monotonic() - started >= plan.seconds or (plan.max_steps and step >= plan.max_steps):
                break
        if time.monotonic() - checked >= VALIDATE_EVERY_S or time.monotonic() - started >= plan.seconds:
            checked = time.monotonic()
            current = validation_loss()
            curve.append((step, loss.item(), current))
            if held and current < best_loss:
                best_loss, best_step, best = current, step, copy.deepcopy(net.state_dict())
        if progress is not None:
            progress(min(1.0, (time.monotonic() - started) / plan.seconds))
    current = validation_loss()
    if held and current < best_loss:
        best_step, best = step, copy.deepcopy(net.state_dict())
    if held:
        net.load_state_dict(best)
    weights = {name: _values(entry, plan.masks, name) for name, entry in trainable.items()}
    return TrainResult(weights, step, time.monotonic() - started, best_step if held else step, curve)


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
