"""50 % channel pruning of `resnet18` at 224x224: latency ratio against the MAC ratio, measured on the exported bytes.

Targets (issue 4): >= 2.8x faster than the original, interleaved in one run, and the latency ratio within 20 % of
the MAC ratio. Both thread settings are printed: one thread is the tool's default for batch-1 latency.
Run: .venv/bin/python bench/channel_speed.py [--amount 0.5] [--budget 15]
"""

from __future__ import annotations

import argparse

from core import PruneConfig, Recipe, compare_latency, compress, export_bytes, load_model
from core.onnx.runtime import default_threads

TARGET_SPEEDUP = 2.8
TOLERANCE = 0.2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--amount", type=float, default=0.5)
    parser.add_argument("--budget", type=float, default=15.0)
    args = parser.parse_args()
    model = load_model("resnet18")
    recipe = Recipe(PruneConfig(args.amount, granularity="channel"))
    compressed = compress(model, recipe)
    data = export_bytes(compressed)
    macs_before, macs_after = sum(model.macs.values()), sum(compressed.macs.values())
    mac_ratio = macs_before / macs_after
    print(f"resnet18, {args.amount:.0%} of channels removed ({recipe.prune.scope} scope, {recipe.prune.criterion})")
    print(f"MACs per sample: {macs_before:,} -> {macs_after:,}, ratio {mac_ratio:.2f}x")
    print(f"size: {len(model.onnx_bytes):,} -> {len(data):,} bytes")
    for threads in sorted({1, default_threads()}):
        latency = compare_latency(model.onnx_bytes, data, model.latency_feed, threads=threads, budget_s=args.budget)
        speedup = latency.speedup
        print(
            f"{threads} thread(s): original median {latency.original.median:.2f} ms (p90 {latency.original.p90:.2f}), "
            f"pruned {latency.compressed.median:.2f} ms (p90 {latency.compressed.p90:.2f}), {latency.original.runs} "
            f"interleaved runs each"
        )
        within = abs(speedup / mac_ratio - 1) <= TOLERANCE
        print(
            f"  latency ratio {speedup:.2f}x; target >= {TARGET_SPEEDUP}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}; "
            f"{speedup / mac_ratio:.0%} of the MAC ratio, within {TOLERANCE:.0%}: {'yes' if within else 'no'}"
        )
    env = latency.environment
    print(f"ONNX Runtime {env.onnxruntime}; CPU {env.cpu}; flags {' '.join(env.cpu_flags)}")


if __name__ == "__main__":
    main()
