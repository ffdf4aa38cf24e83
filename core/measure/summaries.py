"""Measurements of a compressed model against its original: per-layer stats, histograms, size, fidelity, accuracy."""

from __future__ import annotations

import itertools
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx

from core.compression.activations import ACTIVATION_MODES
from core.compression.export import export_model, export_size
from core.compression.pipeline import Compressed
from core.compression.quantization import code_counts, levels
from core.data.quality import measure, metric_of, sqnr_db
from core.measure.benchmark import cpu_description, int8_sums_can_saturate
from core.measure.report import (
    CodeCounts,
    Histogram,
    Latency,
    LayerSqnr,
    LayerStats,
    ModelInfo,
    QuantizationInfo,
    Report,
    SizeStats,
    WeightSummary,
)
from core.measure.verdict import speed_verdict
from core.model import Model, per_model
from core.onnx.runtime import OnnxModel, default_threads
from core.onnx.tensors import intermediate_values

SATURATION_NOTE = (
    "this CPU has no VNNI: ONNX Runtime's int8 kernels here add pairs of uint8 x int8 products in 16 bits, which can "
    "saturate, so accuracy and output SQNR measured here can be lower than on a CPU with VNNI"
)
HISTOGRAM_BINS = 64
SQNR_SAMPLES = 16  # eval inputs run through both models to compare layer outputs
GZIP_LEVEL = 1  # level 1 ranks sizes the same as level 9 here and is several times faster on 50-100 MB models
SIZE_CHUNK = 16 * 1024**2
GZIP_UP_TO = 1024**3  # zlib level 1 ran at ~40 MB/s on 2 GB of float32 weights here: 50 s for the original alone


@per_model
def original_histograms(model: Model) -> dict[str, Histogram]:
    """Bin edges fixed per layer from the original weights (symmetric around zero), with the original counts."""
    histograms = {}
    largest = max(float(np.max(np.abs(values))) for values in model.weights.values()) or 1.0
    all_edges = np.linspace(-largest, largest, HISTOGRAM_BINS + 1)
    all_counts = np.zeros(HISTOGRAM_BINS, np.int64)
    for layer in model.layers:
        values = model.weights[layer.name]
        edges = np.linspace(-1, 1, HISTOGRAM_BINS + 1) * (float(np.max(np.abs(values))) or 1.0)
        counts, _ = np.histogram(values, edges)
        histograms[layer.name] = Histogram(edges.tolist(), counts.tolist(), counts.tolist())
        all_counts += np.histogram(values, all_edges)[0]
    histograms["all"] = Histogram(all_edges.tolist(), all_counts.tolist(), all_counts.tolist())
    return histograms


SORT_BLOCK = 1 << 22  # values sorted at a time: a layer's facts need no more than this copied at once


def _sorted_counts(values: np.ndarray, edges: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    """A layer's non-zero count and its histogram counts on each of `edges` (np.histogram's bins: half-open, the
    last closed), from one sort of its values, a block at a time: np.histogram would sort once per set of edges."""
    flat = values.reshape(-1)
    nonzero, counts = 0, [np.zeros(len(bins) - 1, np.int64) for bins in edges]
    for start in range(0, flat.size, SORT_BLOCK):
        block = np.sort(flat[start : start + SORT_BLOCK])
        nonzero += block.size - int(np.searchsorted(block, 0.0, "right") - np.searchsorted(block, 0.0, "left"))
        for total, bins in zip(counts, edges, strict=True):
            positions = np.append(np.searchsorted(block, bins[:-1], "left"), np.searchsorted(block, bins[-1], "right"))
            total += np.diff(positions)
    return nonzero, counts


def weight_facts(compressed: Compressed) -> dict[str, tuple[int, list[int], list[int]]]:
    """Per compressed layer: its non-zero count, and its histogram counts on its own bin edges and on the edges of
    all layers. Layers are sorted in parallel (numpy's sort releases the GIL): 0.11 s -> 0.05 s a slider move on
    resnet18 with 2 cores."""
    before = original_histograms(compressed.model)
    all_edges = np.asarray(before["all"].edges)

    def facts(name: str) -> tuple[int, list[int], list[int]]:
        nonzero, (own, overall) = _sorted_counts(compressed.weights[name], [np.asarray(before[name].edges), all_edges])
        return nonzero, own.tolist(), overall

    with ThreadPoolExecutor(max_workers=default_threads()) as pool:
        return dict(zip(compressed.weights, pool.map(facts, compressed.weights), strict=True))


def histograms(compressed: Compressed, facts: dict[str, tuple[int, list[int], list[int]]]) -> dict[str, Histogram]:
    """Original and compressed counts on the original's bin edges, per layer and over all layers."""
    before = original_histograms(compressed.model)
    result = {name: Histogram(before[name].edges, before[name].original, own) for name, (_, own, _) in facts.items()}
    overall = sum((counts for _, _, counts in facts.values()), np.zeros(HISTOGRAM_BINS, np.int64))
    result["all"] = Histogram(before["all"].edges, before["all"].original, overall.tolist())
    return result


def layer_stats(compressed: Compressed, facts: dict[str, tuple[int, list[int], list[int]]]) -> list[LayerStats]:
    """Every layer of the original model; a layer removed with its block has no weights left."""
    model = compressed.model
    stats = []
    for layer in model.layers:
        quantized = compressed.quantized.get(layer.name)
        bits = quantized.bits if quantized is not None else 32
        values = compressed.weights.get(layer.name)
        nonzero = 0 if values is None else facts[layer.name][0]
        zeros = layer.params - nonzero
        stats.append(
            LayerStats(
                name=layer.name,
                node=layer.node,
                op_type=layer.op_type,
                shape=list(layer.shape),
                params=layer.params,
                zeros=zeros,
                sparsity=zeros / layer.params,
                bits=bits,
                macs=model.macs[layer.name],
                collapsed=values is not None and nonzero == 0,
                shape_after=[] if values is None else list(values.shape),
                channels=layer.out_channels,
                channels_kept=0 if values is None else values.shape[layer.channel_axis],
                macs_after=compressed.macs.get(layer.name, 0),
                left_whole=compressed.left_whole.get(layer.name),
                original_zeros=model.zeros[layer.name],
            )
        )
    return stats


def totals(layers: list[LayerStats]) -> dict[str, int | float]:
    params = sum(layer.params for layer in layers)
    zeros = sum(layer.zeros for layer in layers)
    return {
        "params": params,
        "zeros": zeros,
        "nonzero": params - zeros,
        "sparsity": zeros / params,
        "macs": sum(layer.macs for layer in layers),
        "macs_after": sum(layer.macs_after for layer in layers),
    }


@per_model
def original_size(model: Model) -> SizeStats:
    """Raw and gzip size of the original ONNX bytes (gzip takes ~0.7 s on resnet18: worth remembering)."""
    if model.external_data_folder is None:
        return size_of(model.onnx_bytes)
    # a generator: one layer's memory map is alive at a time
    flats = (model.weights[layer.name].reshape(-1) for layer in model.layers)
    chunks = (flat[start : start + SIZE_CHUNK] for flat in flats for start in range(0, flat.size, SIZE_CHUNK))
    return size_of_parts(itertools.chain([model.onnx_bytes], chunks), len(model.onnx_bytes) + 4 * model.prunable_params)


def size_of(model: OnnxModel, progress: Callable[[float], None] | None = None) -> SizeStats:
    """Raw and gzip size of an export: its bytes, or its .onnx with the external data beside it (streamed).
    `progress` hears how far the gzip of bytes has got, and may raise to stop it (a page moving on)."""
    if isinstance(model, bytes):
        return _size_of_bytes(model, progress)
    return size_of_parts(_file_chunks(sorted(model.parent.iterdir())), export_size(model))


def size_of_parts(parts: Iterable, raw: int) -> SizeStats:
    """Raw and gzip size of byte-like parts (`raw` bytes in all) taken as one stream; gzip only up to
    GZIP_UP_TO bytes: beyond, it would take minutes and is left out."""
    if raw > GZIP_UP_TO:
        return SizeStats(raw=raw, gzip=None)
    compressor = zlib.compressobj(GZIP_LEVEL)
    packed = sum(len(compressor.compress(part)) for part in parts)
    return SizeStats(raw=raw, gzip=packed + len(compressor.flush()))


GZIP_SLICE = 4 * 1024**2  # bytes compressed apart, one slice per core at a time


def _size_of_bytes(data: bytes, progress: Callable[[float], None] | None = None) -> SizeStats:
    """As `size_of_parts`, in slices compressed in parallel (zlib releases the GIL): resnet18's 45 MB take 1.1 s in
    one stream, 0.66 s in slices on 2 cores. Each slice restarts zlib's 32 KB window: their sizes add up within
    0.05 % of one stream's. Between rounds of slices `progress` is told, so a caller can stop within one round."""
    if len(data) > GZIP_UP_TO:
        return SizeStats(raw=len(data), gzip=None)
    view = memoryview(data)
    starts = range(0, len(data), GZIP_SLICE)
    threads = default_threads()
    packed = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for first in range(0, len(starts), threads):
            rounds = starts[first : first + threads]
            packed += sum(
                pool.map(lambda start: len(zlib.compress(view[start : start + GZIP_SLICE], GZIP_LEVEL)), rounds)
            )
            if progress is not None:
                progress(min(1.0, (first + threads) / len(starts)))
    return SizeStats(raw=len(data), gzip=packed)


def _file_chunks(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(SIZE_CHUNK):
                yield chunk


def model_info(model: Model) -> ModelInfo:
    return ModelInfo(
        name=model.name,
        source=model.source,
        description=model.description,
        task=model.task,
        trained=model.trained,
        sha256=model.sha256,
        prunable_params=model.prunable_params,
        eval_inputs="data" if model.data else "random" if model.eval_inputs_are_random else "sample",
        data=None if model.data is None else model.data.to_dict(),
    )


def storage_description(mode: str, bits: int) -> str:
    """How the quantized weights sit in the exported file."""
    if ACTIVATION_MODES[mode].quantize is None:  # written by this tool
        grid = "int8 codes" if bits == 8 else f"int8 codes on a {bits}-bit grid ({levels(bits)} levels)"
        return f"{grid} + DequantizeLinear (per output channel)"
    grid = "int8" if bits == 8 else f"int8 holding a {bits}-bit grid ({levels(bits)} levels)"
    return f"{grid}, per output channel, written by ONNX Runtime's quantize_{mode}"


def quantization_info(compressed: Compressed, export: OnnxModel) -> QuantizationInfo | None:
    quant = compressed.recipe.quant
    if not quant.enabled:
        return None
    mode = compressed.activation_mode
    calibration = compressed.calibration
    activations = ACTIVATION_MODES[mode].activations.format(method=quant.calib_method)
    return QuantizationInfo(
        mode=mode,
        reason=compressed.mode_reason,
        weight_bits=quant.weight_bits,
        levels=levels(quant.weight_bits),
        stored_as=storage_description(mode, quant.weight_bits),
        activations=activations,
        calibration=None if calibration is None else calibration.description,
        calibration_is_random=bool(calibration and calibration.random),
        keep_float=list(quant.keep_float),
        smooth_alpha=quant.smooth_alpha if ACTIVATION_MODES[mode].smoothing else 0.0,
        sqnr=layer_sqnr(compressed, export),
        kernel_note=SATURATION_NOTE
        if ACTIVATION_MODES[mode].int8 and int8_sums_can_saturate(cpu_description()[1])
        else None,
    )


def layer_sqnr(compressed: Compressed, export: OnnxModel) -> list[LayerSqnr]:
    """Per quantized layer: the weight's SQNR and its output's, both against the pruned float model, so they
    measure quantization alone (pruning's error is in the fidelity to the original); the output's where the export
    still has that tensor with the same shape. A large model keeps no pruned float copy: its outputs are compared
    with the original's."""
    model = compressed.model
    pruned = compressed.pruned_float_onnx()
    reference, reference_folder = (model.proto, model.external_data_folder) if pruned is None else (pruned, None)
    if isinstance(export, bytes):
        exported, export_folder = onnx.load_from_string(export), None
    else:
        exported, export_folder = onnx.load(str(export), load_external_data=False), export.parent
    # Quantizers rename tensors but keep node names: match each layer's output by its node.
    after_names, logical = _exported_outputs(exported)
    before_names = _outputs_by_node(reference, logical)
    by_name = {layer.name: layer for layer in compressed.layers}
    pairs = {
        name: (before_names[node], after_names[node])
        for name in compressed.weight_sqnr
        if (node := by_name[name].node) in before_names and node in after_names
    }
    feeds = model.first_inputs(SQNR_SAMPLES)
    before = intermediate_values(reference, feeds, sorted({pair[0] for pair in pairs.values()}), reference_folder)
    after = intermediate_values(exported, feeds, sorted({pair[1] for pair in pairs.values()}), export_folder)
    original = before
    if pruned is not None:
        original_names = _outputs_by_node(model.proto, logical)
        wanted = sorted({original_names[by_name[name].node] for name in pairs if by_name[name].node in original_names})
        original_values = intermediate_values(model.proto, feeds, wanted, model.external_data_folder)
        original = {pairs[name][0]: original_values[original_names[by_name[name].node]]
                    for name in pairs if original_names.get(by_name[name].node) in original_values}  # fmt: skip
    result = []
    for name, weight_db in compressed.weight_sqnr.items():
        reference_name, quantized = pairs.get(name, ("", ""))
        output_db = total_db = None
        if reference_name in before and quantized in after and before[reference_name].shape == after[quantized].shape:
            output_db = round(sqnr_db(before[reference_name], after[quantized]), 2)
        if (
            reference_name in original
            and quantized in after
            and original[reference_name].shape == after[quantized].shape
        ):
            total_db = round(sqnr_db(original[reference_name], after[quantized]), 2)
        result.append(LayerSqnr(by_name[name].node, round(weight_db, 2), output_db, total_db))
    return result


def _exported_outputs(exported: onnx.ModelProto) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Each named node's output as the next layer reads it, and the names that tensor may have in the float graph.
    A static export quantizes a layer's output through a QuantizeLinear/DequantizeLinear pair, which also applies
    any Relu the quantizer removed (its range starts at 0): what follows reads the pair's output, which holds the
    float graph's tensor under one of the pair's two names (the quantized tensor's, or the output's a graph output
    keeps). A convolution that took in its BatchNormalization (`core.onnx.batchnorm`) outputs that one's tensor."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in exported.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def after(name: str, op_type: str) -> onnx.NodeProto | None:
        return next((node for node in readers.get(name, []) if node.op_type == op_type), None)

    outputs, logical = {}, {}
    for node in exported.graph.node:
        if not node.name or not node.output:
            continue
        raw = node.output[0]
        quantize = after(raw, "QuantizeLinear")
        dequantize = after(quantize.output[0], "DequantizeLinear") if quantize is not None else None
        outputs[node.name] = raw if dequantize is None else dequantize.output[0]
        logical[node.name] = (raw,) if dequantize is None else (dequantize.output[0], raw)
    return outputs, logical


def _outputs_by_node(reference: onnx.ModelProto, logical: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Each named node's output in `reference`, to compare with the output of the export's node of that name: the
    first of its names (`logical`, see `_exported_outputs`) that `reference` computes, else the node's own."""
    tensors = {name for node in reference.graph.node for name in node.output}
    return {
        node.name: next((name for name in logical.get(node.name, ()) if name in tensors), node.output[0])
        for node in reference.graph.node
        if node.name
    }


def quantization_codes(compressed: Compressed) -> dict[str, CodeCounts]:
    """Per layer and over all layers, how the weights spread over the quantization grid's levels."""
    if not compressed.quantized:
        return {}
    result = {name: CodeCounts(*code_counts(q.values, q.bits), q.bits) for name, q in compressed.quantized.items()}
    # over all layers, on the widest grid: a narrower grid's codes are a subset of it (per-layer overrides)
    widest = max(counts.bits for counts in result.values())
    largest = 2 ** (widest - 1) - 1
    every = np.zeros(2 * largest + 1, np.int64)
    for counts in result.values():
        every[np.asarray(counts.codes) + largest] += counts.counts
    result["all"] = CodeCounts(list(range(-largest, largest + 1)), every.tolist(), widest)
    return result


def summarize_weights(compressed: Compressed) -> WeightSummary:
    facts = weight_facts(compressed)
    layers = layer_stats(compressed, facts)
    return WeightSummary(
        layers=layers,
        totals=totals(layers),
        collapsed_layers=[layer.node for layer in layers if layer.collapsed],
        histograms=histograms(compressed, facts),
        quantization_codes=quantization_codes(compressed),
    )


def report_on_export(compressed: Compressed) -> Report:
    """The report measured on an export made for it (in a temporary folder when over 2 GB), then dropped."""
    with tempfile.TemporaryDirectory(prefix="squeezelab-export-") as work:
        return build_report(compressed, export_model(compressed, Path(work)))


def input_notes(model: Model) -> list[str]:
    """Which input shapes and values were made up and how to set them, and which the user gave."""
    notes = []
    if model.input_plan is not None and model.input_plan.made_up:
        notes.append(
            f"Made-up inputs: {model.input_plan.describe()}. Set them with --shape and --value (in the page: the "
            "sidebar's Inputs panel)."
        )
    if model.given_inputs:
        notes.append(f"Inputs as given: {' '.join(given.describe() for given in model.given_inputs)}.")
    return notes


def build_report(
    compressed: Compressed,
    export: OnnxModel,
    latency: Latency | None = None,
    summary: WeightSummary | None = None,
    progress: Callable[[float], None] | None = None,
    gzip: bool = True,
    judged_on: Model | None = None,
) -> Report:
    """Everything measured on `export`, the exact model the user gets. Pass `summary` if already computed;
    `progress` hears how far the evaluation has got (0-1). Without `gzip`, the export's gzip size is left to be
    measured later (`size_of`): on a large model it takes longer than everything else here. `judged_on`: the
    compressed model's own model on fewer evaluation samples (`Model.evaluated_within`), the page's live figures."""
    model = judged_on or compressed.model
    outputs = model.outputs_of(export, progress)
    summary = summary or summarize_weights(compressed)
    size_bytes = {
        "original": original_size(model),
        "compressed": size_of(export) if gzip else SizeStats.raw_only(export_size(export)),
    }
    notes = []
    if model.eval_inputs_are_random:
        notes.append("No evaluation data: fidelity is measured on seeded random inputs and accuracy is unknown.")
    notes += input_notes(model)
    if model.data is not None:
        notes.append(f"Data: {model.data.describe()}. Accuracy and fidelity are on the held-out part.")
    if model.eval_samples < compressed.model.eval_samples:
        notes.append(
            f"Accuracy and fidelity are on the first {model.eval_samples} of {compressed.model.eval_samples} "
            "evaluation samples (a seeded random subset, what the page measures live); the CLI measures all."
        )
    if model.opset_note:
        notes.append(f"{model.opset_note[0].upper()}{model.opset_note[1:]}.")
    if model.trained is False:
        notes.append("This model is untrained (random weights): use it for size and latency, not accuracy.")
    verdict = speed_verdict(compressed)
    measured = measure(model, outputs)
    return Report(
        model=model_info(model),
        settings=compressed.recipe.to_dict(),
        layers=summary.layers,
        totals=summary.totals,
        collapsed_layers=summary.collapsed_layers,
        histograms=summary.histograms,
        quantization_codes=summary.quantization_codes,
        left_whole={layer.node: layer.left_whole for layer in summary.layers if layer.left_whole},
        blocks=list(compressed.blocks),
        size_bytes=size_bytes,
        fidelity=measured.fidelity,
        accuracy=measured.accuracy,
        targets=measured.targets,
        metric=metric_of(model).name,
        quantization=quantization_info(compressed, export),
        verdict=verdict,
        latency_ms=latency,
        notes=notes,
        recovery=compressed.recovery,
    )
