"""`python -m core`: the engine from a shell. User mistakes exit 2 with one line naming the input and the reason."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from core.compression.activations import ACTIVATION_MODES, CALIBRATION_METHODS
from core.compression.export import check_export_target, export_bytes, export_model, save_export
from core.compression.granularities import GRANULARITIES
from core.compression.pipeline import compress
from core.compression.pruning import CRITERIA, SCOPES
from core.compression.recipe import FLOAT_BITS, LayerOverride, PruneConfig, QuantConfig, Recipe, RecoverConfig
from core.compression.recover import recover, replayable
from core.compression.recovery import OPTIMIZERS, RECOVERY_METHODS, RecoveryInfo
from core.compression.schedules import DEFAULT_PRUNING_STEPS, SCHEDULES
from core.data.datasets import DEFAULT_TUNING_FRACTION, with_data
from core.data.images import COLORS, LAYOUTS, PREPROCESS_KEYS, SCALES
from core.data.quality import QUALITY_METRICS, with_metric
from core.errors import InvalidSettingError, SqueezeError
from core.explore.allocation import allocate_bits, compare_plans
from core.explore.search import OBJECTIVES, SAMPLERS, SearchSettings, Trial, search
from core.explore.sensitivity import DEFAULT_AMOUNTS, DEFAULT_BITS, cached_scan
from core.explore.snapshots import describe
from core.explore.sweep import DEFAULT_AMOUNTS as SWEEP_AMOUNTS
from core.explore.sweep import DEFAULT_BITS as SWEEP_BITS
from core.explore.sweep import DEFAULT_BUDGET_S as SWEEP_BUDGET_S
from core.explore.sweep import best_on_front, sweep, to_csv
from core.load.files import write_atomic
from core.load.sources import load_model, load_runnable
from core.measure.benchmark import LATENCY_BUDGET_S, LATENCY_THREADS, time_against_original
from core.measure.findings import compare, to_dict
from core.measure.profile import PROFILE_BUDGET_S, profile_against_original
from core.measure.summaries import build_report, report_on_export, summarize_weights
from core.measure.verdict import measured_text, speed_verdict, verdict_agreement
from core.model import Model
from core.onnx.inputs import GivenInput, merge_given
from core.onnx.runtime import OnnxModel, flush_denormals_in_this_process
from core.present.html_report import render as render_html
from core.present.profile_text import profile_lines

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other bad input
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Squeezelab: prune and quantize models, measure, export ONNX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    inputs = argparse.ArgumentParser(add_help=False)  # for every command that loads a model
    inputs.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="INPUT=1x3x640x640",
        help="an input's shape, instead of made-up sizes for its symbolic dims (ONNX models without data; repeatable)",
    )
    inputs.add_argument(
        "--value", action="append", default=[], metavar="INPUT=16000", help="a value every element of an input takes"
    )
    inputs.add_argument(
        "--verbose", action="store_true", help="after an error's one line, print ONNX Runtime's full message"
    )
    inputs.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="your data, split into a tuning part (calibration, scans, allocation) and a held-out part (every "
        "accuracy and fidelity): an .npz of arrays named like the inputs (samples first) with optional int "
        "'labels' or float 'targets'; a folder or .zip of images (class subfolders give labels); or a .txt of "
        "lines for a Hugging Face text model",
    )
    inputs.add_argument(
        "--preprocess",
        type=_settings,
        default={},
        metavar="KEY=VALUE,...",
        help=f"how images become inputs: scale={'|'.join(SCALES)} (default unit), color={'|'.join(COLORS)} (default "
        f"from the channels), layout={'|'.join(LAYOUTS)} (default from the graph), resize=N (the shorter side "
        "before the centre crop; default the crop's side)",
    )
    inputs.add_argument(
        "--metric",
        choices=list(QUALITY_METRICS),
        help="what the model is judged by (default: accuracy with labels, target-cosine with targets, else cosine "
        "to the original's outputs)",
    )
    inputs.add_argument(
        "--split",
        type=float,
        default=DEFAULT_TUNING_FRACTION,
        metavar="FRACTION",
        help=f"the tuning part of --data, by a seeded shuffle (default {DEFAULT_TUNING_FRACTION:g}; the rest is held out)",
    )

    recovery = argparse.ArgumentParser(add_help=False)
    recovery.add_argument(
        "--recover",
        choices=list(RECOVERY_METHODS),
        default=None,
        help="after compressing, train the compressed model on the tuning data to win accuracy back: "
        + "; ".join(f"{name}: {method.description}" for name, method in RECOVERY_METHODS.items()),
    )
    recovery.add_argument(
        "--recover-seconds", type=float, default=None, metavar="S", help="recovery's time budget (default 60)"
    )
    recovery.add_argument("--recover-steps", type=int, default=None, metavar="N", help="stop recovery after N steps")
    recovery.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None, help="recovery's optimizer (adam)")
    recovery.add_argument("--lr", type=float, default=None, help="recovery's learning rate (default 3e-3)")
    recovery.add_argument("--batch", type=int, default=None, metavar="N", help="tuning samples per step (64)")
    recovery.add_argument(
        "--schedule",
        choices=list(SCHEDULES),
        default=None,
        help="when recovery prunes: " + "; ".join(f"{name}: {item.description}" for name, item in SCHEDULES.items()),
    )
    recovery.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="K",
        help=f"pruning steps of a gradual or soft schedule (default {DEFAULT_PRUNING_STEPS})",
    )
    recovery.add_argument(
        "--soft",
        action="store_const",
        const=True,
        default=None,
        help="soft pruning: pruned weights keep training and the masks are chosen again at each pruning step; only "
        "the last step is permanent",
    )

    inspect = commands.add_parser(
        "inspect", parents=[inputs], help="list the prunable layers with shapes, parameters and MACs"
    )
    inspect.add_argument("model", help="a sample name or an .onnx file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")

    squeeze = commands.add_parser(
        "compress", parents=[inputs, recovery], help="prune and/or quantize, measure, and export ONNX"
    )
    squeeze.add_argument("model", help="a sample name or an .onnx file")
    squeeze.add_argument(
        "--prune", type=float, default=None, metavar="AMOUNT", help="fraction of weights to zero, 0-0.99"
    )
    squeeze.add_argument(
        "--granularity",
        choices=list(GRANULARITIES),
        default=None,
        help="unstructured (zeros, default), channel (removed: faster) or block (residual blocks dropped)",
    )
    squeeze.add_argument("--criterion", choices=list(CRITERIA), default=None)
    squeeze.add_argument("--scope", choices=list(SCOPES), default=None)
    squeeze.add_argument("--seed", type=int, default=None, help="seed of the random criterion")
    squeeze.add_argument(
        "--drop-blocks",
        type=lambda text: [name for name in text.split(",") if name],
        default=None,
        metavar="ADD1,ADD2",
        help="block granularity: drop exactly these residual blocks (their Add node names)",
    )
    squeeze.add_argument(
        "--channel-multiple",
        type=int,
        default=None,
        metavar="N",
        help="round kept channel counts up to a multiple of N",
    )
    squeeze.add_argument("--bits", type=int, default=None, help="weight bits 2-8, or 32 for off (default)")
    squeeze.add_argument(
        "--override",
        action="append",
        default=None,
        metavar="LAYER=amount:A,bits:B|skip",
        help="one layer's own settings (repeatable), e.g. /fc/Gemm=bits:4 or /stem/stem.0/Conv=skip",
    )
    squeeze.add_argument(
        "--activations",
        choices=list(ACTIVATION_MODES),
        default=None,
        help="none (weight-only, default), dynamic or static int8 activations, or auto (picked per model)",
    )
    squeeze.add_argument(
        "--calibration",
        default=None,
        metavar="sample|random|PATH.npz",
        help="static: calibration inputs (default sample)",
    )
    squeeze.add_argument("--calib-method", choices=list(CALIBRATION_METHODS), default=None)
    squeeze.add_argument(
        "--keep-float", nargs="+", default=None, metavar="LAYER", help="layers (node names) left in float"
    )
    squeeze.add_argument(
        "--apply-recipe", type=Path, metavar="RECIPE.json", help="take settings from a recipe; flags override it"
    )
    squeeze.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT.onnx|OUT.zip",
        help="the export; over 2 GB an .onnx gets its weights beside it in OUT.onnx.data",
    )
    squeeze.add_argument("--report", type=Path, metavar="REPORT.json")
    squeeze.add_argument("--recipe", type=Path, metavar="RECIPE.json", help="where to write the recipe")
    squeeze.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    squeeze.add_argument(
        "--budget", type=float, default=LATENCY_BUDGET_S, metavar="SECONDS", help="latency time budget"
    )
    squeeze.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"ONNX Runtime intra-op threads for latency (default {LATENCY_THREADS})",
    )

    _flush_option(squeeze)

    sensitivity = commands.add_parser(
        "sensitivity",
        parents=[inputs],
        help="each prunable layer alone at several amounts and bit widths: the quality it loses",
    )
    sensitivity.add_argument("model")
    sensitivity.add_argument("--amounts", type=_floats, default=list(DEFAULT_AMOUNTS), metavar="A,B,...")
    sensitivity.add_argument("--bits", type=_ints, default=list(DEFAULT_BITS), metavar="B,C,...")
    sensitivity.add_argument("--json", type=Path, metavar="OUT.json", help="write the scan as JSON")

    finder = commands.add_parser(
        "search", parents=[inputs],
        help="automatic search (Optuna) for the cheapest export whose quality on the tuning data meets a constraint",
    )  # fmt: skip
    finder.add_argument("model")
    finder.add_argument("--objective", choices=list(OBJECTIVES), default="size",
                        help="; ".join(f"{name}: {item.description}" for name, item in OBJECTIVES.items()))  # fmt: skip
    finder.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                        help="the most accuracy (points) a setting may lose on the tuning part; needs labels")  # fmt: skip
    finder.add_argument("--min-quality", type=float, default=None, metavar="Q",
                        help="the least quality (the model's metric, e.g. cosine) on the tuning part")  # fmt: skip
    finder.add_argument("--budget", type=float, default=120.0, metavar="SECONDS", help="wall-clock budget (120)")
    finder.add_argument("--trials", type=int, default=None, metavar="N", help="stop after N trials in all")
    finder.add_argument("--seed", type=int, default=0)
    finder.add_argument("--sampler", choices=list(SAMPLERS), default="tpe",
                        help="tpe: Bayesian (Optuna's TPE); nsga2: genetic; random")  # fmt: skip
    finder.add_argument("--storage", default=None, metavar="URL",
                        help="an Optuna storage URL several machines share (default: SQLite in the data folder)")  # fmt: skip
    finder.add_argument("--study", default=None, metavar="NAME", help="the study's name (default: from the settings)")
    finder.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes (1)")
    finder.add_argument("--out", type=Path, metavar="OUT.onnx", help="the best feasible trial's export")
    finder.add_argument("--recipe", type=Path, metavar="RECIPE.json")
    finder.add_argument("--report", type=Path, metavar="REPORT.json")
    finder.add_argument("--csv", type=Path, metavar="OUT.csv", help="every trial of the study")
    _flush_option(finder)

    grid = commands.add_parser(
        "sweep", parents=[inputs], help="a grid of settings, each exported and measured; the Pareto front"
    )
    grid.add_argument("model")
    grid.add_argument("--prune", type=_floats, default=list(SWEEP_AMOUNTS), metavar="A,B,...")
    grid.add_argument("--bits", type=_ints, default=list(SWEEP_BITS), metavar="B,C,...")
    grid.add_argument("--granularity", default="unstructured", metavar="G[,G2]", help=", ".join(GRANULARITIES))
    grid.add_argument("--activations", choices=list(ACTIVATION_MODES), default="none")
    grid.add_argument(
        "--budget", type=float, default=SWEEP_BUDGET_S, metavar="SECONDS", help="latency budget per point"
    )
    grid.add_argument("--threads", type=int, default=None)
    grid.add_argument("--csv", type=Path, metavar="OUT.csv")

    spread = commands.add_parser(
        "allocate",
        parents=[inputs],
        help="spread a pruning target over the layers using the sensitivity scan; compare with uniform and global",
    )
    spread.add_argument("model")
    spread.add_argument("--target", type=float, default=None, metavar="AMOUNT", help="fraction of all prunable weights")
    spread.add_argument("--mean-bits", type=float, default=None, metavar="B", help="a mean weight bit width to spread")
    spread.add_argument("--bits", type=int, default=32)
    spread.add_argument("--recipe", type=Path, metavar="RECIPE.json", help="write the auto plan's recipe here")

    share = commands.add_parser(
        "report", parents=[inputs, recovery], help="a self-contained HTML report of a recipe applied to a model"
    )
    share.add_argument("model")
    share.add_argument("--recipe", type=Path, required=True, metavar="RECIPE.json")
    share.add_argument("--html", type=Path, required=True, metavar="OUT.html")
    share.add_argument("--no-latency", action="store_true")
    share.add_argument("--profile", action="store_true", help="add where the time goes: ONNX Runtime's profile")
    share.add_argument("--budget", type=float, default=LATENCY_BUDGET_S, metavar="SECONDS")
    share.add_argument("--threads", type=int, default=None)
    _flush_option(share)

    why = commands.add_parser(
        "profile",
        parents=[inputs],
        help="where ONNX Runtime spends its time, per op type, node and layer, in the original and the compressed "
        "model, with findings in words",
    )
    why.add_argument("model")
    why.add_argument("compressed", nargs="?", type=Path, metavar="COMPRESSED.onnx", help="or --recipe")
    why.add_argument("--recipe", type=Path, metavar="RECIPE.json", help="compress the model with this recipe")
    why.add_argument("--json", type=Path, metavar="OUT.json")
    why.add_argument("--budget", type=float, default=PROFILE_BUDGET_S, metavar="SECONDS",
                     help="seconds of profiled runs, interleaved")  # fmt: skip
    why.add_argument("--threads", type=int, default=None)
    _flush_option(why)

    bench = commands.add_parser(
        "bench", parents=[inputs], help="interleaved ONNX Runtime latency of one model or two side by side"
    )
    bench.add_argument("model")
    bench.add_argument("other", nargs="?")
    bench.add_argument("--budget", type=float, default=LATENCY_BUDGET_S, metavar="SECONDS")
    bench.add_argument("--threads", type=int, default=None)
    _flush_option(bench)
    return parser


def _flush_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--flush-denormals",
        action="store_true",
        help="time both models with denormal floats computed as zero (ONNX Runtime's session.set_denormal_as_zero; "
        "a masked attention's Softmax ran 10x faster so here): set it where you deploy too",
    )


def _listed(cast):
    """An argparse type for comma-separated numbers."""

    def parse(text: str) -> list:
        try:
            return [cast(item) for item in text.split(",") if item]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {cast.__name__}s separated by commas, got {text!r}") from None

    return parse


_floats, _ints = _listed(float), _listed(int)


def _sensitivity(args: argparse.Namespace) -> None:
    for amount in args.amounts:
        PruneConfig(amount)
    for bits in args.bits:
        if bits != FLOAT_BITS:
            QuantConfig(bits)
    if args.json is not None and not args.json.parent.is_dir():
        raise InvalidSettingError("the folder to write into does not exist", str(args.json))
    model = _load(args, args.model)
    started = time.perf_counter()
    result = cached_scan(model, tuple(args.amounts), tuple(bits for bits in args.bits if bits != FLOAT_BITS),
                         progress=_print_progress("scan"))  # fmt: skip
    _, apart = model.tuning_part(0)
    data = "tuning inputs, apart from the held-out set" if apart else "evaluation inputs (the model has no other data)"
    print(f"{model.name}: {result.metric} drop per layer alone (baseline {result.baseline:.4f}, "
          f"{result.samples} {data}; {time.perf_counter() - started:.1f} s)")  # fmt: skip
    width = max(len(layer) for layer in result.layers)
    print(" " * (width + 2) + "".join(f"{setting:>12}" for setting in result.settings))
    for layer, drops in zip(result.layers, result.drops, strict=True):
        print(f"  {layer:<{width}}" + "".join(f"{drop:>12.4f}" for drop in drops))
    if args.json:
        write_atomic(args.json, (json.dumps(result.to_dict(), indent=1) + "\n").encode())


def _sweep(args: argparse.Namespace) -> None:
    if args.csv is not None and not args.csv.parent.is_dir():
        raise InvalidSettingError("the folder to write into does not exist", str(args.csv))
    granularities = [name for name in args.granularity.split(",") if name]
    for granularity in granularities:
        PruneConfig(granularity=granularity)
    model = _load(args, args.model)
    started = time.perf_counter()
    points = sweep(model, args.prune, args.bits, granularities, args.activations, args.budget, args.threads,
                   progress=_print_progress("sweep"))  # fmt: skip
    print(f"{model.name}: {len(points)} points in {time.perf_counter() - started:.1f} s "
          f"(latency interleaved with the original, {args.budget:g} s each)")  # fmt: skip
    print(f"  {'granularity':<13}{'amount':>7}{'bits':>6}{points[0].metric if points else 'quality':>10}"
          f"{'size':>12}{'latency ms':>12}{'speed-up':>10}  front")  # fmt: skip
    for point in points:
        marks = ",".join(name for name, on in (("latency", point.front_latency), ("size", point.front_size)) if on)
        print(f"  {point.granularity:<13}{point.amount:>7g}{point.bits:>6}{point.quality:>10.4f}{point.size_bytes:>12,}"
              f"{point.latency_ms:>12.3f}{point.speedup:>9.2f}x  {marks}")  # fmt: skip
    best = best_on_front(points)
    if best:
        print(f"suggested: {best.granularity} {best.amount:g}, {best.bits} bits ({best.metric} {best.quality:.4f}, "
              f"{best.speedup:.2f}x)")  # fmt: skip
    if args.csv:
        write_atomic(args.csv, to_csv(points).encode())


def _search(args: argparse.Namespace) -> int:
    for path in (args.out, args.recipe, args.report, args.csv):
        if path is not None and not path.parent.is_dir():
            raise InvalidSettingError("the folder to write into does not exist", str(path))
    if args.out is not None:
        check_export_target(args.out)
    settings = SearchSettings(args.objective, args.max_drop, args.min_quality, args.budget, args.trials, args.seed,
                              args.sampler, args.storage, args.study, args.workers, args.flush_denormals)  # fmt: skip
    if settings.flush_denormals:
        flush_denormals_in_this_process()  # before the model's first session: every session after flushes too
    model = _load(args, args.model)
    unit = OBJECTIVES[settings.objective].unit
    shown = [math.inf]

    def heard(trial: Trial) -> None:
        if trial.feasible and trial.cost < shown[0]:
            shown[0] = trial.cost
            print(f"  trial {trial.number}: {trial.cost:.4g} {unit}, {trial.quality:.4f} on the tuning batch (best so far)",
                  file=sys.stderr)  # fmt: skip

    print(f"searching ({settings.sampler}, {settings.objective}, up to {settings.budget_s:g} s)...", file=sys.stderr)
    started = time.perf_counter()
    result = search(model, settings, _print_progress("search"), heard)
    judge = QUALITY_METRICS[result.metric]
    print(f"{model.name}: study {result.study} in {result.storage}, {len(result.trials)} trials "
          f"({time.perf_counter() - started:.1f} s this run)")  # fmt: skip
    print(f"constraint: {result.metric} on the tuning batch >= {judge.format(result.limit)} (the original: "
          f"{judge.format(result.baseline)})")  # fmt: skip
    for failure in result.failures:
        print(f"warning: {failure}; its trials are missing", file=sys.stderr)
    if args.csv:
        write_atomic(args.csv, result.to_csv().encode())
    best = result.best
    if best is None:
        closest = result.closest
        if closest is None:
            print("no trial finished: nothing to export")
        else:
            print(f"no trial met the constraint; the closest is trial {closest.number}: {result.metric} "
                  f"{judge.format(closest.quality)}, {judge.format(closest.drop)} short, {closest.cost:.4g} {unit}")  # fmt: skip
        return 1
    timed = f" ({best.timing})" if best.retimed else ""
    timed += ", timed with denormals flushed to zero" if settings.flush_denormals and best.retimed else ""
    print(f"best: trial {best.number}, {best.cost:.4g} {unit}{timed}, {result.metric} {judge.format(best.quality)} "
          f"on the tuning batch; {describe(best.recipe)}")  # fmt: skip
    compressed = compress(model, best.recipe)
    data = export_bytes(compressed)
    report = build_report(compressed, data, progress=_evaluation_progress(model))
    metric, value = report.quality
    print(
        f"held-out check: {metric} {judge.format(value)} on {model.eval_samples} held-out samples"
        + (f" (the original: {judge.format(report.accuracy.original)})" if report.accuracy and judge.percent else "")
    )
    if report.accuracy and settings.max_drop is not None:
        drop = 100 * (report.accuracy.original - report.accuracy.compressed)
        if drop > settings.max_drop:
            print(f"note: it drops {drop:.1f} points on the held-out part, more than the {settings.max_drop:g} allowed "
                  "on the tuning part: the model fits its tuning data better than new data")  # fmt: skip
    if args.out:
        save_export(data, args.out)
    if args.recipe:
        write_atomic(args.recipe, best.recipe.to_json().encode())
    if args.report:
        write_atomic(args.report, (json.dumps(report.to_dict(), indent=1) + "\n").encode())
    return 0


def _allocate(args: argparse.Namespace) -> None:
    if (args.target is None) == (args.mean_bits is None):
        raise InvalidSettingError("give either --target (a pruning amount) or --mean-bits")
    if args.mean_bits is not None:
        return _allocate_bits(args)
    PruneConfig(args.target)
    QuantConfig(args.bits)
    if args.recipe is not None and not args.recipe.parent.is_dir():
        raise InvalidSettingError("the folder to write into does not exist", str(args.recipe))
    model = _load(args, args.model)
    scan = cached_scan(model, progress=_print_progress("scan"))
    print(f"{model.name}: {args.target:.0%} of the prunable weights, three ways")
    for scored in compare_plans(model, scan, args.target, args.bits):
        plan = scored.plan
        print(f"  {plan.name:<8} {scored.metric} {scored.quality:.4f}, sparsity {scored.sparsity:.2%}")
        if plan.name == "auto":
            for node, amount in plan.amounts.items():
                print(f"    {node}: {amount:.1%}")
            if args.recipe:
                write_atomic(args.recipe, plan.recipe.to_json().encode())


def _allocate_bits(args: argparse.Namespace) -> None:
    model = _load(args, args.model)
    widths = allocate_bits(model, cached_scan(model, progress=_print_progress("scan")), args.mean_bits)
    overrides = tuple(LayerOverride(node, bits=bits) for node, bits in widths.items())
    auto = Recipe.for_model(model, PruneConfig(), QuantConfig(8), overrides)
    uniform = Recipe.for_model(model, PruneConfig(), QuantConfig(int(args.mean_bits)))
    print(f"{model.name}: a mean of {args.mean_bits:g} weight bits")
    for name, recipe in ((f"uniform {int(args.mean_bits)}-bit", uniform), ("auto", auto)):
        compressed = compress(model, recipe)
        metric, quality = report_on_export(compressed).quality
        print(f"  {name:<16} {metric} {quality:.4f}")
    for node, bits in widths.items():
        print(f"    {node}: {bits} bits")
    if args.recipe:
        write_atomic(args.recipe, auto.to_json().encode())


def _report(args: argparse.Namespace) -> None:
    if not args.html.parent.is_dir():
        raise InvalidSettingError("the folder to write into does not exist", str(args.html))
    model = _load(args, args.model, args.recipe)
    with tempfile.TemporaryDirectory(prefix="squeezelab-") as work:
        recipe = _read_recipe(args.recipe, model.sha256)
        recipe = replace(recipe, recover=_recover_settings(args, recipe.recover))
        compressed, data, latency = _export_and_time(model, recipe, args, Path(work))
        report = build_report(compressed, data, latency, progress=_evaluation_progress(model))
        where = None
        if args.profile:
            print("profiling (ONNX Runtime's profiler)...", file=sys.stderr)
            original, after = profile_against_original(
                model, data, threads=args.threads, flush_denormals=args.flush_denormals
            )
            where = compare(original, after, report.layers, recipe.quant.keep_float)
        write_atomic(args.html, render_html(report, where).encode())
    print(f"wrote {args.html} ({args.html.stat().st_size:,} bytes, opens offline)")


def _inspect(args: argparse.Namespace) -> None:
    model = _load(args, args.model)
    rows = [
        {
            "name": layer.name,
            "node": layer.node,
            "op_type": layer.op_type,
            "shape": list(layer.shape),
            "params": layer.params,
            "macs": model.macs[layer.name],
        }
        for layer in model.layers
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "model": model.name,
                    "description": model.description,
                    "sha256": model.sha256,
                    "prunable_params": model.prunable_params,
                    "layers": rows,
                },
                indent=2,
            )
        )
        return
    print(f"{model.name}: {model.description or model.source}")
    print(
        f"{len(rows)} prunable layers, {model.prunable_params:,} weights, {sum(r['macs'] for r in rows):,} MACs per sample"
    )
    width = max(len(row["node"]) for row in rows)
    for row in rows:
        shape = "x".join(map(str, row["shape"]))
        print(f"  {row['node']:<{width}}  {row['op_type']:<13} {shape:>16} {row['params']:>12,} {row['macs']:>15,}")


def _recipe_from_args(args: argparse.Namespace, model) -> Recipe:
    base = _read_recipe(args.apply_recipe, model.sha256) if args.apply_recipe else Recipe()
    # Without a recipe only the given flags are set, so defaults that depend on each other (scope on granularity)
    # resolve as they do everywhere else.
    prune = base.prune.to_dict() if args.apply_recipe else {}
    prune |= _given(args, amount="prune", criterion="criterion", scope="scope", seed="seed",
                    granularity="granularity", channel_multiple="channel_multiple", drop_blocks="drop_blocks")  # fmt: skip
    quant = base.quant.to_dict() if args.apply_recipe else {}
    quant |= _given(args, weight_bits="bits", activations="activations", calibration="calibration",
                    calib_method="calib_method", keep_float="keep_float")  # fmt: skip
    overrides = base.overrides
    if args.override:
        given = [LayerOverride.parse(text) for text in args.override]
        replaced = {override.layer for override in given}
        overrides = tuple(o for o in base.overrides if o.layer not in replaced) + tuple(given)
    recipe = Recipe.for_model(model, PruneConfig(**prune), QuantConfig(**quant), overrides)
    return replace(recipe, recover=_recover_settings(args, base.recover))


def _recover_settings(args: argparse.Namespace, recorded: RecoverConfig | None) -> RecoverConfig | None:
    """The recipe's recovery settings with the recovery flags given on top; None where neither asks for one."""
    flags = {"method": "recover", "seconds": "recover_seconds", "steps": "recover_steps", "optimizer": "optimizer",
             "lr": "lr", "schedule": "schedule", "pruning_steps": "steps", "soft": "soft", "batch": "batch"}  # fmt: skip
    given = _given(args, **flags)
    if recorded is None and "method" not in given:
        if given:
            raise InvalidSettingError(f"--{flags[next(iter(given))].replace('_', '-')} needs --recover METHOD")
        return None
    kept = recorded.to_dict() if recorded else {}
    if given.keys() & {"method", "steps"}:  # the recorded plan's length belongs to the recorded steps only
        kept.pop("schedule_steps", None)
    return RecoverConfig(**(kept | given))


def _schedule_words(info: RecoveryInfo) -> str:
    if info.schedule == "oneshot" and not info.soft:
        return ""
    return f"{'soft ' if info.soft else ''}{info.schedule} pruning in {info.pruning_steps} steps, "


def _given(args: argparse.Namespace, **settings: str) -> dict:
    """Setting name -> flag value, for the flags actually given on the command line."""
    return {name: getattr(args, flag) for name, flag in settings.items() if getattr(args, flag) is not None}


def _validate_settings(args: argparse.Namespace) -> None:
    """Settings checked before the (possibly slow) model load, so a typo fails at once."""
    if args.prune is not None:
        PruneConfig(amount=args.prune)
    if args.granularity is not None and args.criterion is not None:
        PruneConfig(criterion=args.criterion, granularity=args.granularity)
    if args.channel_multiple is not None:
        PruneConfig(channel_multiple=args.channel_multiple)
    if args.bits is not None:
        QuantConfig(args.bits)


def _compress(args: argparse.Namespace) -> None:
    _validate_settings(args)
    for path in (args.out, args.report, args.recipe):
        if path is not None and not path.parent.is_dir():
            raise InvalidSettingError("the folder to write into does not exist", str(path))
    check_export_target(args.out)  # before the (possibly long) work, not only when saving
    model = _load(args, args.model, args.apply_recipe)
    if model.external_data_folder is not None:  # minutes of work on gigabytes: say what is going on
        print(
            f"{model.prunable_params * 4 / 1e9:.2f} GB of weights stay on disk, memory-mapped from "
            f"{model.external_data_folder}; compressing, exporting and measuring...",
            file=sys.stderr,
        )
    recipe = _recipe_from_args(args, model)
    # an export over 2 GB is written here first (beside the output, so moving it into place is a rename)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".squeezelab-") as work:
        compressed, data, latency = _export_and_time(model, recipe, args, Path(work))
        report = build_report(compressed, data, latency, progress=_evaluation_progress(model))
        # Everything is computed before anything is written: a failure above leaves no file behind.
        written = save_export(data, args.out)
    if len(written) > 1:
        print(f"the export is over 2 GB: its weights are in {written[1]} (ONNX external data), beside {written[0]}")
    if args.recipe:
        write_atomic(args.recipe, replayable(recipe, compressed.recovery).to_json().encode())
    if args.report:
        write_atomic(args.report, (json.dumps(report.to_dict(), indent=1) + "\n").encode())
    _print_summary(report)


def _load(args: argparse.Namespace, source: str, recipe: Path | None = None):
    """The model, with the inputs' shapes and values its `recipe` recorded, then those given on the command line
    (which win)."""
    recorded = list(_parse_recipe(recipe).inputs) if recipe is not None else []
    given = [GivenInput.parse("shape", text) for text in args.shape] + [
        GivenInput.parse("value", text) for text in args.value
    ]
    model = load_model(source, given=merge_given(recorded + given))
    if args.data is not None:
        model = with_data(
            model,
            args.data,
            args.split,
            preprocess=args.preprocess,
            progress=_print_progress("reading the data and running the model on it"),
        )
        print(f"data: {model.data.describe()}", file=sys.stderr)
    elif args.preprocess:
        raise InvalidSettingError("is for images given with --data", "--preprocess")
    return with_metric(model, args.metric)


def _settings(text: str) -> dict[str, str]:
    """KEY=VALUE,... as a dict."""
    settings = {}
    for item in filter(None, text.split(",")):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
        settings[key.strip()] = value.strip()
    unknown = sorted(set(settings) - set(PREPROCESS_KEYS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown key {', '.join(unknown)}; use {', '.join(PREPROCESS_KEYS)}")
    return settings


def _evaluation_progress(model):
    """Progress of running the export on the user's held-out data (their own data can be thousands of images)."""
    return _print_progress("running the export on the held-out part") if model.data is not None else None


def _print_progress(what: str, points: list[tuple[int, float, float, float]] | None = None):
    """A progress callback that prints each new tenth to stderr, so long runs show they are alive; with the
    training curve's `points`, the latest one's step and losses too."""
    shown = [-1]

    def report(fraction: float) -> None:
        tenth = int(fraction * 10)
        if tenth > shown[0]:
            shown[0] = tenth
            step, loss, validation, _ = points[-1] if points else (None, None, None, None)
            where = f": step {step:,}, loss {loss:.4g}, validation loss {validation:.4g}" if step else ""
            print(f"  {what} {fraction:.0%}{where}", file=sys.stderr)

    return report


def _parse_recipe(path: Path) -> Recipe:
    """A recipe file, refused in one line if it is unreadable or invalid."""
    try:
        return Recipe.from_json(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidSettingError(error.strerror or "cannot read", str(path)) from None
    except SqueezeError as error:
        raise InvalidSettingError(error.reason, str(path)) from None


def _read_recipe(path: Path, model_sha256: str) -> Recipe:
    """A recipe file, refused in one line if it is unreadable, invalid, or made for another model."""
    recipe = _parse_recipe(path)
    if recipe.model_sha256 and recipe.model_sha256 != model_sha256:
        raise InvalidSettingError(f"the recipe was made for a different model ({recipe.model})", str(path))
    return recipe


def _export_and_time(model, recipe: Recipe, args: argparse.Namespace, work: Path):
    """Compress, export (with calibration progress; over 2 GB into `work`) and, unless --no-latency, time against
    the original."""
    compressed = compress(model, recipe)
    if recipe.recover is not None:
        settings = recipe.recover
        print(f"recovering accuracy ({settings.method}, up to {settings.seconds:g} s)...", file=sys.stderr)
        latest: list[tuple[int, float, float, float]] = []
        compressed = recover(compressed, settings, _print_progress("recovery", latest), latest.append)
    if ACTIVATION_MODES[compressed.activation_mode].calibrated:
        print("calibrating static int8 activations...", file=sys.stderr)
    data = export_model(compressed, work, _print_progress("calibration"))
    latency = None
    if not args.no_latency:
        print(f"measuring latency (interleaved, ~{args.budget:.0f} s)...", file=sys.stderr)
        latency = time_against_original(
            model, data, budget_s=args.budget, threads=args.threads, flush_denormals=args.flush_denormals
        )
    return compressed, data, latency


def _print_summary(report) -> None:
    totals, size = report.totals, report.size_bytes
    print(
        f"{report.model.name}: sparsity {totals['sparsity']:.2%} ({totals['zeros']:,}/{totals['params']:,} weights zero), "
        f"{report.settings['quant']['weight_bits']} bits"
    )
    print(
        f"size {size['original'].raw:,} -> {size['compressed'].raw:,} bytes; "
        f"gzip {size['original'].gzip_text()} -> {size['compressed'].gzip_text()}"
    )
    fid = report.fidelity
    agreement = f", top-1 agreement {fid.top1_agreement:.2%}" if fid.top1_agreement is not None else ""
    where = "held-out" if report.model.data else fid.inputs
    print(
        f"fidelity on {fid.samples} {where} inputs: cosine {fid.cosine_mean:.4f}{agreement}, SQNR {fid.sqnr_db:.1f} dB, "
        f"max |error| {fid.max_abs_error:.3g}"
    )
    for output in fid.outputs:
        print(f"  output {output.name}: cosine {output.cosine_mean:.4f}, SQNR {output.sqnr_db:.1f} dB")
    held_out = " held-out" if report.model.data else ""
    if report.accuracy:
        correct = report.accuracy
        top5 = (
            f"; top-5 {correct.top5_original:.2%} -> {correct.top5_compressed:.2%}"
            if correct.top5_compressed is not None
            else ""
        )
        chance = f" (at chance, {correct.chance:.1%}: the model no longer works)" if correct.at_chance else ""
        print(
            f"accuracy {correct.original:.2%} -> {correct.compressed:.2%}{chance}{top5} on {correct.samples}{held_out} "
            "labelled samples"
        )
    if report.targets:
        fit = report.targets
        print(
            f"against the targets on {fit.samples}{held_out} samples: MSE {fit.mse_original:.4g} -> "
            f"{fit.mse_compressed:.4g}, cosine {fit.cosine_original:.4f} -> {fit.cosine_compressed:.4f}"
        )
    metric, value = report.quality
    print(f"judged by {metric}: {value:.4f}")
    if report.recovery:
        info, judge = report.recovery, QUALITY_METRICS[report.recovery.metric]
        done = (
            f"{_schedule_words(info)}{info.steps} steps in {info.seconds:g} s on {info.tuning_samples:,} tuning "
            f"samples (best at step {info.best_step})"
            if RECOVERY_METHODS[info.method].trains
            else f"{info.steps} biases shifted in {info.seconds:g} s"
        )
        print(
            f"recovery: {info.method}, {done}; {metric}{held_out} {judge.format(info.before)} -> {judge.format(value)}"
        )
    if totals["macs_after"] != totals["macs"]:
        print(
            f"MACs per sample {totals['macs']:,} -> {totals['macs_after']:,} "
            f"({totals['macs'] / max(totals['macs_after'], 1):.2f}x fewer)"
        )
    for block in report.blocks:
        quality = f"accuracy {block.accuracy:.2%}" if block.accuracy is not None else f"cosine {block.cosine_mean:.4f}"
        print(
            f"block {block.name}: {'DROPPED' if block.dropped else 'kept'}; alone it costs {quality}, {block.macs:,} MACs"
        )
    if report.quantization:
        info = report.quantization
        print(f"quantization: {info.mode} ({info.reason}); weights {info.stored_as}; activations {info.activations}")
        if info.calibration:
            warning = " (random: accuracy may be off)" if info.calibration_is_random else ""
            print(f"  calibrated on {info.calibration}{warning}")
        if info.kernel_note:
            print(f"  note: {info.kernel_note}")
        worst = sorted((row for row in info.sqnr if row.output_db is not None), key=lambda row: row.output_db)[:3]
        if worst:
            print("  lowest output SQNR: " + ", ".join(f"{row.node} {row.output_db:.1f} dB" for row in worst))
    verdict = report.verdict
    print(f"expected speed: {verdict.summary}")
    for reason in verdict.reasons:
        print(f"  [{reason.effect}] {reason.text}")
    for node, reason in report.left_whole.items():
        print(f"left whole: {node}: {reason}")
    if report.collapsed_layers:
        print(f"collapsed (all weights zero): {', '.join(report.collapsed_layers)}")
    if report.latency_ms:
        _print_latency(
            ["original", "compressed"],
            [report.latency_ms.original, report.latency_ms.compressed],
            report.latency_ms.environment,
        )
        print(
            f"{measured_text(report.latency_ms)} Expected: {verdict.expectation}; {verdict_agreement(verdict.expectation, report.latency_ms)}."
        )
    for note in report.notes:
        print(f"note: {note}")


def _print_latency(labels, results, env) -> None:
    for label, result in zip(labels, results, strict=True):
        print(
            f"latency {label}: median {result.median:.3f} ms, p90 {result.p90:.3f} ms, spread {result.spread:.3f} ms, {result.runs} runs"
        )
    if len(results) == 2:
        print(f"speed-up (median ratio): {results[0].median / results[1].median:.2f}x")
    flushed = ", denormals flushed to zero" if env.flush_denormals else ""
    print(
        f"  ONNX Runtime {env.onnxruntime}, {env.threads} thread{'s' if env.threads != 1 else ''}{flushed}, {env.cpu}; flags: {' '.join(env.cpu_flags) or 'none found'}"
    )


def _bench(args: argparse.Namespace) -> None:
    model = _load(args, args.model)
    other = _runnable_beside(model, args.other) if args.other else None
    latency = time_against_original(
        model, other, threads=args.threads, budget_s=args.budget, flush_denormals=args.flush_denormals
    )
    results = [latency.original] + ([latency.compressed] if other is not None else [])
    _print_latency([model.name] + ([Path(args.other).name] if other is not None else []), results, latency.environment)


def _runnable_beside(model: Model, source: str) -> OnnxModel:
    """The model at `source` (an export, int8 included), to be run on `model`'s feed."""
    runnable, inputs = load_runnable(source)
    if inputs != set(model.latency_feed):
        raise InvalidSettingError(f"takes other inputs than {model.name}; cannot run both on the same feed", source)
    return runnable


def _profile(args: argparse.Namespace) -> None:
    if (args.compressed is None) == (args.recipe is None):
        raise InvalidSettingError("give the compressed model: COMPRESSED.onnx or --recipe RECIPE.json")
    if args.json is not None and not args.json.parent.is_dir():
        raise InvalidSettingError("the folder to write into does not exist", str(args.json))
    model = _load(args, args.model, args.recipe)
    stats, keep, verdict = None, (), None
    if args.recipe is not None:
        recipe = _read_recipe(args.recipe, model.sha256)
        compressed = compress(model, recipe)
        export = export_bytes(compressed)
        stats, keep, verdict = summarize_weights(compressed).layers, recipe.quant.keep_float, speed_verdict(compressed)
    else:
        export = _runnable_beside(model, str(args.compressed))
    print(f"profiling (ONNX Runtime's profiler, {args.budget:g} s of interleaved runs)...", file=sys.stderr)
    original, after = profile_against_original(
        model, export, threads=args.threads, budget_s=args.budget, flush_denormals=args.flush_denormals
    )
    comparison = compare(original, after, stats, keep)
    for line in profile_lines(comparison, verdict):
        print(line)
    if args.json is not None:
        write_atomic(args.json, (json.dumps(to_dict(comparison), indent=1) + "\n").encode())


COMMANDS = {
    "inspect": _inspect,
    "compress": _compress,
    "bench": _bench,
    "profile": _profile,
    "sensitivity": _sensitivity,
    "sweep": _sweep,
    "search": _search,
    "report": _report,
    "allocate": _allocate,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
    except SqueezeError as error:
        print(f"error: {error}", file=sys.stderr)
        if getattr(args, "verbose", False) and error.details:
            print(error.details, file=sys.stderr)
        return EXIT_USAGE
    return code or 0
