"""Where ONNX Runtime spends its time, node by node: its own profiler (`SessionOptions.enable_profiling`, a Chrome
trace in JSON) around runs interleaved like the latency measurement's, the graph as ONNX Runtime optimised it
(`optimized_model_filepath`: op types after fusions, and which weights each node reads), and each node's time per
run tied to the prunable layer it computes.

Kernel times are medians over the measured runs; the run's own median is timed around `session.run`, so what is
outside the kernels (session overhead, which dominates tiny models) is shown rather than hidden.
"""

from __future__ import annotations

import bisect
import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from core.measure.benchmark import LATENCY_THREADS, interleaved_runs
from core.model import Model
from core.onnx.runtime import OnnxModel, create_session
from core.onnx.sandbox import run_isolated

PROFILE_BUDGET_S = 3.0  # seconds of interleaved profiled runs after warm-up, unless asked otherwise
KERNEL_SUFFIX = "_kernel_time"  # ORT writes fence_before, kernel_time and fence_after events per node and run
QUANTIZE_OPS = ("DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear")
NCHWC_SUFFIX = "_nchwc"  # ONNX Runtime's blocked-layout convolution, named after the output it computes
NCHWC_MARK = " (NCHWc)"  # added to the op type of ONNX Runtime's blocked-layout ops (domain com.microsoft.nchwc)


@dataclass(frozen=True)
class NodeTime:
    name: str  # the node in the graph as ONNX Runtime optimised it
    op_type: str  # after fusions: FusedConv, QLinearConv, MatMulInteger, DynamicQuantizeLinear ...
    ms: float  # median kernel time per run
    layer: str | None = None  # the prunable layer (its node in the original graph) this node computes
    reads_weights: bool = False  # a (Dynamic)Quantize/DequantizeLinear of stored weights, not of activations
    feeds: list[str] = field(default_factory=list)  # op types of the nodes reading its outputs


@dataclass(frozen=True)
class Profile:
    nodes: list[NodeTime]
    median_ms: float  # per run, timed around session.run with the profiler on
    spread_ms: float  # p90 - p10 of those runs
    runs: int
    threads: int
    samples: list[float] = field(default_factory=list)  # each measured run, ms
    flush_denormals: bool = False  # profiled with denormal floats computed as zero (FLUSH_DENORMALS)
    # the same model profiled again with denormals flushed, ms per op type, where its time was suspect (see
    # DENORMAL_SUSPECTS); None where it was not profiled so
    flushed_by_op: dict[str, float] | None = None

    @property
    def kernel_ms(self) -> float:
        return sum(node.ms for node in self.nodes)

    @property
    def outside_ms(self) -> float:
        """Per run, the time no kernel accounts for: session overhead, allocation, threads waking."""
        return max(0.0, self.median_ms - self.kernel_ms)

    def by_op_type(self) -> dict[str, float]:
        times: dict[str, float] = defaultdict(float)
        for node in self.nodes:
            times[node.op_type] += node.ms
        return dict(times)

    def by_layer(self) -> dict[str, list[NodeTime]]:
        nodes: dict[str, list[NodeTime]] = defaultdict(list)
        for node in self.nodes:
            if node.layer is not None:
                nodes[node.layer].append(node)
        return dict(nodes)


def profile_models(
    models: list[OnnxModel],
    feeds: dict[str, np.ndarray],
    names: LayerNames,  # names in the original graph -> layer (`layer_names`)
    *,
    threads: int | None = None,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 200,
    budget_s: float = PROFILE_BUDGET_S,
    flush_denormals: bool = False,
) -> list[Profile]:
    """A profile of each model on the same feeds, runs interleaved and alternating in order as `measure_latency`
    does. `names` ties the optimised graph's nodes to the prunable layers. `flush_denormals` holds only in a
    process where no session was made before (FLUSH_DENORMALS)."""
    threads = threads or LATENCY_THREADS
    prepack = all(isinstance(model, bytes) for model in models)
    with tempfile.TemporaryDirectory(prefix="squeezelab-profile-") as folder:
        sessions, graphs = [], []
        for index, model in enumerate(models):
            # the optimised graph is written for models in memory only: one over 2 GB cannot be written in one
            # file, and its nodes are then not tied to layers
            optimized = Path(folder) / f"optimized-{index}.onnx" if isinstance(model, bytes) else None
            sessions.append(create_session(model, threads, prepack, profile=Path(folder) / f"trace-{index}",
                                           optimized=optimized, flush_denormals=flush_denormals))  # fmt: skip
            graphs.append(_optimized_graph(optimized) if optimized else None)
        walls = interleaved_runs(sessions, feeds, warmup, min_runs, max_runs, budget_s)
        traces = [json.loads(Path(session.end_profiling()).read_text()) for session in sessions]
    return [
        replace(_profile(trace, graph, names, wall, warmup, threads), flush_denormals=flush_denormals)
        for trace, graph, wall in zip(traces, graphs, walls, strict=True)
    ]


def profile_against_original(model: Model, export: OnnxModel, **options) -> tuple[Profile, Profile]:
    """The original's and the export's profiles on the model's latency feed. A user's model runs in a sandbox
    child, as its latency does: a crash ends the child, not the caller; so does a profile with denormals flushed,
    which needs a process of its own. Where the export's time is suspect of denormal floats (DENORMAL_SUSPECTS),
    it is profiled once more with them flushed, in another child: its `flushed_by_op`."""
    names = layer_names(model)
    flushed = bool(options.get("flush_denormals"))
    budget = float(options.get("budget_s", PROFILE_BUDGET_S))
    if model.is_sample and not flushed:
        original, after = profile_models([model.runnable, export], model.latency_feed, names, **options)
    else:
        original, after = run_isolated(_profile_in_child, [model.runnable, export], model.latency_feed, names,
                                       options, source=model.name, what="profiling", timeout_s=budget * 4 + 120)  # fmt: skip
    suspect = sum(ms for op, ms in after.by_op_type().items() if op in DENORMAL_SUSPECTS)
    if not flushed and suspect >= DENORMAL_SHARE * after.kernel_ms > 0:
        check = options | {"flush_denormals": True, "budget_s": budget * DENORMAL_CHECK_SHARE}
        (again,) = run_isolated(_profile_in_child, [export], model.latency_feed, names, check, source=model.name,
                                what="profiling with denormals flushed", timeout_s=budget * 4 + 120)  # fmt: skip
        after = replace(after, flushed_by_op=again.by_op_type())
    return original, after


# Ops whose time can be spent on denormal floats: a masked attention's Softmax takes exp of scores near -3.4e38
# (on minilm 6.8 ms of a 34 ms run here, 0.6 ms with denormals flushed). Where they take at least DENORMAL_SHARE of
# the export's kernel time, the export is profiled again with denormals flushed, for DENORMAL_CHECK_SHARE of the
# budget.
DENORMAL_SUSPECTS = ("Softmax",)
DENORMAL_SHARE, DENORMAL_CHECK_SHARE = 0.1, 0.5

# Ops ONNX Runtime fuses into the convolution or MatMul before them (activation, residual Add): a fused node is
# named after the last one's output, so that output still names the layer
FUSED_AFTER = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "Add", "Sum", "BatchNormalization")


@dataclass(frozen=True)
class LayerNames:
    """Names in the original graph -> the prunable layer's node."""

    weights: dict[str, str]  # its weights and bias
    outputs: dict[str, str]  # its output, and the outputs of the ops fused after it


def layer_names(model: Model) -> LayerNames:
    """The layer's weights and bias, its output, and the outputs of the ops fused after it (a residual Add's goes
    to the nearer layer)."""
    weights, names = {}, {}
    depth: dict[str, int] = {}
    constants = {init.name for init in model.proto.graph.initializer}
    layer_nodes = {layer.node for layer in model.layers}
    for node in model.proto.graph.node:
        if node.name in layer_nodes:
            weights |= {name: node.name for name in node.input if name in constants}
            names |= {name: node.name for name in node.output}
            depth |= {name: 0 for name in node.output}
        elif node.op_type in FUSED_AFTER:
            sources = sorted((depth[name], name) for name in node.input if name in depth)
            if sources:
                nearest = sources[0][1]
                names |= {name: names[nearest] for name in node.output}
                depth |= {name: sources[0][0] + 1 for name in node.output}
    return LayerNames(weights, names)


def _profile_in_child(models, feeds, names: LayerNames, options: dict, progress=None) -> list[Profile]:
    return profile_models(models, feeds, names, **options)


def _optimized_graph(path: Path) -> onnx.GraphProto | None:
    """The graph ONNX Runtime ran, where it could write it (not for models over 2 GB): names, op types, inputs."""
    try:
        return onnx.load(str(path), load_external_data=False).graph
    except (OSError, onnx.checker.ValidationError, ValueError):
        return None


def _profile(trace: list[dict], graph, names: LayerNames, wall: list[float], warmup: int,
             threads: int) -> Profile:  # fmt: skip
    runs = sorted((event["ts"], event["ts"] + event["dur"]) for event in trace if event.get("name") == "model_run")
    starts = [start for start, _ in runs]
    measured = range(warmup, len(runs))
    per_run: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(runs))
    nchwc = {node.name for node in graph.node if node.domain == "com.microsoft.nchwc"} if graph is not None else set()
    op_types: dict[str, str] = {}
    for event in trace:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        run = bisect.bisect_right(starts, event["ts"]) - 1
        if run < 0 or event["ts"] > runs[run][1]:
            continue
        node = name.removesuffix(KERNEL_SUFFIX)
        per_run[node][run] += event["dur"] / 1000
        op_types[node] = event.get("args", {}).get("op_name", "?") + (NCHWC_MARK if node in nchwc else "")
    facts = _node_facts(graph, names)
    nodes = [
        NodeTime(node, op_types[node], float(np.median([times[run] for run in measured])), *facts.get(node, ()))
        for node, times in per_run.items()
    ]
    nodes.sort(key=lambda node: -node.ms)
    p10, median, p90 = np.percentile(wall, [10, 50, 90])
    return Profile(nodes, float(median), float(p90 - p10), len(wall), threads, [round(ms, 6) for ms in wall])


def _node_facts(graph, names: LayerNames) -> dict[str, tuple[str | None, bool, list[str]]]:
    """Per node of the optimised graph: its layer, whether it only converts stored weights, what reads it.

    A node reading a layer's weights (by name, or a name the quantizers derive from it: `W_quantized`,
    `W_scale` ...) computes that layer; a node with no weights whose outputs only that layer's nodes read
    (the activation's DynamicQuantizeLinear, a weight's DequantizeLinear) is counted with it."""
    if graph is None:
        return {}
    constants = {init.name for init in graph.initializer}
    readers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    layers: dict[str, str | None] = {}
    for node in graph.node:
        weights = (name for name in node.input if name in constants)
        layers[node.name] = next((layer for name in weights if (layer := _weight_layer(name, names.weights))), None)
        if layers[node.name] is None and node.name.endswith(NCHWC_SUFFIX):  # re-laid-out weights: named by output
            layers[node.name] = names.outputs.get(node.name.removesuffix(NCHWC_SUFFIX))
    producers = {name: node for node in graph.node for name in node.output}
    for node in graph.node:  # a bias Add after a MatMul: part of its layer (graph order: producers come first)
        computed = [name for name in node.input if name not in constants]
        if layers[node.name] is None and node.op_type == "Add" and len(computed) == 1 and computed[0] in producers:
            layers[node.name] = layers.get(producers[computed[0]].name)
    for node in graph.node:  # converters: counted with the one layer that reads them
        if layers[node.name] is None and node.op_type in QUANTIZE_OPS:
            consumers = {layers.get(reader.name) for output in node.output for reader in readers[output]}
            if len(consumers) == 1 and None not in consumers:
                layers[node.name] = consumers.pop()
    facts = {}
    for node in graph.node:
        reads_weights = node.op_type in QUANTIZE_OPS and bool(node.input) and node.input[0] in constants
        feeds = sorted({reader.op_type for output in node.output for reader in readers[output]})
        facts[node.name] = (layers[node.name], reads_weights, feeds)
    return facts


def _weight_layer(name: str, layer_weights: dict[str, str]) -> str | None:
    """The layer whose weight `name` is, or a name the quantizers derive from: `W_quantized`, `W_scale` ..."""
    if name in layer_weights:
        return layer_weights[name]
    for suffix in ("_quantized", "_scale", "_zero_point", "_DequantizeLinear_Output"):
        if name.endswith(suffix) and (base := name.removesuffix(suffix)) in layer_weights:
            return layer_weights[base]
    return None
