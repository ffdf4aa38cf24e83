"""Three ways to the smallest export within 1 accuracy point, each given the same wall-clock budget, printed side by
side (issue 16): the uniform grid (every amount x bits x granularity), the sensitivity allocation (the scan's "auto"
plan at each target and bit width), and the search (Optuna TPE). All three are judged the same way: accuracy on a
batch of the tuning part (the 1,438 training digits) within 1 point of the original's; the winner of each is then
checked on the 359 held-out digits. Size is the export gzipped (level 1).

With --minilm, also the latency target: all-MiniLM-L6-v2 judged by mean cosine to the original's embeddings on
tuning sentences (the first sentences of the standard library's docstrings, the user's own text), min 0.99; the
winner and dynamic int8 alone (the tool's own pick for this model) are then timed together with the original, and
checked on the held-out sentences. --flush-denormals times everything with denormal floats computed as zero (ONNX
Runtime's session.set_denormal_as_zero, for the whole process: a masked attention's Softmax spends most of its time
on them unflushed); --minilm-only skips the digits.

Run: .venv/bin/python bench/search.py [--budget 120] [--minilm [--minilm-budget 600]] [--minilm-only]
     [--flush-denormals]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes, load_model
from core.data.datasets import with_data
from core.data.quality import measure, metric_of
from core.explore.allocation import plans
from core.explore.search import Judge, SearchSettings, gzip_mb, search
from core.explore.sensitivity import cached_scan
from core.measure.benchmark import measure_latency
from core.onnx.runtime import flush_denormals_in_this_process

AMOUNTS = (0.0, 0.25, 0.5, 0.75)
BITS = (32, 8, 4)


def judged(model, judge, recipe: Recipe) -> tuple[float, float, bytes]:
    data = export_bytes(compress(model, recipe))
    return gzip_mb(data), judge.quality(model, data), data


def best_of(model, judge, recipes, budget_s: float) -> tuple[int, float, tuple | None]:
    """Tries the recipes in order until the budget is spent; the smallest that meets the constraint."""
    started, best, tried = time.monotonic(), None, 0
    for recipe in recipes:
        if time.monotonic() - started > budget_s:
            break
        size, quality, data = judged(model, judge, recipe)
        tried += 1
        if quality >= judge.limit and (best is None or size < best[0]):
            best = (size, quality, data, recipe)
    return tried, time.monotonic() - started, best


def grid(model):
    for granularity in ("unstructured", "channel"):
        for amount in AMOUNTS:
            for bits in BITS:
                yield Recipe.for_model(model, PruneConfig(amount, granularity=granularity), QuantConfig(bits))


def allocated(model, scan):
    for target in (0.25, 0.5, 0.75, 0.9):
        for bits in BITS:
            yield plans(model, scan, target, bits)[-1].recipe  # "auto": amounts spread by sensitivity


def held_out(model, data: bytes) -> float:
    return metric_of(model).measured(measure(model, model.outputs_of(data)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--minilm", action="store_true", help="also the minilm latency target")
    parser.add_argument("--minilm-budget", type=float, default=600.0)
    parser.add_argument("--minilm-only", action="store_true", help="the minilm target alone")
    parser.add_argument("--flush-denormals", action="store_true", help="every session of this run flushes them")
    args = parser.parse_args()
    if args.flush_denormals and not flush_denormals_in_this_process():
        raise SystemExit("denormals can be flushed only before the first ONNX Runtime session")
    if not args.minilm_only:
        digits(args.budget)
    if args.minilm or args.minilm_only:
        minilm(args.minilm_budget, args.flush_denormals)


def digits(budget: float) -> None:
    model = load_model("digits-cnn")
    with tempfile.TemporaryDirectory() as folder:
        settings = SearchSettings("size", max_drop=1.0, budget_s=budget, storage=f"sqlite:///{folder}/s.db")
        judge = Judge.of(model, settings)
        rows = []
        tried, seconds, best = best_of(model, judge, grid(model), budget)
        rows.append(("uniform grid", tried, seconds, best))
        started = time.monotonic()
        scan = cached_scan(model)
        left = budget - (time.monotonic() - started)
        tried, seconds, best = best_of(model, judge, allocated(model, scan), left)
        rows.append(("sensitivity allocation", tried, seconds + budget - left, best))
        started = time.monotonic()
        result = search(model, settings)
        winner = result.best
        found = None
        if winner is not None:
            size, quality, data = judged(model, judge, winner.recipe)
            found = (size, quality, data, winner.recipe)
        rows.append(("search (TPE)", len(result.trials), time.monotonic() - started, found))
    print(f"digits-cnn, objective size (gzip), max drop 1.0 pp on {len(judge.reference)} tuning digits "
          f"(original {judge.baseline:.1%}), {budget:g} s each")  # fmt: skip
    print(f"{'strategy':<24}{'tried':>7}{'seconds':>9}{'gzip KB':>10}{'tuning':>8}{'held-out':>10}  setting")
    for name, tried, seconds, best in rows:
        if best is None:
            print(f"{name:<24}{tried:>7}{seconds:>9.1f}  nothing met the constraint")
            continue
        size, quality, data, recipe = best
        print(f"{name:<24}{tried:>7}{seconds:>9.1f}{size * 1000:>10.1f}{quality:>8.1%}{held_out(model, data):>10.1%}  "
              f"{describe(recipe)}")  # fmt: skip
    original = export_bytes(compress(model, Recipe.for_model(model, PruneConfig(), QuantConfig())))
    print(f"the original: {gzip_mb(original) * 1000:.1f} KB gzipped, {held_out(model, original):.1%} held-out")


def minilm(budget: float, flush: bool = False) -> None:
    from bench.recovery import docstring_sentences

    with tempfile.TemporaryDirectory() as folder:
        text = Path(folder) / "sentences.txt"
        text.write_text("\n".join(docstring_sentences()) + "\n")
        model = with_data(load_model("minilm"), text)
        settings = SearchSettings("latency", min_quality=0.99, budget_s=budget, storage=f"sqlite:///{folder}/s.db",
                                  flush_denormals=flush)  # fmt: skip
        started = time.monotonic()
        result = search(model, settings)
        seconds = time.monotonic() - started
    judge = Judge.of(model, settings)
    rows = [("dynamic int8 alone", Recipe.for_model(model, PruneConfig(), QuantConfig(8, "dynamic")))]
    if result.best is not None:
        rows.append((f"search winner (trial {result.best.number})", result.best.recipe))
    exports = [export_bytes(compress(model, recipe)) for _, recipe in rows]
    (original, *timed), env = measure_latency([model.runnable, *exports], model.latency_feed, budget_s=20.0,
                                              flush_denormals=flush)  # fmt: skip
    print(f"\nminilm, objective latency, min cosine 0.99 on {len(judge.reference)} tuning sentences; "
          f"{len(result.trials)} trials in {seconds:.0f} s; timed together, {env.threads} thread(s)"
          f"{', denormals flushed to zero' if env.flush_denormals else ''}, original {original.median:.2f} ms")  # fmt: skip
    print(f"{'setting':<30}{'speed-up':>9}{'tuning':>8}{'held-out':>10}  recipe")
    for (name, recipe), data, stats in zip(rows, exports, timed, strict=True):
        print(f"{name:<30}{original.median / stats.median:>8.2f}x{judge.quality(model, data):>8.4f}"
              f"{held_out(model, data):>10.4f}  {describe(recipe)}, activations {recipe.quant.activations}")  # fmt: skip
    if result.best is None:
        print("the search found nothing that meets the constraint")


def describe(recipe: Recipe) -> str:
    amounts = sorted({o.amount for o in recipe.overrides if o.amount is not None})
    bits = sorted({o.bits for o in recipe.overrides if o.bits is not None})
    prune = recipe.prune
    text = f"{prune.granularity} {prune.amount:g}" if prune.amount else prune.granularity
    if amounts:
        text += f", per-layer amounts {amounts[0]:g}-{amounts[-1]:g}"
    width = recipe.quant.weight_bits
    return text + (f", bits {bits}" if bits else f", {width} bits" if width != 32 else ", float")


if __name__ == "__main__":
    main()
