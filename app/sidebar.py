"""The sidebar: which model, which settings. Widgets in, a model source and engine settings out."""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from app import cache
from core import SqueezeError
from core.compression.activations import ACTIVATION_MODES, CALIBRATION_METHODS
from core.compression.calibration import CALIBRATION_SOURCES
from core.compression.granularities import GRANULARITIES
from core.compression.pruning import CRITERIA, SCOPES
from core.compression.recipe import FLOAT_BITS, MAX_PRUNE_AMOUNT, WEIGHT_BITS_RANGE, PruneConfig, QuantConfig
from core.data.images import COLORS, LAYOUTS, MAX_IMAGES, SCALES
from core.data.quality import QUALITY_METRICS, fitting_metrics
from core.load.samples import samples
from core.measure.benchmark import LATENCY_BUDGET_S, LATENCY_THREADS, nchwc_block
from core.onnx.inputs import GivenInput, merge_given
from core.onnx.runtime import default_threads

DEFAULT_SAMPLE = "digits-cnn"
MAX_PRUNE_PERCENT = round(MAX_PRUNE_AMOUNT * 100)
BITS_OFF = "off"
CHANNEL_MULTIPLES = [1, 4, 8, 16, 32]  # 8 and 16: the blocks of ONNX Runtime's NCHWc kernels (AVX2, AVX-512)
UPLOAD_CALIBRATION = "upload"  # the user's own .npz, stored and passed on by its path
UPLOAD_TYPES = ["onnx", "zip", "safetensors"]
DATA_TYPES = ["npz", "zip", "txt"]
FROM_GRAPH = "auto"  # a preprocessing setting left to what the model's graph says


@dataclass(frozen=True)
class Controls:
    # what the page knows the model by (`cache.model_key`): a sample name or the path of a stored upload, with
    # the inputs set in the Inputs panel
    source: str
    prune: PruneConfig
    quant: QuantConfig
    latency_budget_s: float
    latency_threads: int
    latency_flush: bool  # denormal floats computed as zero in both timed sessions
    measure_latency: bool
    # under the amount slider: where the page says which layers per-layer overrides take from it
    overrides_note: DeltaGenerator | None = field(default=None, compare=False)


def _choices(descriptions: dict[str, str]) -> str:
    """A select's help: every choice with what it means (the narrow sidebar shows just the names)."""
    return "\n\n".join(f"**{name}**: {text}" for name, text in descriptions.items())


def _sample_label(name: str) -> str:
    return f"{name} — {samples()[name].description}"


def session_folder() -> Path:
    """This browser session's own folder for uploads and extracted zips. It is held by a TemporaryDirectory in the
    session's state, so it is removed when the session ends and its state is dropped."""
    if "workdir" not in st.session_state:
        st.session_state.workdir = tempfile.TemporaryDirectory(prefix="squeezelab-session-")
    return Path(st.session_state.workdir.name)


def _store_upload(name: str, data: bytes) -> Path:
    """The upload in the session folder under its content hash, with a file name reduced to safe characters."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name) or "model.onnx"
    folder = session_folder() / "uploads" / hashlib.sha256(data).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe_name
    if not path.exists():
        path.write_bytes(data)
    return path


def _upload_key() -> str:
    """The model uploader's key, a new one after each upload: the uploader empties once its file is handled, so it
    never names a file the page is not showing (the Model list names every upload that loaded)."""
    return f"upload:{st.session_state.get('uploads_handled', 0)}"


def _on_upload(key: str) -> None:
    """Load the new upload; on failure keep the previous model and remember the reason to show it."""
    upload = st.session_state.get(key)
    st.session_state.pop("upload_error", None)
    if upload is None:
        return
    st.session_state.uploads_handled = st.session_state.get("uploads_handled", 0) + 1
    path = _store_upload(upload.name, upload.getvalue())
    try:
        cache.model(str(path), str(session_folder() / "extracted"))
    except SqueezeError as error:
        if not cache.inputs_to_set(str(path)):  # not a model at all: the one shown before stays
            # shown while the model it failed beside is chosen: it is about that attempt, not about a later model
            st.session_state.upload_error = (st.session_state.get("model_choice"), f"{upload.name}: {error.reason}")
            return
        # an ONNX graph that did not run as loaded: chosen anyway, so its Inputs panel can make it run
    label = f"{upload.name} (uploaded)"
    st.session_state.setdefault("uploads", {})[label] = str(path)
    st.session_state.model_choice = label


def _inputs_panel(source: str) -> tuple[GivenInput, ...]:
    """An ONNX file's inputs, each with its declared dims and dtype; the shapes and values typed here replace the
    made-up ones, and the page loads the model with them at once."""
    declared = cache.inputs_to_set(source)
    if not declared:
        return ()
    with st.expander("Inputs", expanded=True):
        st.caption(
            "Symbolic dims and integer inputs are made up until ONNX Runtime runs the model. Set a shape "
            "(`1x3x640x640`; a symbolic first dim stays the evaluation batch) or the value every element takes."
        )
        rows = [{"input": entry.name, "dtype": entry.dtype, "declared": entry.declared, "shape": "", "value": ""}
                for entry in declared]  # fmt: skip
        edited = st.data_editor(
            rows,
            key=f"inputs:{source}",
            hide_index=True,
            disabled=("input", "dtype", "declared"),
            column_order=("input", "shape", "value", "declared", "dtype"),  # what to edit first: the sidebar is narrow
            width="stretch",
        )
        try:
            given = [
                GivenInput.parse(kind, f"{row['input']}={text.strip()}")
                for row in edited
                for kind in ("shape", "value")
                if (text := str(row[kind] or "")).strip()
            ]
        except SqueezeError as error:
            st.error(error.reason)
            return ()
    return tuple(merge_given(given).values())


def _preprocess_controls() -> tuple[tuple[str, str], ...]:
    """How the images of a zip become inputs: the presets, each left to what the graph says unless set."""
    with st.expander("Image preprocessing", expanded=True):
        scale = st.selectbox(
            "Scale", list(SCALES), key="data_scale", format_func=lambda name: f"{name}: {SCALES[name].help}"
        )
        color = st.selectbox(
            "Colour", [FROM_GRAPH, *COLORS], key="data_color", help="auto: rgb for 3 channels, gray for 1"
        )
        layout = st.selectbox("Layout", [FROM_GRAPH, *LAYOUTS], key="data_layout", help="auto: read from the graph")
        resize = st.number_input(
            "Resize the shorter side to (0: the crop's side)",
            min_value=0,
            max_value=4096,
            value=0,
            key="data_resize",
            help="Then a centre crop to the model's input size; ImageNet models are often resized to 256 then cropped "
            "to 224.",
        )
    chosen = {"scale": scale, "color": color, "layout": layout, "resize": str(resize) if resize else FROM_GRAPH}
    return tuple(sorted((key, value) for key, value in chosen.items() if value != FROM_GRAPH))


def _previews(loaded) -> None:
    """The first images as their files hold them and as the model receives them, so a wrong preset is seen."""
    previews = loaded.data.previews
    if not previews:
        return
    with st.expander("The first images, before and after preprocessing", expanded=True):
        st.caption("As the files hold them:")
        st.image([preview.before for preview in previews], width=56)
        low, high = min(preview.low for preview in previews), max(preview.high for preview in previews)
        st.caption(f"As the model receives them (values {low:.3g} to {high:.3g}, stretched to show):")
        st.image([preview.after for preview in previews], width=56)


def _data_section(source: str, given: tuple[GivenInput, ...]) -> str:
    """The user's data (an .npz, a zip of images, a .txt of lines), split into a tuning and a held-out part, and
    the metric the model is judged by: the model's key with them."""
    st.header("Data")
    upload = st.file_uploader(
        "Your data (optional)",
        type=DATA_TYPES,
        key="data_upload",
        help="An .npz of arrays named like the inputs (samples first) with optional int `labels` or float `targets`; "
        "a .zip of images, with class folders for labels (ImageFolder); or a .txt of lines for a text model. "
        f"At most {MAX_IMAGES:,} images or lines. Calibration, scans, allocation and block costs read the tuning "
        "part; every accuracy shown is on the held-out part.",
    )
    workdir = str(session_folder() / "extracted")
    data = None
    if upload is not None:
        path = _store_upload(upload.name, upload.getvalue())
        split = st.slider(
            "Tuning part (%)", 50, 95, 80, 5, key="data_split", help="A seeded shuffle; the rest is held out."
        )
        preprocess = _preprocess_controls() if path.suffix == ".zip" else ()
        data = cache.DataChoice(str(path), split / 100, preprocess)
        bar = st.empty()
        try:
            loaded = cache.model(
                cache.model_key(source, given, data),
                workdir,
                lambda fraction: bar.progress(fraction, text=f"Reading {upload.name}: {fraction:.0%}"),
            )
        except SqueezeError as error:
            st.error(f"{upload.name}: {error.reason}")
            data = None
        else:
            st.caption(loaded.data.describe().replace(loaded.data.source, upload.name, 1))
            _previews(loaded)
        bar.empty()
    key = cache.model_key(source, given, data)
    try:
        metrics = fitting_metrics(cache.model(key, workdir))
    except SqueezeError:  # the model itself does not load: the page says why
        return key
    if st.session_state.get("metric") not in metrics:
        st.session_state.metric = metrics[0]
    metric = st.selectbox(
        "Judged by",
        metrics,
        key="metric",
        help=_choices({name: QUALITY_METRICS[name].help for name in metrics}),
    )
    return cache.model_key(source, given, data, None if metric == metrics[0] else metric)


def _request_latency() -> None:
    st.session_state.latency_requested = True


def render() -> Controls:
    # settings picked elsewhere on the page (a point of the Pareto sweep) take effect before the widgets exist
    for key, value in st.session_state.pop("pending_settings", {}).items():
        st.session_state[key] = value
    uploads: dict[str, str] = st.session_state.setdefault("uploads", {})
    sources = {_sample_label(name): name for name in samples()} | uploads
    st.session_state.setdefault("model_choice", _sample_label(DEFAULT_SAMPLE))

    st.header("Model")
    choice = st.selectbox("Model", list(sources), key="model_choice", label_visibility="collapsed")
    st.file_uploader(
        "…or upload a model",
        type=UPLOAD_TYPES,
        key=_upload_key(),
        on_change=_on_upload,
        args=(_upload_key(),),
        help="ONNX (zip it with its external data files), a Hugging Face folder as a .zip, or a safetensors state "
        "dict of a sample architecture; at most 200 MB. It stays in this session's folder, removed when the session ends.",
    )
    if "upload_error" in st.session_state:
        shown_with, message = st.session_state.upload_error
        if shown_with == choice:
            st.error(message)
        else:
            del st.session_state.upload_error
    given = _inputs_panel(sources[choice])
    key = _data_section(sources[choice], given)

    st.header("Pruning")
    granularity = st.selectbox(
        "Granularity",
        list(GRANULARITIES),
        key="granularity",
        help=_choices({name: entry.help for name, entry in GRANULARITIES.items()}),
    )
    if st.session_state.get("scope_for") != granularity:  # each granularity starts on the engine's default scope
        st.session_state.scope = PruneConfig(granularity=granularity).scope
        st.session_state.scope_for = granularity
    unit = GRANULARITIES[granularity].unit
    percent = st.slider(f"Pruning amount (% of {unit})", 0, MAX_PRUNE_PERCENT, 0, 1, key="prune_percent")
    overrides_note = st.container()
    usable = [name for name, info in CRITERIA.items() if info.applies_to(granularity)]
    if st.session_state.get("criterion") not in usable:
        st.session_state.criterion = usable[0]
    criterion = st.selectbox(
        "Criterion", usable, key="criterion", help=_choices({name: CRITERIA[name].help for name in usable})
    )
    scope = st.selectbox("Scope", list(SCOPES), key="scope", help=_choices(SCOPES))
    multiple = 1
    if granularity == "channel":
        block = nchwc_block()
        multiple = st.select_slider(
            "Channel multiple (kept channels rounded up to it)",
            options=CHANNEL_MULTIPLES,
            value=1,
            key="channel_multiple",
            help=(
                f"ONNX Runtime's blocked convolutions take channels in blocks of {block} on this CPU: a layer left "
                f"with a count that is not a multiple of {block} can fall back to a slower kernel (Where the time "
                "goes names it)."
                if block > 1
                else "Kernels run best on channel counts that are multiples of 8."
            ),
        )
    seed = 0
    if criterion == "random":
        seed = int(st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="seed"))

    st.header("Quantization")
    options: list[int | str] = [BITS_OFF, *sorted(WEIGHT_BITS_RANGE, reverse=True)]
    bits = st.select_slider(
        "Weight bits (per output channel, symmetric)", options=options, value=BITS_OFF, key="weight_bits"
    )
    activations, calibration, method = "none", "sample", "minmax"
    if bits != BITS_OFF:
        activations = st.selectbox(
            "Activations",
            list(ACTIVATION_MODES),
            key="activations",
            help=_choices({name: mode.help for name, mode in ACTIVATION_MODES.items()}),
        )
    if ACTIVATION_MODES[activations].may_calibrate:
        calibration = st.selectbox(
            "Calibration inputs",
            [*CALIBRATION_SOURCES, UPLOAD_CALIBRATION],
            key="calibration",
            format_func=lambda name: (
                CALIBRATION_SOURCES[name].help if name in CALIBRATION_SOURCES else "an .npz of input arrays"
            ),
        )
        if calibration == UPLOAD_CALIBRATION:
            upload = st.file_uploader("Calibration .npz", type=["npz"], key="calibration_upload")
            calibration = str(_store_upload(upload.name, upload.getvalue())) if upload else "sample"
        method = st.selectbox(
            "Calibration method",
            list(CALIBRATION_METHODS),
            key="calib_method",
            help=_choices({name: method.help for name, method in CALIBRATION_METHODS.items()}),
        )

    st.header("Latency")
    budget = st.slider(
        "Time budget (s)",
        1,
        30,
        round(LATENCY_BUDGET_S),
        key="latency_budget",
        help="Interleaved runs stop after this.",
    )
    cores = default_threads()
    threads = st.selectbox(
        "Intra-op threads",
        sorted({LATENCY_THREADS, cores}),
        key="latency_threads",
        help="One thread gives the steadier batch-1 figure on a small shared machine; every result records it.",
    )
    flush = st.toggle(
        "Flush denormals to zero",
        value=False,
        key="latency_flush",
        help="ONNX Runtime's session.set_denormal_as_zero, in both timed sessions: a masked attention's Softmax "
        "computes on denormal floats, and ran 10x faster flushed here. Set it where you deploy too.",
    )
    st.button("Measure latency", key="measure_sidebar", on_click=_request_latency, width="stretch")

    amount = min(percent / 100, MAX_PRUNE_AMOUNT)
    return Controls(
        source=key,
        prune=PruneConfig(amount, criterion, scope, seed, granularity, multiple),
        quant=QuantConfig(FLOAT_BITS if bits == BITS_OFF else int(bits), activations, calibration, method),
        latency_budget_s=float(budget),
        latency_threads=int(threads),
        latency_flush=bool(flush),
        measure_latency=st.session_state.pop("latency_requested", False),
        overrides_note=overrides_note,
    )
