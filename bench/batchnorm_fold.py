"""Static int8 with and without BatchNormalization folded into the convolutions first (core/onnx/batchnorm.py), on
the real models of the corpus that have Conv -> BatchNormalization, timed interleaved with the original in one run.

Prints per model: the pairs folded, the speed-up of each export over the fp32 original (median ratio, with its
99 % interval) and each export's fidelity on the model's evaluation inputs.
Run: .venv/bin/python bench/batchnorm_fold.py [--models a,b] [--budget 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench.* from the repo
from bench.corpus import BY_NAME, CORPUS, Unreachable
from core import PruneConfig, QuantConfig, Recipe, SqueezeError, compress, export_bytes, load_model
from core.compression.export import quantize_activations
from core.measure.benchmark import measure_latency
from core.measure.noise import speedup_interval
from core.measure.summaries import build_report
from core.onnx.batchnorm import fold_batch_norms


def _unfolded(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    return model, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(entry.name for entry in CORPUS))
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of interleaved runs per model")
    args = parser.parse_args()
    print(f"{'model':<18}{'folded':>7}  {'unfolded: speed-up (99% interval), fidelity':<46}folded: the same")
    for name in args.models.split(","):
        try:
            model = load_model(BY_NAME[name].path())
        except (Unreachable, SqueezeError) as reason:
            print(f"{name:<18}skipped: {str(reason).splitlines()[0][-90:]}")
            continue
        _, pairs = fold_batch_norms(model.proto)
        if not pairs:
            print(f"{name:<18}{0:>7}  no Conv -> BatchNormalization")
            continue
        compressed = compress(model, Recipe(PruneConfig(), QuantConfig(8, activations="static")))
        folded = export_bytes(compressed)  # as the tool writes it
        with mock.patch("core.compression.activations.fold_batch_norms", _unfolded):  # in this process, unfolded
            float_model = compressed.reference_onnx().SerializeToString()
            unfolded = quantize_activations(float_model, "static", compressed.calibration.inputs, "minmax", [])
        results, _ = measure_latency([model.runnable, unfolded, folded], model.latency_feed, budget_s=args.budget)
        cells = []
        for export, result in zip((unfolded, folded), results[1:], strict=True):
            low, high = speedup_interval(results[0].samples, result.samples)
            metric, quality = build_report(compressed, export).quality
            cells.append(f"{results[0].median / result.median:.2f}x ({low:.2f}-{high:.2f}), {metric} {quality:.4f}")
        print(f"{name:<18}{pairs:>7}  {cells[0]:<46}{cells[1]}", flush=True)


if __name__ == "__main__":
    main()
