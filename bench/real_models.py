"""Real users' ONNX files: every model of the corpus (bench/corpus.py) through load, compression, export and a
sensitivity scan, as one table of model x operation -> ok (fidelity, latency ratio) / refused: reason / failed.

Goal (issue 12): every cell ok or a one-line refusal, at least 90 % of cells ok, no failure.
Run: make corpus, or .venv/bin/python bench/real_models.py [--models a,b] [--budget 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench.* from the repo
from bench.corpus import BY_NAME, CORPUS, Unreachable, interface
from core import PruneConfig, QuantConfig, Recipe, SqueezeError, compress, export_model, load_model
from core.explore.sensitivity import scan
from core.measure.benchmark import time_against_original
from core.measure.summaries import build_report

GOAL_OK = 0.9


def _compressed(recipe: Recipe) -> Callable:
    """Compress, export, measure fidelity on the model's evaluation inputs and latency against the original."""

    def run(model, budget_s: float) -> str:
        with tempfile.TemporaryDirectory(prefix="squeezelab-corpus-") as work:
            compressed = compress(model, recipe)
            data = export_model(compressed, Path(work))
            report = build_report(compressed, data)
            latency = time_against_original(model, data, budget_s=budget_s)
        metric, quality = report.quality
        return f"{metric} {quality:.3f}, {latency.speedup:.2f}x"

    return run


def _sensitivity(model, budget_s: float) -> str:
    result = scan(model, amounts=(0.5,), bits=(8,))
    worst = max(drop for row in result.drops for drop in row if drop is not None)
    return f"{len(result.layers)} layers, worst drop {worst:.3f} ({result.metric})"


def _export_round_trip(model, budget_s: float) -> str:
    """The export loads again as a model of its own, with the original's input and output names and dims."""
    recipe = Recipe(PruneConfig(0.5), QuantConfig(8))
    with tempfile.TemporaryDirectory(prefix="squeezelab-corpus-") as work:
        path = Path(work) / "export.onnx"
        path.write_bytes(export_model(compress(model, recipe), Path(work)))
        exported = onnx.load(path, load_external_data=False)
        again = load_model(path, given={given.name: given for given in model.given_inputs})
    if interface(exported) != interface(model.proto):
        raise RuntimeError("the export's inputs or outputs differ from the original's")
    return f"{len(again.layers)} layers, inputs and outputs kept"


def _load(path: Path, loaded: list) -> str:
    model = load_model(path)
    loaded.append(model)
    made_up = model.input_plan.describe() if model.input_plan else ""
    return (
        f"{len(model.layers)} layers"
        + (f"; made up {made_up}" if made_up else "")
        + (f"; {model.opset_note}" if model.opset_note else "")
    )


OPERATIONS: dict[str, Callable] = {
    "unstructured 0.5 + 8-bit": _compressed(Recipe(PruneConfig(0.5), QuantConfig(8))),
    "channel 0.3": _compressed(Recipe(PruneConfig(0.3, granularity="channel"))),
    "static int8": _compressed(Recipe(quant=QuantConfig(8, "static"))),
    "dynamic int8": _compressed(Recipe(quant=QuantConfig(8, "dynamic"))),
    "sensitivity": _sensitivity,
    "export": _export_round_trip,
}


def _cell(operation: Callable, *args) -> tuple[str, str, float]:
    """(status, text, seconds): ok / refused (a SqueezeError's one line) / failed (anything else: a defect)."""
    started = time.perf_counter()
    try:
        text = operation(*args)
        status = "ok"
    except SqueezeError as error:
        status, text = "refused", error.reason
    except Exception as error:  # noqa: BLE001 - a failure is what this bench is here to find
        traceback.print_exc(file=sys.stderr)
        status, text = "failed", f"{type(error).__name__}: {error}".splitlines()[0]
    return status, text, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(model.name for model in CORPUS))
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of latency measurement per cell")
    args = parser.parse_args()
    names = args.models.split(",")
    rows: list[tuple[str, str, str, str]] = []  # model, operation, status, text
    for name in names:
        entry = BY_NAME[name]
        try:
            path = entry.path()
        except Unreachable as error:
            print(f"skipped {name}: {error}", file=sys.stderr)
            continue
        loaded: list = []
        status, text, seconds = _cell(_load, path, loaded)
        model = loaded[0] if loaded else None
        rows.append((name, "load", status, text))
        print(f"{name:<17} {'load':<25} {status:<8} {seconds:5.1f} s  {text}", flush=True)
        for operation, run in OPERATIONS.items():
            if model is None:
                rows.append((name, operation, "refused", "did not load"))
                continue
            status, text, seconds = _cell(run, model, args.budget)
            rows.append((name, operation, status, text))
            print(f"{name:<17} {operation:<25} {status:<8} {seconds:5.1f} s  {text}", flush=True)
    _print_table(rows)
    ok = sum(status == "ok" for _, _, status, _ in rows)
    failed = sum(status == "failed" for _, _, status, _ in rows)
    share = ok / max(len(rows), 1)
    print(f"\n{ok}/{len(rows)} cells ok ({share:.0%}, goal {GOAL_OK:.0%}), {failed} failed")
    return 0 if share >= GOAL_OK and not failed else 1


def _print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """Markdown: one row per model, one column per operation."""
    operations = ["load", *OPERATIONS]
    cells = {(model, operation): (status, text) for model, operation, status, text in rows}
    models = list(dict.fromkeys(model for model, *_ in rows))
    print("\n| model | kind | " + " | ".join(operations) + " |")
    print("|" + "---|" * (len(operations) + 2))
    for model in models:
        shown = []
        for operation in operations:
            status, text = cells[(model, operation)]
            shown.append(f"ok: {text}" if status == "ok" else f"**{status}**: {text}")
        print(f"| {model} | {BY_NAME[model].kind} | " + " | ".join(shown) + " |")


if __name__ == "__main__":
    sys.exit(main())
