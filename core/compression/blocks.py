"""Whole residual blocks: find them in an ONNX graph, measure what dropping each one costs, drop the cheapest.

A block is an `Add`/`Sum` of two paths from the same tensor: a *branch* (a chain of nodes with prunable weights)
and a *skip* (the tensor itself, or a shorter chain such as a strided 1x1 conv). Dropping the block replaces the
sum by the skip path, which has the sum's shape by construction, so the rest of the graph is unchanged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from core.data.quality import agreement, cosines, top1
from core.errors import InvalidSettingError
from core.model import Model
from core.onnx.graph import PRUNABLE_OPS, node_name
from core.onnx.tensors import intermediate_values

CALIBRATION_SAMPLES = 32  # inputs read for the activation criterion
COST_SAMPLES = 256  # tuning inputs a block's cost is measured on


@dataclass(frozen=True)
class Block:
    name: str  # the Add node's name
    add: int  # position of the Add node
    branch: tuple[int, ...]  # positions of the nodes dropped with it
    branch_output: str  # the branch's tensor entering the Add
    skip: str  # the tensor that replaces the Add's output
    weights: tuple[str, ...]  # prunable weights inside the branch, last (nearest the Add) first


@dataclass(frozen=True)
class BlockCost:
    """What dropping one block alone does, measured on (up to COST_SAMPLES of) the tuning part."""

    name: str
    layers: list[str]  # nodes with prunable weights inside the branch
    macs: int
    accuracy: float | None  # accuracy without the block (None: no labels)
    top1_agreement: float | None
    cosine_mean: float
    score: float  # the criterion's importance: the lowest are dropped first
    dropped: bool = False


def find_blocks(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> list[Block]:
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(index)
    outputs = {value.name for value in graph.output}

    def activation_inputs(node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if name and name not in constants]

    def chain(start: str, stop: set[str]) -> tuple[list[int], str] | None:
        """Nodes from `start` back to the first tensor in `stop`, if the path is a simple chain."""
        nodes, tensor = [], start
        while tensor not in stop:
            index = producer.get(tensor)
            if index is None:
                return None
            inputs = activation_inputs(graph.node[index])
            if len(inputs) != 1:
                return None
            nodes.append(index)
            tensor = inputs[0]
        return nodes, tensor

    def ancestors(tensor: str, limit: int = 8) -> set[str]:
        seen, frontier = {tensor}, [tensor]
        for _ in range(limit):
            frontier = [
                name
                for current in frontier
                if current in producer
                for name in activation_inputs(graph.node[producer[current]])
                if name not in seen
            ]
            seen.update(frontier)
        return seen

    blocks = []
    for index, node in enumerate(graph.node):
        inputs = activation_inputs(node)
        if node.op_type not in ("Add", "Sum") or len(node.input) != 2 or len(inputs) != 2:
            continue
        if node.output[0] in outputs or shapes.get(inputs[0]) != shapes.get(inputs[1]):
            continue
        candidates = []
        for branch_out, skip in (inputs, inputs[::-1]):
            found = chain(branch_out, ancestors(skip))
            if found is None:
                continue
            nodes, _fork = found
            inside = {out for i in nodes for out in graph.node[i].output}
            private = all(set(consumers[name]) <= set(nodes) | {index} for name in inside)
            weights = [
                graph.node[i].input[1]
                for i in nodes  # nearest the Add first
                if graph.node[i].op_type in PRUNABLE_OPS and graph.node[i].input[1] in constants
            ]
            if private and weights and not inside & outputs:
                candidates.append((len(nodes), nodes, branch_out, skip, weights))
        if candidates:
            _, nodes, branch_out, skip, weights = max(candidates, key=lambda item: item[0])
            name = node_name(node, index)
            blocks.append(Block(name, index, tuple(sorted(nodes)), branch_out, skip, tuple(weights)))
    return blocks


def drop_blocks(model: onnx.ModelProto, blocks: list[Block]) -> onnx.ModelProto:
    """A new graph without the blocks' branches: each sum's consumers read the skip path instead."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if not blocks:
        return result
    graph = result.graph
    removed = {index for block in blocks for index in (*block.branch, block.add)}
    rename = {graph.node[block.add].output[0]: block.skip for block in blocks}

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    kept = []
    for index, node in enumerate(graph.node):
        if index in removed:
            continue
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for position, name in enumerate(new.input):
            new.input[position] = resolve(name)
        kept.append(new)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    return result


def _weight_score(power: int) -> Callable:
    def score(blocks, arrays, branch_ratio, rng) -> np.ndarray:
        values = []
        for block in blocks:
            last = np.abs(arrays[block.weights[0]].astype(np.float64))
            values.append(last.mean() if power == 1 else np.sqrt((last**2).mean()))
        return np.asarray(values)

    return score


# criterion -> (blocks, initializer arrays, branch/skip magnitude ratio, rng) -> importance per block
BLOCK_SCORES: dict[str, Callable] = {
    "l1": _weight_score(1),
    "l2": _weight_score(2),
    "activation": lambda blocks, arrays, branch_ratio, rng: branch_ratio(),
    "random": lambda blocks, arrays, branch_ratio, rng: rng.random(len(blocks)),
}


def branch_ratios(model: onnx.ModelProto, blocks: list[Block], inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Mean |branch output| / mean |skip| per block on calibration inputs: how much each block changes its input."""
    names = sorted({block.branch_output for block in blocks} | {block.skip for block in blocks})
    values = intermediate_values(model, inputs, [name for name in names if name not in inputs]) | inputs
    ratios = []
    for block in blocks:
        skip = float(np.abs(values[block.skip]).mean())
        ratios.append(float(np.abs(values[block.branch_output]).mean()) / skip if skip > 0 else np.inf)
    return np.asarray(ratios)


def initializer_arrays(model: onnx.ModelProto, names: set[str]) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.name in names}


@dataclass(frozen=True, eq=False)
class BlockIndex:
    """The droppable blocks of one model, what dropping each costs alone, and their importance by one criterion."""

    blocks: tuple[Block, ...]
    costs: tuple[BlockCost, ...]

    @classmethod
    def prepare(cls, model: Model, criterion: str, seed: int) -> BlockIndex:
        blocks = find_blocks(model.proto, model.tensor_shapes)
        arrays = initializer_arrays(model.proto, {name for block in blocks for name in block.weights})
        feeds = model.tuning_part(CALIBRATION_SAMPLES)[0].inputs  # never the held-out inputs results are scored on
        scores = BLOCK_SCORES[criterion](
            blocks, arrays, lambda: branch_ratios(model.proto, blocks, feeds), np.random.default_rng(seed)
        )
        by_weight = {layer.name: layer for layer in model.layers}
        # what dropping a block costs is measured on the tuning part too: a user picks blocks by it
        part, _ = model.tuning_part(COST_SAMPLES)
        reference = model.outputs_of(model.runnable, inputs=part.inputs)[0]
        classes = reference.ndim == 2 and reference.shape[1] > 1
        costs = []
        for block, score in zip(blocks, scores, strict=True):
            outputs = model.outputs_of(drop_blocks(model.proto, [block]).SerializeToString(), inputs=part.inputs)[0]
            costs.append(
                BlockCost(
                    name=block.name,
                    layers=[by_weight[name].node for name in block.weights if name in by_weight],
                    macs=sum(model.macs.get(name, 0) for name in block.weights),
                    accuracy=None if part.labels is None else top1(outputs, part.labels),
                    top1_agreement=agreement(reference, outputs) if classes else None,
                    cosine_mean=float(cosines(reference, outputs).mean()),
                    score=float(score),
                )
            )
        return cls(tuple(blocks), tuple(costs))

    def chosen(self, amount: float, names: tuple[str, ...]) -> list[Block]:
        """The blocks to drop: those named, or else the lowest-importance `amount` of them."""
        if names:
            known = {block.name for block in self.blocks}
            unknown = sorted(set(names) - known)
            if unknown:
                raise InvalidSettingError(
                    f"no droppable block named {', '.join(unknown)}; blocks: {', '.join(sorted(known)) or 'none'}"
                )
            return [block for block in self.blocks if block.name in names]
        # the nearest count, a half rounded down: 50 % of 3 blocks drops 1 (33 %), not 2 (67 %)
        count = max(0, math.ceil(amount * len(self.blocks) - 0.5 - 1e-9))
        order = np.argsort([cost.score for cost in self.costs], kind="stable")[:count]
        return [self.blocks[index] for index in sorted(order)]
