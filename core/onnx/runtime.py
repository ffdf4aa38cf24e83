"""ONNX Runtime sessions, created the same way everywhere so measurements are comparable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort


class WithExternalData(NamedTuple):
    """ONNX bytes whose external data (a large model's weights) is read from `folder`."""

    onnx_bytes: bytes
    folder: Path


# An ONNX model in memory, an .onnx on disk (its external data beside it), or bytes with their data elsewhere.
OnnxModel = bytes | Path | WithExternalData


# ONNX Runtime's session option that computes denormal floats as zero (the CPU's FTZ/DAZ modes). A masked
# attention's Softmax takes exp of -3.4e38 on most of its inputs: on minilm that was 6.8 ms of a 34 ms run here,
# 0.6 ms flushed (a 12x128x128 Softmax alone: 6.1 ms against 0.62 ms for 6 of them). Measured here, it takes effect
# only when the process's first session sets it, and then for every later session run from the same thread (its
# own pool threads follow each session's option, which every timed session here passes): so flushed timings run in
# a fresh child, or in a process flushed from its start. Sessions ONNX Runtime's quantizers make are not counted.
FLUSH_DENORMALS = "session.set_denormal_as_zero"
_process = {"sessions": 0, "flushed": False}  # sessions this process has made, and whether its first one flushed


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def create_session(
    model: OnnxModel,
    threads: int | None = None,
    prepack: bool = True,
    profile: Path | None = None,
    optimized: Path | None = None,
    flush_denormals: bool = False,
) -> ort.InferenceSession:
    """A CPU session. External data is memory-mapped by ONNX Runtime rather than copied, and such weights are
    not prepacked (a prepacked copy would double the memory of a multi-GB model); `prepack=False` treats
    in-memory bytes the same way, so timings compared against such a model are like for like. `profile`: the
    prefix of ONNX Runtime's profiler trace; `optimized`: where it writes the graph it optimised.
    `flush_denormals`: see FLUSH_DENORMALS."""
    options = ort.SessionOptions()
    if flush_denormals:
        options.add_session_config_entry(FLUSH_DENORMALS, "1")
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    # 4, fatal only: warnings about unused initializers are noise, and an error is raised as an exception anyway,
    # which becomes the one line a user reads (its full text under --verbose or "Details"), not a log line first
    options.log_severity_level = 4
    if not prepack or not isinstance(model, bytes):
        options.add_session_config_entry("session.disable_prepacking", "1")
    if isinstance(model, WithExternalData):
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(model.folder))
        model = model.onnx_bytes
    source = str(model) if isinstance(model, Path) else model
    first = not _process["sessions"]
    _process["sessions"] += 1  # counted before it is made: one that fails may still have set the process's mode
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    _process["flushed"] = _process["flushed"] or (flush_denormals and first)
    return session


def flush_denormals_in_this_process() -> bool:
    """Denormal floats computed as zero by every session this process makes, from a first session that asks for it
    (FLUSH_DENORMALS); False where a session was made before without it, when it cannot be switched on."""
    if not _process["sessions"]:
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "first",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
        # an old IR and opset: any ONNX Runtime this project installs reads them
        model = onnx.helper.make_model(graph, ir_version=7, opset_imports=[onnx.helper.make_opsetid("", 13)])
        create_session(model.SerializeToString(), 1, flush_denormals=True)
    return _process["flushed"]


def with_data_in(onnx_bytes: bytes, folder: Path | None) -> OnnxModel:
    """The bytes, told where their external data is when there is a folder for it."""
    return onnx_bytes if folder is None else WithExternalData(onnx_bytes, folder)


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session.run(None, feeds)
