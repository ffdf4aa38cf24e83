"""Every st.cache_* of the app lives here.

What these return is shared by every browser session, so it is read-only: models keep their weights in
read-only arrays, results are frozen dataclasses and bytes. Keys are plain strings (a model source and a
recipe's JSON), never live objects.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st

from core import (
    Compressed,
    Latency,
    Model,
    PruneConfig,
    Recipe,
    Report,
    WeightSummary,
    build_report,
    compress,
    export_model,
    load_model,
    prepare_index,
    summarize_weights,
)
from core.compression.export import export_bytes, write_zip
from core.compression.granularities import Index
from core.compression.recover import recover
from core.data.datasets import DEFAULT_TUNING_FRACTION, with_data
from core.data.quality import with_metric
from core.errors import InvalidSettingError
from core.explore.allocation import ScoredPlan, compare_plans
from core.explore.sensitivity import cached_scan
from core.load.files import atomic_path
from core.load.sources import inputs_to_set as core_inputs_to_set
from core.measure.report import SizeStats
from core.measure.summaries import size_of
from core.onnx.inputs import DeclaredInput, GivenInput
from core.onnx.runtime import OnnxModel

# resnet18 holds ~100 MB per result (float weights + export); these bounds keep a busy server under a few GB.
MAX_MODELS = 4
MAX_INDEXES = 8
MAX_RESULTS = 16
# Each setting is judged live on as many evaluation samples as the original runs in this time (at least
# LIVE_AT_LEAST): minilm's 32 sentences took 0.65 s a move, a user's 2,000 images a minute; all of them on request.
LIVE_EVALUATION_S = 0.25
LIVE_AT_LEAST = 8


@dataclass(frozen=True, eq=False)
class Live:
    """The fast half of a result: the compressed weights and what they tell without running the model."""

    compressed: Compressed
    summary: WeightSummary


@dataclass(frozen=True, eq=False)
class Exported:
    """The slow half: the exact model the user downloads and the report measured on it. `data` is the ONNX
    bytes, or for an export over 2 GB the path of its model.onnx with model.onnx.data beside it (removed when
    the entry leaves the cache)."""

    data: OnnxModel
    report: Report


@dataclass(frozen=True)
class DataChoice:
    """The user's data for a model, as the sidebar's Data section sets it."""

    path: str
    split: float = DEFAULT_TUNING_FRACTION
    preprocess: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, for images


def model_key(
    source: str, given: tuple[GivenInput, ...] = (), data: DataChoice | None = None, metric: str | None = None
) -> str:
    """What the page and every cache below know a model by: its source, and the inputs' shapes and values the user
    set in the Inputs panel (the same file with other inputs is another model: its evaluation inputs differ), the
    data the user gave, and the metric it is judged by."""
    extra = {}
    if given:
        extra["inputs"] = [entry.to_dict() for entry in given]
    if data is not None:
        extra["data"] = {"path": data.path, "split": data.split, "preprocess": dict(data.preprocess)}
    if metric is not None:
        extra["metric"] = metric
    return source if not extra else source + "\n" + json.dumps(extra, sort_keys=True)


def source_of(key: str) -> str:
    return key.partition("\n")[0]


def _parts(key: str) -> tuple[str, tuple[GivenInput, ...], DataChoice | None, str | None]:
    source, _, extra_text = key.partition("\n")
    extra = json.loads(extra_text) if extra_text else {}
    given = tuple(GivenInput.from_dict(entry) for entry in extra.get("inputs", []))
    data = extra.get("data")
    choice = (
        None if data is None else DataChoice(data["path"], data["split"], tuple(sorted(data["preprocess"].items())))
    )
    return source, given, choice, extra.get("metric")


@st.cache_resource(max_entries=MAX_MODELS, show_spinner=False)
def _loaded(key: str, _workdir: str | None = None) -> Model:
    """A model without the user's data, judged by the key's metric."""
    source, given, _, metric = _parts(key)
    if metric is not None:
        return with_metric(_loaded(model_key(source, given), _workdir), metric)
    return load_model(source, Path(_workdir) if _workdir else None, {entry.name: entry for entry in given})


# Models with the user's data are cached by hand: reading the data reports progress to the page (see `exported`).
_WITH_DATA: OrderedDict[str, Model] = OrderedDict()
_WITH_DATA_LOCK = threading.Lock()


def model(key: str, _workdir: str | None = None, progress: Callable[[float], None] | None = None) -> Model:
    """`key`: see `model_key`. `_workdir`: where a zip upload is extracted, the uploading session's own folder.
    `progress` hears how far reading the user's data has got, the first time."""
    source, given, data, metric = _parts(key)
    if data is None:
        return _loaded(key, _workdir)
    with _WITH_DATA_LOCK:
        cached = _WITH_DATA.get(key)
    if cached is not None:
        return cached
    if metric is not None:
        loaded = with_metric(model(model_key(source, given, data), _workdir, progress), metric)
    else:
        base = _loaded(model_key(source, given), _workdir)
        loaded = with_data(base, Path(data.path), data.split, preprocess=dict(data.preprocess), progress=progress)
    with _WITH_DATA_LOCK:
        loaded = _WITH_DATA.setdefault(key, loaded)  # another session may have read it meanwhile: keep one
        _WITH_DATA.move_to_end(key)
        while len(_WITH_DATA) > 2 * MAX_MODELS:
            _WITH_DATA.popitem(last=False)
    return loaded


@st.cache_data(max_entries=MAX_MODELS, show_spinner=False)
def inputs_to_set(source: str) -> list[DeclaredInput]:
    return core_inputs_to_set(source)


@st.cache_resource(max_entries=MAX_MODELS, show_spinner=False)
def original_summary(source: str) -> WeightSummary:
    return summarize_weights(compress(model(source), Recipe()))


@st.cache_resource(max_entries=MAX_INDEXES, show_spinner=False)
def prune_index(source: str, granularity: str, criterion: str, scope: str, seed: int) -> Index:
    """The one-time ranking per model and criterion; every amount afterwards is a selection against it."""
    return prepare_index(model(source), Recipe(PruneConfig(0.0, criterion, scope, seed, granularity)))


@st.cache_resource(max_entries=MAX_RESULTS, show_spinner=False)
def live(source: str, recipe_json: str) -> Live:
    recipe = Recipe.from_json(recipe_json)
    settings = recipe.prune
    index = None
    if settings.amount > 0:
        index = prune_index(source, settings.granularity, settings.criterion, settings.scope, settings.seed)
    compressed = compress(model(source), recipe, index)
    return Live(compressed, summarize_weights(compressed))


@st.cache_resource(max_entries=MAX_RESULTS, show_spinner=False)
def allocation(source: str, target: float) -> list[ScoredPlan]:
    """The uniform, global and auto plans for one target, each compressed and scored, on the model's cached scan."""
    loaded = model(source)
    return compare_plans(loaded, cached_scan(loaded), target)


@st.cache_resource(max_entries=MAX_MODELS, show_spinner=False)
def evaluated(source: str) -> Model:
    """The model on the evaluation samples the page judges a setting on live (`Model.evaluated_within`)."""
    return model(source).evaluated_within(LIVE_EVALUATION_S, LIVE_AT_LEAST)


# Exports are cached by hand rather than with st.cache_resource: building one reports calibration progress to
# the page, and Streamlit cannot replay page elements drawn from inside a cached function.
_EXPORTS: OrderedDict[tuple[str, str, bool], Exported] = OrderedDict()
_EXPORTS_LOCK = threading.Lock()


def exported(
    source: str, recipe_json: str, progress: Callable[[float], None] | None = None, every_sample: bool = False
) -> Exported:
    """The export and its report, shared by every session; `progress` hears how far static calibration has got.
    The report judges the export on the live evaluation samples (`evaluated`), or on `every_sample`."""
    key = (source, recipe_json, every_sample)
    with _EXPORTS_LOCK:
        if key in _EXPORTS:
            _EXPORTS.move_to_end(key)
            return _EXPORTS[key]
    result = live(source, recipe_json)
    # the folder is created only for an export over 2 GB
    folder = Path(tempfile.gettempdir()) / f"squeezelab-export-{uuid.uuid4().hex}"
    try:
        data = export_model(result.compressed, folder, progress)
        # the gzip size comes later (`gzip_size`): it took longer than the rest of a slider move on resnet18
        judged_on = None if every_sample else evaluated(source)
        report = build_report(result.compressed, data, summary=result.summary, gzip=False, judged_on=judged_on)
        value = Exported(data, report)
    except BaseException:  # a rerun stops the script mid-export too: nothing of this export may stay on disk
        _remove(folder)
        raise
    dropped = [folder]  # what leaves the cache: removed below, outside the lock (a zip may be being written)
    with _EXPORTS_LOCK:
        if key in _EXPORTS:  # another session built the same export meanwhile: keep one
            value = _EXPORTS[key]
        else:
            _EXPORTS[key] = value
            dropped = []
        while len(_EXPORTS) > MAX_RESULTS:
            _, evicted = _EXPORTS.popitem(last=False)
            if isinstance(evicted.data, Path):
                dropped.append(evicted.data.parent)
    for old in dropped:
        _remove(old)
    return value


_GZIP_SIZES: OrderedDict[tuple[str, str], SizeStats] = OrderedDict()


def gzip_size(
    source: str, recipe_json: str, progress: Callable[[float], None] | None = None, every_sample: bool = False
) -> SizeStats:
    """The export's raw and gzip size, measured once per export. `progress` may raise (the page moving on to a new
    setting stops it between slices); nothing is kept then."""
    key = (source, recipe_json)
    with _EXPORTS_LOCK:
        if key in _GZIP_SIZES:
            return _GZIP_SIZES[key]
    size = size_of(exported(source, recipe_json, every_sample=every_sample).data, progress)
    with _EXPORTS_LOCK:
        _GZIP_SIZES[key] = size
        while len(_GZIP_SIZES) > MAX_RESULTS:
            _GZIP_SIZES.popitem(last=False)
    return size


def complete_report(source: str, recipe_json: str, measured: Latency | None, every_sample: bool) -> Report:
    """The export's report with what the page adds after it: the gzip size, and latency once measured."""
    report = exported(source, recipe_json, every_sample=every_sample).report
    sizes = report.size_bytes | {"compressed": gzip_size(source, recipe_json, every_sample=every_sample)}
    return replace(report, size_bytes=sizes, latency_ms=measured or report.latency_ms)


_RECOVERED: OrderedDict[tuple[str, str], Exported] = OrderedDict()


def recovered(
    source: str,
    recipe_json: str,
    progress: Callable[[float], None] | None = None,
    on_point: Callable[[tuple[int, float, float, float]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Exported:
    """The recipe's export with its accuracy recovered (`recipe.recover`), and its report on every held-out sample:
    minutes of training, so kept until MAX_RESULTS newer ones push it out (a stopped run is not kept: the recipe
    asks for the whole budget)."""
    key = (source, recipe_json)
    with _EXPORTS_LOCK:
        if key in _RECOVERED:
            return _RECOVERED[key]
    recipe = Recipe.from_json(recipe_json)
    base = live(source, replace(recipe, recover=None).to_json()).compressed
    compressed = recover(base, recipe.recover, progress, on_point, stop)
    data = export_bytes(compressed)
    value = Exported(data, build_report(compressed, data, gzip=False))
    if compressed.recovery.stopped:
        return value
    with _EXPORTS_LOCK:
        _RECOVERED[key] = value
        while len(_RECOVERED) > MAX_RESULTS:
            _RECOVERED.popitem(last=False)
    return value


def recovered_before(source: str, recipe_json: str) -> Exported | None:
    """The recovered export, if this session or another has made it."""
    with _EXPORTS_LOCK:
        return _RECOVERED.get((source, recipe_json))


# Building a large export's zip and removing the export take this lock, so neither sees half of the other.
_FILES_LOCK = threading.Lock()


def download_zip(export: Path) -> bytes:
    """A large export as one zip: written beside its folder on the first download, read for each one after."""
    archive = export.parent.with_suffix(".zip")
    with _FILES_LOCK:
        if not export.exists():
            raise InvalidSettingError("this export has left the cache; move a setting and back to build it again")
        if not archive.exists():
            with atomic_path(archive) as temporary:
                write_zip(export, temporary)
        return archive.read_bytes()


def _remove(folder: Path) -> None:
    with _FILES_LOCK:
        shutil.rmtree(folder, ignore_errors=True)
        folder.with_suffix(".zip").unlink(missing_ok=True)


@atexit.register
def _remove_all() -> None:
    """Large exports live as long as the server: gigabytes in the temporary folder must not outlive it."""
    for entry in list(_EXPORTS.values()):
        if isinstance(entry.data, Path):
            _remove(entry.data.parent)
