"""Accuracy recovery against issue 15's targets, one run, figures printed: each case compressed, then recovered within
its time budget on the tuning part (digits: the 1,438 training digits), and judged on the held-out part (the 359
test digits, never seen in training).

Run: .venv/bin/python bench/recovery.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes, load_model, prepare_index
from core.compression.recipe import RecoverConfig
from core.compression.recover import recover
from core.data.datasets import with_data
from core.data.quality import measure, metric_of
from sample_models import data


@dataclass(frozen=True)
class Case:
    model: str
    label: str
    recipe: Recipe
    target: float  # held-out accuracy after recovery


CASES = [
    Case("digits-cnn", "50 % channels", Recipe(PruneConfig(0.5, granularity="channel")), 0.990),
    Case("digits-cnn", "75 % channels", Recipe(PruneConfig(0.75, granularity="channel")), 0.975),
    Case("digits-mlp", "90 % unstructured", Recipe(PruneConfig(0.9)), 0.970),
    Case("digits-cnn", "2-bit weights", Recipe(quant=QuantConfig(2)), 0.970),
]


def held_out(model, export: bytes) -> float:
    return metric_of(model).measured(measure(model, model.outputs_of(export)))


def run(model, case: Case, seconds: float, method: str = "distill") -> tuple[float, float, float, int]:
    compressed = compress(model, case.recipe, prepare_index(model, case.recipe))
    started = time.perf_counter()
    recovered = recover(compressed, RecoverConfig(method, seconds))
    took = time.perf_counter() - started
    return recovered.recovery.before, held_out(model, export_bytes(recovered)), took, recovered.recovery.steps


def user_onnx(folder: Path):
    """digits-cnn as a user would bring it: a plain .onnx and an .npz of all 1,797 digits, split 80/20 by the tool."""
    train_x, train_y, test_x, test_y = data.digits_split()
    arrays = folder / "digits.npz"
    np.savez(arrays, image=np.concatenate([train_x, test_x]), labels=np.concatenate([train_y, test_y]))
    path = folder / "digits-cnn.onnx"
    path.write_bytes(load_model("digits-cnn").onnx_bytes)
    return with_data(load_model(str(path)), arrays)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"distill, Adam 3e-3, cosine decay, {args.seconds:g} s budget, 2 threads; accuracy on the held-out digits")
    print("correct: bias correction alone, no training; its column is its held-out accuracy and time")
    header = f"{'model':<11}{'compression':<20}{'before':>8}{'correct':>8}{'(s)':>6}{'distill':>8}{'target':>8}"
    print(header + f"{'seconds':>9}{'steps':>8}  met")
    for case in CASES:
        model = load_model(case.model)
        _, corrected, correct_s, _ = run(model, case, args.seconds, "correct")
        before, after, took, steps = run(model, case, args.seconds)
        met = "yes" if after >= case.target else "NO"
        print(
            f"{case.model:<11}{case.label:<20}{before:>8.1%}{corrected:>8.1%}{correct_s:>6.1f}{after:>8.1%}"
            f"{case.target:>8.1%}{took:>9.1f}{steps:>8}  {met}"
        )
    with tempfile.TemporaryDirectory() as folder:
        model = user_onnx(Path(folder))
        before, after, took, steps = run(model, CASES[0], args.seconds)
        print(
            f"{'user .onnx':<11}{'50 % channels':<20}{before:>8.1%}{'':>14}{after:>8.1%}{'':>8}{took:>9.1f}{steps:>8}  "
            f"(its own 80/20 split of all 1,797 digits: {model.data.held_out} held out; trained in a sandbox child)"
        )


if __name__ == "__main__":
    main()
