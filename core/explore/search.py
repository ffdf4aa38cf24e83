"""Automatic search for the cheapest export that keeps its quality: Optuna samples the recipe's own settings
(granularity, criterion, an amount and weight bits per group of layers, activation mode), each trial is compressed,
exported and judged on the *tuning* part of the data, and the best feasible trial is kept. The study lives in an
Optuna storage (SQLite in the user data folder by default, or any URL several machines share), so a search
resumes where it stopped and several workers search one study together.

Optuna rather than an optimiser of our own: it brings TPE and NSGA-II with constraints, seeded samplers, storages
that several processes and machines share, and optuna-dashboard to look at a study.

Cheap signals first: MACs and the export's size are read from the export; quality on a tuning batch is a few
ONNX Runtime runs; latency (objective `latency`) is measured briefly per feasible trial, interleaved with the
original and kept as the ratio of the two (a shared machine's drift cancels out), and again, longer and together, for
the finalists: a lucky short measurement does not win.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from core.compression.activations import ACTIVATION_MODES
from core.compression.export import export_bytes
from core.compression.pipeline import compress, resolve_activation_mode
from core.compression.pruning import CRITERIA
from core.compression.recipe import FLOAT_BITS, LayerOverride, PruneConfig, QuantConfig, Recipe
from core.data.quality import QUALITY_METRICS, metric_of
from core.errors import InvalidSettingError, UnsupportedModelError
from core.explore.snapshots import data_dir
from core.measure.benchmark import measure_latency
from core.measure.noise import CONFIDENCE, effect, speedup_interval
from core.measure.summaries import size_of
from core.model import Model
from core.onnx.runtime import flush_denormals_in_this_process
from core.onnx.sandbox import die_with_parent

MAX_GROUPS = 12  # layers searched together, in graph order: digits-cnn's 9 each alone, minilm's 36 in threes
BITS = (FLOAT_BITS, 8, 4)  # 2 bits wrecks every layer it touches here; 4 and 8 are both stored as int8
AMOUNT_STEP, MAX_AMOUNT = 0.05, 0.9
# The granularities searched (blocks: too coarse to tune per trial), each with its groups' amount parameter: of
# the layers' weights, or of the channels of the layers coupled with them (a coupled group spanning several runs
# takes the smallest of their amounts: see the channel granularity)
AMOUNT_PARAMS = {"unstructured": "amount {index}", "channel": "channels {index}"}
SPACE_VERSION = 2  # in the study's name: a study stored with another search space is not resumed into this one
TRIAL_SAMPLES = 512  # tuning samples each trial is judged on; the winner is checked on the whole tuning part
TRIAL_LATENCY_S, FINAL_LATENCY_S, FINALISTS = 0.3, 2.0, 3  # seconds per model per trial, per finalist; how many


@dataclass(frozen=True)
class Objective:
    description: str
    unit: str
    read: Callable[[Recipe, bytes, dict[str, int]], float] | None  # (recipe, export, macs) -> cost; None: timed


OBJECTIVES: dict[str, Objective] = {
    # gzip, as the report's "compressed" size: raw bytes do not shrink for zeros, nor below 8 bits (ONNX keeps
    # n-bit codes in int8), so raw size would leave the search only channels and 8-bit weights to try
    "size": Objective("the exported file gzipped (level 1)", "MB", lambda recipe, data, macs: gzip_mb(data)),
    "macs": Objective("multiply-accumulates per sample", "MMACs", lambda recipe, data, macs: sum(macs.values()) / 1e6),
    "latency": Objective(
        "ONNX Runtime latency of the export over the original's, timed interleaved", "x original", None
    ),
}


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    # the constraint reaches both through Trial.set_constraint; `group` lets TPE model each granularity's own
    # parameters together (Optuna calls it experimental)
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=12),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def gzip_mb(data: bytes) -> float:
    return size_of(data).gzip / 1e6


@dataclass(frozen=True)
class SearchSettings:
    objective: str = "size"
    max_drop: float | None = None  # accuracy points on the tuning part (a labelled metric)
    min_quality: float | None = None  # the metric's value on the tuning part
    budget_s: float = 120.0
    trials: int | None = None
    seed: int = 0
    sampler: str = "tpe"
    storage: str | None = None  # an Optuna storage URL; None: SQLite in the user data folder
    study: str | None = None  # None: named after the model, its data and these settings
    workers: int = 1
    # every session of the search's processes computes denormal floats as zero (FLUSH_DENORMALS): the process
    # must not have made a session before (the CLI sets it first thing)
    flush_denormals: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InvalidSettingError(f"unknown objective {self.objective!r}; use {', '.join(OBJECTIVES)}")
        if self.sampler not in SAMPLERS:
            raise InvalidSettingError(f"unknown sampler {self.sampler!r}; use {', '.join(SAMPLERS)}")
        if (self.max_drop is None) == (self.min_quality is None):
            raise InvalidSettingError("give one constraint: --max-drop POINTS (with labels) or --min-quality Q")
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:
            raise InvalidSettingError(f"--max-drop is in accuracy points, 0-100; got {self.max_drop}")
        if not 0 < self.budget_s <= 24 * 3600:
            raise InvalidSettingError(f"--budget must be in (0, 86400] seconds; got {self.budget_s}")
        if self.trials is not None and self.trials < 1:
            raise InvalidSettingError(f"--trials must be at least 1; got {self.trials}")
        if not 1 <= self.workers <= 64:
            raise InvalidSettingError(f"--workers must be 1-64; got {self.workers}")


@dataclass(frozen=True)
class Trial:
    number: int
    recipe: Recipe
    cost: float  # the objective, in its unit
    quality: float  # on the tuning batch
    feasible: bool
    drop: float  # how far from the constraint (<= 0 meets it), in the constraint's own unit
    worker: str = ""
    speedup_interval: tuple[float, float] | None = None  # latency: a finalist's, timed again for longer

    @property
    def retimed(self) -> bool:
        return self.speedup_interval is not None

    @property
    def timing(self) -> str:
        """A finalist's speed-up in words, its interval and what the noise rule makes of it."""
        if self.speedup_interval is None:
            return ""
        low, high = self.speedup_interval
        found = effect(low, high)
        verdict = "no measurable difference" if found == "no faster" else found
        return (f"{1 / self.cost:.2f}x, timed again with the finalists: {CONFIDENCE:.0%} interval {low:.2f}-"
                f"{high:.2f}x, {verdict}")  # fmt: skip


@dataclass
class SearchResult:
    study: str
    storage: str
    objective: str
    metric: str
    baseline: float  # the original's quality on the tuning batch
    limit: float  # the lowest quality that meets the constraint
    trials: list[Trial] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "worker N: why it stopped", for workers that did

    @property
    def best(self) -> Trial | None:
        """The cheapest feasible trial (for latency, of the finalists timed again)."""
        feasible = [trial for trial in self.trials if trial.feasible]
        feasible = [trial for trial in feasible if trial.retimed] or feasible
        return min(feasible, key=lambda trial: (trial.cost, -trial.quality)) if feasible else None

    @property
    def closest(self) -> Trial | None:
        """Where nothing is feasible: the trial nearest the constraint."""
        return min(self.trials, key=lambda trial: trial.drop) if self.trials else None

    def front(self) -> list[Trial]:
        """The trials no other beats on both cost and quality."""
        return [
            trial
            for trial in self.trials
            if not any(
                other.cost <= trial.cost
                and other.quality >= trial.quality
                and (other.cost < trial.cost or other.quality > trial.quality)
                for other in self.trials
            )  # fmt: skip
        ]

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["trial", "worker", OBJECTIVES[self.objective].unit, self.metric, "feasible", "retimed",
                         "recipe"])  # fmt: skip
        for trial in self.trials:
            recipe = json.dumps(json.loads(trial.recipe.to_json()), separators=(",", ":"))
            writer.writerow([trial.number, trial.worker, f"{trial.cost:.6g}", f"{trial.quality:.6g}", trial.feasible,
                             trial.retimed, recipe])  # fmt: skip
        return out.getvalue()


def layer_groups(model: Model) -> list[list[str]]:
    """The prunable layers in graph order, cut into at most MAX_GROUPS runs of neighbours."""
    nodes = [layer.node for layer in model.layers]
    count = min(MAX_GROUPS, len(nodes))
    return [nodes[len(nodes) * index // count : len(nodes) * (index + 1) // count] for index in range(count)]


def recipe_of(model: Model, params: dict, groups: list[list[str]]) -> Recipe:
    """A trial's parameters as a recipe of the model's."""
    granularity = params["granularity"]
    bits = {node: params[f"bits {index}"] for index, group in enumerate(groups) for node in group}
    overrides = []
    quantized = [width for width in bits.values() if width != FLOAT_BITS]
    for index, group in enumerate(groups):
        amount = params.get(AMOUNT_PARAMS[granularity].format(index=index))
        if not amount and granularity != "channel":
            amount = None  # 0: the recipe's own; a channel group's 0 is kept, to hold its coupled group at 0
        for node in group:
            width = bits[node] if quantized else None  # 32: this layer float, the others quantized
            if amount is not None or width:
                overrides.append(LayerOverride(node, amount=amount, bits=width))
    activations = params.get("activations", "none") if quantized else "none"
    criterion = params.get(f"criterion {granularity}", _criteria(granularity)[0])
    prune = PruneConfig(0.0, criterion, granularity=granularity)
    quant = QuantConfig(min(quantized) if quantized else FLOAT_BITS, activations)
    return Recipe.for_model(model, prune, quant, tuple(overrides))


def _suggest(trial: optuna.Trial, model: Model, settings: SearchSettings, groups: list[list[str]]) -> dict:
    granularity = trial.suggest_categorical("granularity", list(AMOUNT_PARAMS))
    criteria = _criteria(granularity)
    if len(criteria) > 1:  # a parameter of its own per granularity: each has its own criteria
        trial.suggest_categorical(f"criterion {granularity}", criteria)
    for index in range(len(groups)):
        trial.suggest_float(AMOUNT_PARAMS[granularity].format(index=index), 0.0, MAX_AMOUNT, step=AMOUNT_STEP)
        trial.suggest_categorical(f"bits {index}", list(BITS))
    if settings.objective == "latency":
        trial.suggest_categorical("activations", _activation_modes(model))
    return trial.params


def _criteria(granularity: str) -> list[str]:
    """The criteria that rank by what the weights (or activations) say; random ranks nothing."""
    return [name for name, item in CRITERIA.items() if item.applies_to(granularity) and name != "random"]


def _activation_modes(model: Model) -> list[str]:
    modes = ["none"]
    for mode in ("dynamic", "static"):
        if ACTIVATION_MODES[mode].int8 and resolve_activation_mode(model, mode)[0] == mode:
            modes.append(mode)
    return modes


def _seeds(groups: list[list[str]], activations: str | None) -> list[dict]:
    """What the tool already knows, tried first: the uniform grid's corners (nothing, 8-bit weights, half the
    weights or channels, both). `activations`: the mode 8-bit corners use (latency only; None otherwise)."""
    seeds = []
    for granularity, amount in (("unstructured", 0.0), ("unstructured", 0.5), ("channel", 0.25), ("channel", 0.5)):
        for width in (FLOAT_BITS, 8):
            params: dict = {"granularity": granularity}
            for index in range(len(groups)):
                params[AMOUNT_PARAMS[granularity].format(index=index)] = amount
                params[f"bits {index}"] = width
            if activations is not None:
                params["activations"] = activations if width != FLOAT_BITS else "none"
            seeds.append(params)
    return seeds


ALLOCATION_TARGETS = (0.5, 0.75, 0.9)  # the sensitivity allocation's plans queued, at 8 and 4 bits
SCAN_SHARE = 0.25  # of the budget, at most, for a sensitivity scan not cached yet (minilm's takes 5 minutes here)


def _allocated(model: Model, groups: list[list[str]], activations: str | None, seconds: float) -> list[dict]:
    """The sensitivity allocation's per-layer amounts (from the scan of the tuning part, cached on disk), averaged
    over each group, at 8 and 4 bits: what the tool would suggest without a search. None where the scan does not
    finish in `seconds`."""
    from core.explore.allocation import allocate
    from core.explore.sensitivity import cached_scan

    deadline = time.monotonic() + seconds
    scan = cached_scan(model, should_stop=lambda: time.monotonic() > deadline)
    if not scan.complete:
        return []
    seeds = []
    for target in ALLOCATION_TARGETS:
        amounts = allocate(model, scan, target)
        for width in (8, 4):
            params: dict = {"granularity": "unstructured"}
            for index, group in enumerate(groups):
                mean = sum(amounts.get(node, 0.0) for node in group) / len(group)
                params[f"amount {index}"] = min(MAX_AMOUNT, round(round(mean / AMOUNT_STEP) * AMOUNT_STEP, 2))
                params[f"bits {index}"] = width
            if activations is not None:
                params["activations"] = activations
            seeds.append(params)
    return seeds


def _seed_activations(model: Model, objective: str) -> str | None:
    """For latency, the int8 activation mode the tool would pick itself (`auto`), where it has one: weights-only
    quantization is never faster, so corners without it would only teach the search that quantizing is slow."""
    if objective != "latency":
        return None
    modes = _activation_modes(model)
    chosen = resolve_activation_mode(model, "auto")[0]
    return chosen if chosen in modes else modes[-1]


@dataclass(frozen=True)
class Judge:
    """Quality on a batch of the tuning part, against the original's outputs on it."""

    metric: str
    inputs: dict
    reference: object
    data: object
    baseline: float
    limit: float

    @classmethod
    def of(cls, model: Model, settings: SearchSettings) -> Judge:
        part = model.separate_tuning_part(TRIAL_SAMPLES, "search judges each setting")
        judge = metric_of(model)
        if settings.max_drop is not None and not judge.percent:
            raise InvalidSettingError(
                f"--max-drop is in accuracy points and this model is judged by {judge.name}: use --min-quality"
            )
        reference = model.outputs_of(model.runnable, inputs=part.inputs)[0]
        baseline = judge.score(reference, reference, part)
        limit = baseline - settings.max_drop / 100 if settings.max_drop is not None else settings.min_quality
        return cls(judge.name, part.inputs, reference, part, baseline, limit)

    def quality(self, model: Model, export: bytes) -> float:
        outputs = model.outputs_of(export, inputs=self.inputs)[0]
        return float(QUALITY_METRICS[self.metric].score(self.reference, outputs, self.data))


def _quiet() -> None:
    """Optuna's per-trial log lines and its note that `group` is experimental: the CLI prints its own progress."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage() -> str:
    return f"sqlite:///{data_dir() / 'search.db'}"


def study_name(model: Model, settings: SearchSettings) -> str:
    data = model.data.sha256 if model.data else "samples"
    key = json.dumps([model.sha256, data, settings.objective, settings.max_drop, settings.min_quality,
                      settings.sampler, settings.seed, SPACE_VERSION]
                     + (["flushed"] if settings.flush_denormals else []))  # fmt: skip
    return f"{model.name}-{settings.objective}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # several local workers write to one file: wait for the lock rather than fail
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def search(
    model: Model,
    settings: SearchSettings,
    progress: Callable[[float], None] | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SearchResult:
    """Runs the study (with `settings.workers` local workers) until its budget or trials are spent or
    `should_stop()`, and returns every trial of it, earlier runs' included."""
    _quiet()
    if settings.flush_denormals and not flush_denormals_in_this_process():
        raise InvalidSettingError(
            "denormals can be flushed only from a process's first ONNX Runtime session: "
            "run the search from the CLI with --flush-denormals"
        )
    url = settings.storage or default_storage()
    name = settings.study or study_name(model, settings)
    judge = Judge.of(model, settings)
    groups = layer_groups(model)
    study = optuna.create_study(
        study_name=name, storage=_storage(url), sampler=SAMPLERS[settings.sampler](settings.seed),
        direction="minimize", load_if_exists=True,
    )  # fmt: skip
    if any(trial.params.get("granularity") == "channel" and "amount" in trial.params for trial in study.trials):
        raise InvalidSettingError(
            f"study {name} holds trials of an older search space (one channel amount for every layer): "
            "give another --study"
        )
    started = time.monotonic()
    if not study.trials:
        activations = _seed_activations(model, settings.objective)
        allocated = _allocated(model, groups, activations, SCAN_SHARE * settings.budget_s)
        for params in _seeds(groups, activations) + allocated:
            study.enqueue_trial(params, skip_if_exists=True)
    spec = _ModelSpec.of(model)
    helpers = [
        # not daemons: a worker runs a user's model in sandbox children of its own; it dies with this process
        _CONTEXT.Process(target=_worker, args=(spec, url, name, settings, number, os.getpid()))
        for number in range(1, settings.workers)
    ]
    for helper in helpers:
        helper.start()
    try:
        _optimize(study, model, settings, judge, groups, "0", started, progress, on_trial, should_stop)
    finally:
        for helper in helpers:
            helper.join(max(1.0, settings.budget_s - (time.monotonic() - started)) + 60)
            if helper.is_alive():
                helper.kill()
    if OBJECTIVES[settings.objective].read is None:
        retime_finalists(study, model, groups, settings.flush_denormals)
    return collect(study, model, settings, judge, url)


_CONTEXT = multiprocessing.get_context("spawn")
FAILED_PREFIX = "worker failed: "  # a study user attribute per worker that stopped on an error
RETIMED_PREFIX = "retimed trial "  # a study user attribute per finalist: [latency ratio, speed-up interval low, high]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@dataclass(frozen=True)
class _ModelSpec:
    """How a worker loads the model again: its source, the inputs given at load, and the data file and split."""

    source: str
    given: tuple
    data: tuple | None  # (path, tuning fraction, seed)
    metric: str | None

    @classmethod
    def of(cls, model: Model) -> _ModelSpec:
        data = (model.data.path, model.data.tuning_fraction, model.data.seed) if model.data else None
        return cls(model.source.removeprefix("sample:"), model.given_inputs, data, model.metric)

    def load(self) -> Model:
        from core.data.datasets import with_data
        from core.data.quality import with_metric
        from core.load.sources import load_model
        from core.onnx.inputs import merge_given

        model = load_model(self.source, given=merge_given(list(self.given)))
        if self.data is not None:
            path, fraction, seed = self.data
            model = with_data(model, Path(path), fraction, seed)
        return with_metric(model, self.metric)


def _worker(spec: _ModelSpec, url: str, name: str, settings: SearchSettings, number: int, parent: int) -> None:
    """Another local worker: the same study, from the same storage. A failure is written into the study, where the
    search reports it (the worker's own output goes nowhere)."""
    die_with_parent(parent)
    _quiet()
    if settings.flush_denormals:
        flush_denormals_in_this_process()  # before the model's sessions
    study = optuna.load_study(study_name=name, storage=_storage(url),
                              sampler=SAMPLERS[settings.sampler](settings.seed + number))  # fmt: skip
    try:
        model = spec.load()
        _optimize(study, model, settings, Judge.of(model, settings), layer_groups(model), str(number), time.monotonic())
    except Exception as error:  # noqa: BLE001 - reported to the user through the study
        study.set_user_attr(f"{FAILED_PREFIX}{number}", f"{type(error).__name__}: {error}".splitlines()[0])


def _optimize(
    study: optuna.Study,
    model: Model,
    settings: SearchSettings,
    judge: Judge,
    groups: list[list[str]],
    worker: str,
    started: float,
    progress: Callable[[float], None] | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial, model, settings, groups)
        recipe = recipe_of(model, params, groups)
        compressed = compress(model, recipe)
        data = export_bytes(compressed)
        quality = judge.quality(model, data)
        violation = judge.limit - quality
        read = OBJECTIVES[settings.objective].read
        if read is not None:
            cost = read(recipe, data, dict(compressed.macs))
        elif violation <= 0:  # timed only where it could win
            (original, measured), _ = measure_latency([model.runnable, data], model.latency_feed, budget_s=2 *
                                                      TRIAL_LATENCY_S, min_runs=5,
                                                      flush_denormals=settings.flush_denormals)  # fmt: skip
            cost = measured.median / original.median
        else:
            cost = math.inf
        trial.set_constraint("quality", violation)  # <= 0: feasible
        trial.set_user_attr("violation", violation)
        trial.set_user_attr("quality", quality)
        trial.set_user_attr("worker", worker)
        if on_trial is not None:
            on_trial(Trial(trial.number, recipe, cost, quality, violation <= 0, violation, worker))
        return cost

    def check(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        spent = (time.monotonic() - started) / settings.budget_s
        if progress is not None:
            done = len(study.trials) / settings.trials if settings.trials else 0.0
            progress(min(1.0, max(spent, done)))
        if (should_stop is not None and should_stop()) or spent >= 1:
            study.stop()

    callbacks = [check]
    if settings.trials:  # trials in all, every worker's (and earlier runs') counted; not the queued grid corners
        callbacks.append(optuna.study.MaxTrialsCallback(settings.trials, states=FINISHED))
        if len(study.get_trials(deepcopy=False, states=FINISHED)) >= settings.trials:
            return
    remaining = settings.budget_s - (time.monotonic() - started)
    study.optimize(objective, timeout=max(remaining, 0.1), callbacks=callbacks,
                   catch=(UnsupportedModelError, InvalidSettingError))  # fmt: skip


def retime_finalists(study: optuna.Study, model: Model, groups: list[list[str]], flush: bool = False) -> None:
    """The FINALISTS fastest feasible trials timed again, together with the original, FINAL_LATENCY_S each: the
    per-trial timing is short, and the fastest of many short timings is partly luck. Kept in the study."""
    feasible = [
        frozen
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if frozen.user_attrs.get("violation", math.inf) <= 0 and math.isfinite(frozen.value)
    ]
    finalists = sorted(feasible, key=lambda frozen: frozen.value)[:FINALISTS]
    if not finalists:
        return
    exports = [export_bytes(compress(model, recipe_of(model, frozen.params, groups))) for frozen in finalists]
    (original, *measured), _ = measure_latency([model.runnable, *exports], model.latency_feed, budget_s=FINAL_LATENCY_S
                                               * (len(exports) + 1), min_runs=20, flush_denormals=flush)  # fmt: skip
    for frozen, stats in zip(finalists, measured, strict=True):
        low, high = speedup_interval(original.samples, stats.samples)
        study.set_user_attr(f"{RETIMED_PREFIX}{frozen.number}", [stats.median / original.median, low, high])


def collect(study: optuna.Study, model: Model, settings: SearchSettings, judge: Judge, url: str) -> SearchResult:
    groups = layer_groups(model)
    result = SearchResult(study.study_name, url, settings.objective, judge.metric, judge.baseline, judge.limit)
    attrs = study.user_attrs  # one read: each is a storage query
    result.failures = [f"worker {key.removeprefix(FAILED_PREFIX)}: {why}" for key, why in attrs.items()
                       if key.startswith(FAILED_PREFIX)]  # fmt: skip
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        violation = frozen.user_attrs.get("violation", math.inf)
        retimed = attrs.get(f"{RETIMED_PREFIX}{frozen.number}")
        result.trials.append(
            Trial(
                frozen.number,
                recipe_of(model, frozen.params, groups),
                float(frozen.value if retimed is None else retimed[0]),
                frozen.user_attrs.get("quality", math.nan),
                violation <= 0,
                violation,
                frozen.user_attrs.get("worker", ""),
                None if retimed is None else (retimed[1], retimed[2]),
            )  # fmt: skip
        )
    return result
