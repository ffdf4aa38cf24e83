"""ONNX Runtime sessions, created the same way everywhere so measurements are comparable."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def create_session(model_bytes: bytes, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise to users
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session.run(None, feeds)
