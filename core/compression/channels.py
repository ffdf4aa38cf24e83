"""Channel dependencies of an ONNX graph: which output channels can be removed, and what shrinks with them.

Every channel of every tracked tensor gets an integer id. A Conv, Gemm or MatMul with a constant weight creates
fresh ids for its output channels; element-wise ops, normalisations and pooling pass ids through; a residual
`Add`/`Sum` unites the ids of its inputs position by position (both sides must lose the same channels);
`Concat` along the channel axis concatenates them; `Flatten`/`Reshape` into a `Gemm` repeats each channel's id
over its spatial positions. A union-find over ids gives the *classes*: a class is removed everywhere at once.

A class is fixed (kept) when any of its channels reaches a graph output, an op this module does not
understand, or a weight shared with another node; the reason is remembered and reported.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from core.model import Model, per_model

# Ops that apply per element and keep every channel where it was.
PASS_THROUGH = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Erf", "Gelu", "Mish", "Identity", "Dropout", "Abs", "Neg", "Sqrt", "Exp", "Log", "Reciprocal",
    "Floor", "Ceil", "Round", "Sign", "Cast", "ThresholdedRelu", "Swish",
}  # fmt: skip
# Ops that work within each channel (spatially): the channel axis keeps its size and order.
PER_CHANNEL = {
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "Pad", "Resize",
    "Upsample",
}  # fmt: skip
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Pow", "PRelu"}
# Ops whose output is the input with its dimensions regrouped: followed when the channels stay contiguous.
REGROUPING = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}
NORMALISATION_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def fresh(self, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count)

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def roots(self) -> np.ndarray:
        return np.array([self.find(item) for item in range(len(self.parent))], dtype=np.int64)


@dataclass(frozen=True)
class Channels:
    """The channel ids of one tensor along its channel axis."""

    ids: np.ndarray
    axis: int


@dataclass(frozen=True)
class Slice:
    """Take the kept channels of `tensor` out of initializer `initializer` along `axis`."""

    initializer: str
    axis: int
    tensor: str


@dataclass(frozen=True)
class Producer:
    """Output channel `index` of weight `weight` (its filters run along `axis`) creates channel id `channel`."""

    weight: str
    axis: int
    index: int
    output: str  # the node output whose channel it is: where activations are read


@dataclass
class ChannelGraph:
    """The result of the analysis: channel ids per tensor, what to slice, and what is fixed and why."""

    tensors: dict[str, Channels] = field(default_factory=dict)
    slices: list[Slice] = field(default_factory=list)
    producers: dict[int, list[Producer]] = field(default_factory=lambda: defaultdict(list))
    fixed: dict[int, str] = field(default_factory=dict)  # channel id -> why it must stay
    depthwise: dict[int, str] = field(default_factory=dict)  # node position -> tensor whose kept count is its group
    reshapes: dict[str, int] = field(default_factory=dict)  # shape initializer -> entry to set to -1
    roots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _attribute(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


class _Analysis:
    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
        self.graph = model.graph
        self.shapes = shapes
        self.constants = {init.name: init for init in self.graph.initializer}
        self.uses: dict[str, int] = defaultdict(int)
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] += 1
        self.ids = _UnionFind()
        self.result = ChannelGraph()

    # -- helpers -----------------------------------------------------------------------------------------------
    def value(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.constants[name])

    def private_constant(self, name: str) -> bool:
        """A constant that only this node reads, so slicing it changes nothing else."""
        return name in self.constants and self.uses[name] == 1

    def fix(self, tensor: str, reason: str) -> None:
        channels = self.result.tensors.get(tensor)
        if channels is not None:
            for channel in channels.ids:
                self.result.fixed.setdefault(int(channel), reason)

    def fix_inputs(self, node: onnx.NodeProto, reason: str) -> None:
        for name in node.input:
            self.fix(name, reason)

    def track(self, tensor: str, ids: np.ndarray, axis: int) -> None:
        self.result.tensors[tensor] = Channels(ids, axis)

    def rank(self, tensor: str) -> int | None:
        shape = self.shapes.get(tensor)
        return None if shape is None else len(shape)

    # -- the walk ----------------------------------------------------------------------------------------------
    def run(self) -> ChannelGraph:
        for position, node in enumerate(self.graph.node):
            handler = getattr(self, f"_op_{node.op_type}", None)
            if node.domain not in ("", "ai.onnx"):
                handler = None
            if handler is None:
                if node.op_type in PASS_THROUGH:
                    handler = self._pass_through
                elif node.op_type in PER_CHANNEL:
                    handler = self._per_channel
                elif node.op_type in ELEMENTWISE:
                    handler = self._elementwise
                elif node.op_type in REGROUPING:
                    handler = self._regroup
            name = node.name or f"{node.op_type}_{position}"
            if handler is None:
                self.fix_inputs(node, f"reaches {node.op_type} '{name}', which this tool cannot prune through")
                continue
            handler(node, name, position)
        for output in self.graph.output:
            self.fix(output.name, f"is part of the graph output '{output.name}'")
        self.result.roots = self.ids.roots()
        return self.result

    def _pass_through(self, node: onnx.NodeProto, name: str, position: int) -> None:
        source = self.result.tensors.get(node.input[0]) if node.input else None
        for extra in node.input[1:]:  # Clip's bounds, Dropout's ratio: scalars
            if extra and extra not in self.constants:
                self.fix(node.input[0], f"{node.op_type} '{name}' takes a computed second input")
                return
        if source is not None and node.output:
            self.track(node.output[0], source.ids, source.axis)

    def _per_channel(self, node: onnx.NodeProto, name: str, position: int) -> None:
        source = self.result.tensors.get(node.input[0])
        if source is None:
            return
        out_shape = self.shapes.get(node.output[0])
        if out_shape is None or out_shape[source.axis] != len(source.ids):
            self.fix(node.input[0], f"{node.op_type} '{name}' changes the channel count")
            return
        self.track(node.output[0], source.ids, source.axis)

    def _op_Conv(self, node: onnx.NodeProto, name: str, position: int) -> None:  # noqa: N802 - op names
        x, weight = node.input[0], node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if not self.private_constant(weight) or (bias is not None and not self.private_constant(bias)):
            self.fix(x, f"Conv '{name}' has a computed or shared weight")
            return
        out_channels, in_per_group = self.constants[weight].dims[0], self.constants[weight].dims[1]
        group = _attribute(node, "group", 1)
        source = self.result.tensors.get(x)
        if group == 1:
            ids = self.ids.fresh(out_channels)
            if source is not None:
                self.result.slices.append(Slice(weight, 1, x))
        elif in_per_group == 1 and source is not None and len(source.ids) == group:
            # depthwise: output channel j reads input channel j // multiplier only, so they go together
            ids = np.repeat(source.ids, out_channels // group)
            self.result.depthwise[position] = x
        else:
            ids = self.ids.fresh(out_channels)
            reason = f"grouped convolution '{name}' (group={group})"
            self.fix(x, reason)
            for channel in ids:
                self.result.fixed[int(channel)] = reason
        self._register_outputs(node, weight, 0, ids, bias)

    def _op_ConvTranspose(self, node: onnx.NodeProto, name: str, position: int) -> None:  # noqa: N802
        x, weight = node.input[0], node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        shared = not self.private_constant(weight) or (bias is not None and not self.private_constant(bias))
        if shared or _attribute(node, "group", 1) != 1:
            self.fix(x, f"ConvTranspose '{name}' is grouped or has a computed or shared weight")
            return
        if x in self.result.tensors:
            self.result.slices.append(Slice(weight, 0, x))
        self._register_outputs(node, weight, 1, self.ids.fresh(self.constants[weight].dims[1]), bias)

    def _register_outputs(self, node, weight: str, axis: int, ids: np.ndarray, bias: str | None) -> None:
        output = node.output[0]
        self.result.slices.append(Slice(weight, axis, output))
        if bias is not None:
            self.result.slices.append(Slice(bias, 0, output))
        for index, channel in enumerate(ids):
            self.result.producers[int(channel)].append(Producer(weight, axis, index, output))
        self.track(output, ids, 1)

    def _op_Gemm(self, node: onnx.NodeProto, name: str, position: int) -> None:  # noqa: N802
        a, b = node.input[0], node.input[1]
        c = node.input[2] if len(node.input) > 2 and node.input[2] else None
        source = self.result.tensors.get(a)
        trans_b = _attribute(node, "transB", 0)
        if _attribute(node, "transA", 0) or not self.private_constant(b) or (source is not None and source.axis != 1):
            self.fix(a, f"Gemm '{name}' has a transposed input or a computed or shared weight")
            return
        out_axis = 0 if trans_b else 1
        outputs = self.constants[b].dims[out_axis]
        if c is not None:
            c_shape = tuple(self.constants[c].dims) if c in self.constants else None
            if c_shape is None or (c_shape and c_shape[-1] == outputs and not self.private_constant(c)):
                self.fix(a, f"Gemm '{name}' has a computed or shared bias")
                return
            if c_shape and c_shape[-1] == outputs and outputs > 1:
                self.result.slices.append(Slice(c, len(c_shape) - 1, node.output[0]))
        if source is not None:
            self.result.slices.append(Slice(b, 1 - out_axis, a))
        self._register_outputs(node, b, out_axis, self.ids.fresh(outputs), None)

    def _op_MatMul(self, node: onnx.NodeProto, name: str, position: int) -> None:  # noqa: N802
        a, b = node.input[0], node.input[1]
        source = self.result.tensors.get(a)
        rank = self.rank(a)
        if not self.private_constant(b) or len(self.constants[b].dims) != 2:
            self.fix(a, f"MatMul '{name}' has a computed, shared or batched weight")
            self.fix(b, f"MatMul '{name}' has a computed, shared or batched weight")
            return
        if source is not None:
            if rank is None or source.axis != rank - 1:
                self.fix(a, f"MatMul '{name}' contracts a dimension other than the channels")
                return
            self.result.slices.append(Slice(b, 0, a))
        output = node.output[0]
        ids = self.ids.fresh(self.constants[b].dims[1])
        self.result.slices.append(Slice(b, 1, output))
        for index, channel in enumerate(ids):
            self.result.producers[int(channel)].append(Producer(b, 1, index, output))
        out_rank = self.rank(output)
        if out_rank is None:
            for channel in ids:
                self.result.fixed[int(channel)] = f"the output shape of MatMul '{name}' is unknown"
            return
        self.track(output, ids, out_rank - 1)

    def _normalisation(self, node: onnx.NodeProto, name: str, position: int) -> None:
        source = self.result.tensors.get(node.input[0])
        if source is None:
            return
        params = [node.input[index] for index in NORMALISATION_PARAMS[node.op_type]]
        if source.axis != 1 or not all(self.private_constant(param) for param in params):
            self.fix(node.input[0], f"{node.op_type} '{name}' has computed or shared parameters")
            return
        self.result.slices.extend(Slice(param, 0, node.input[0]) for param in params)
        self.track(node.output[0], source.ids, source.axis)

    _op_BatchNormalization = _normalisation  # noqa: N815
    _op_InstanceNormalization = _normalisation  # noqa: N815

    def _elementwise(self, node: onnx.NodeProto, name: str, position: int) -> None:
        output = node.output[0]
        out_rank = self.rank(output)
        tracked = [(n, self.result.tensors[n]) for n in node.input if n in self.result.tensors]
        if not tracked:
            return
        if out_rank is None:
            self.fix_inputs(node, f"the output shape of {node.op_type} '{name}' is unknown")
            return
        axes = {out_rank - self.rank(n) + channels.axis for n, channels in tracked}
        counts = {len(channels.ids) for _, channels in tracked}
        if len(axes) != 1 or len(counts) != 1:
            self.fix_inputs(node, f"{node.op_type} '{name}' combines channels that do not line up")
            return
        axis, count = axes.pop(), counts.pop()
        for other in node.input:
            if other in self.result.tensors or not other:
                continue
            shape = self.shapes.get(other)
            if shape is None:
                self.fix_inputs(node, f"{node.op_type} '{name}' mixes in a tensor of unknown shape")
                return
            offset = axis - (out_rank - len(shape))
            if offset < 0 or shape[offset] == 1:
                continue  # broadcast along the channels: the same value for every channel
            if shape[offset] == count and self.private_constant(other):
                self.result.slices.append(Slice(other, offset, output))
                continue
            self.fix_inputs(
                node,
                f"{node.op_type} '{name}' mixes in '{other}', a per-channel tensor that is not a constant of its own",
            )
            return
        first = tracked[0][1].ids
        for _, channels in tracked[1:]:
            for a, b in zip(first, channels.ids, strict=True):
                self.ids.union(int(a), int(b))
        self.track(output, first, axis)

    def _op_Concat(self, node: onnx.NodeProto, name: str, position: int) -> None:  # noqa: N802
        output = node.output[0]
        out_rank = self.rank(output)
        axis = _attribute(node, "axis", 1)
        if out_rank is None:
            self.fix_inputs(node, f"the output shape of Concat '{name}' is unknown")
            return
        axis %= out_rank
        pieces = []
        for tensor in node.input:
            channels = self.result.tensors.get(tensor)
            if channels is not None and channels.axis != axis:
                self.fix_inputs(node, f"Concat '{name}' joins along an axis other than the channels")
                return
            if channels is None:
                # an input whose channels are not tracked keeps all of them: fresh ids, fixed
                ids = self.ids.fresh(self.shapes[tensor][axis])
                for channel in ids:
                    self.result.fixed[int(channel)] = f"enters Concat '{name}' beside untracked channels"
                pieces.append(ids)
            else:
                pieces.append(channels.ids)
        if any(tensor in self.result.tensors for tensor in node.input):
            self.track(output, np.concatenate(pieces), axis)

    def _regroup(self, node: onnx.NodeProto, name: str, position: int) -> None:
        x, output = node.input[0], node.output[0]
        source = self.result.tensors.get(x)
        if source is None:
            return
        in_shape, out_shape = self.shapes.get(x), self.shapes.get(output)
        reason = f"{node.op_type} '{name}' splits or mixes the channels"
        if in_shape is None or out_shape is None or len(source.ids) < 2:
            self.fix(x, reason)
            return
        count = len(source.ids)
        out_axis = _regrouped_axis(in_shape, out_shape, source.axis)
        if out_axis is None:
            self.fix(x, reason)
            return
        repeat = out_shape[out_axis] // count
        if node.op_type == "Reshape" and not self._allow_reshape(node, out_axis):
            self.fix(x, f"Reshape '{name}' has a computed or shared target shape")
            return
        self.track(output, np.repeat(source.ids, repeat), out_axis)

    def _allow_reshape(self, node: onnx.NodeProto, out_axis: int) -> bool:
        """A Reshape survives pruning if its target shape can say -1 where the channels are."""
        target = node.input[1]
        if not self.private_constant(target):
            return False
        shape = self.value(target)
        if shape[out_axis] == -1:
            return True
        if -1 in shape or (shape[out_axis] == 0):
            return False
        self.result.reshapes[target] = out_axis
        return True


def _regrouped_axis(in_shape: tuple[int, ...], out_shape: tuple[int, ...], axis: int) -> int | None:
    """Where the channel axis lands when `in_shape` is reshaped to `out_shape`, if the channels stay whole.

    Allowed: size-1 dimensions come and go (Squeeze, Unsqueeze, (N,C,1,1) -> (N,C)), and the channel axis may
    absorb the dimensions after it (Flatten of N,C,H,W into N,C*H*W). Anything that splits the channel
    dimension or merges it with what comes before is refused.
    """
    before = int(np.prod(in_shape[:axis]))
    # the output axis where the elements before the channel axis end
    running, out_axis = 1, 0
    while out_axis < len(out_shape) and running < before:
        running *= out_shape[out_axis]
        out_axis += 1
    if running != before:
        return None
    while out_axis < len(out_shape) and out_shape[out_axis] == 1 and in_shape[axis] != 1:
        out_axis += 1
    if out_axis >= len(out_shape):
        return None
    channels, size = in_shape[axis], out_shape[out_axis]
    after = int(np.prod(in_shape[axis + 1 :]))
    if size == channels or (size == channels * after and int(np.prod(out_shape[out_axis + 1 :])) == 1):
        return out_axis
    return None


def analyse(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> ChannelGraph:
    return _Analysis(model, shapes).run()


@per_model
def channel_graph(model: Model) -> ChannelGraph:
    """Which output channels of `model` can be removed together, and what shrinks with them (worked out once)."""
    return analyse(model.proto, model.tensor_shapes)
