"""Denormal floats flushed to zero (ONNX Runtime's session.set_denormal_as_zero): it takes effect in a process whose
first session sets it, so timings with it run in a child of their own, and say so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from core import PruneConfig, QuantConfig, Recipe, compress, export_bytes
from core.cli import main
from core.errors import InvalidSettingError
from core.explore.search import SearchSettings, search
from core.measure.benchmark import time_against_original
from core.onnx.runtime import create_session, flush_denormals_in_this_process
from core.onnx.sandbox import run_isolated


def _product_graph() -> bytes:
    """y = x * 1e-10: for x = 1e-30 a denormal (1e-40), or 0 where denormals are flushed."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "c"], ["y"])],
        "denormal",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([1e-10], np.float32), "c")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _products(flushes: list[bool], progress=None) -> list[float]:
    """In this process, one session per entry, made in that order; each one's y for x = 1e-30."""
    sessions = [create_session(_product_graph(), 1, flush_denormals=flush) for flush in flushes]
    return [float(session.run(None, {"x": np.array([1e-30], np.float32)})[0][0]) for session in sessions]


def test_flushing_takes_effect_where_the_first_session_of_a_process_asks_for_it():
    assert run_isolated(_products, [True], source="test", what="flushed") == [0.0]
    plain = run_isolated(_products, [False], source="test", what="plain")
    assert 0 < plain[0] < 1e-37  # a denormal, kept
    # the process's first session decides (ONNX Runtime 1.32): why a flushed timing gets a child of its own
    assert run_isolated(_products, [False, True], source="test", what="plain, then flushed") == plain * 2
    assert run_isolated(_products, [True, False], source="test", what="flushed, then plain") == [0.0, 0.0]


def test_a_flushed_timing_runs_in_a_child_and_says_so(tmp_path, capsys, digits_cnn):
    export = export_bytes(compress(digits_cnn, Recipe(PruneConfig(0.5, granularity="channel"), QuantConfig())))
    latency = time_against_original(digits_cnn, export, budget_s=0.2, flush_denormals=True)
    assert latency.environment.flush_denormals and latency.compressed.runs >= 15
    assert not time_against_original(digits_cnn, export, budget_s=0.1).environment.flush_denormals
    path = tmp_path / "x.onnx"
    onnx.save(onnx.load_from_string(export), path)
    assert main(["bench", "digits-cnn", str(path), "--budget", "0.2", "--flush-denormals"]) == 0
    assert "1 thread, denormals flushed to zero, " in capsys.readouterr().out


def _first_flushed_then(flushes: list[bool], progress=None) -> tuple[bool, list[float]]:
    return flush_denormals_in_this_process(), _products(flushes)


def test_a_process_flushes_from_its_first_session_or_says_it_cannot(digits_mlp):
    assert run_isolated(_first_flushed_then, [False], source="test", what="flushed first") == (True, [0.0])
    create_session(_product_graph(), 1)  # this process has a session without it: too late to switch it on
    assert not flush_denormals_in_this_process()
    settings = SearchSettings("latency", max_drop=1.0, budget_s=5, flush_denormals=True)
    with pytest.raises(InvalidSettingError, match="denormals can be flushed only from a process's first"):
        search(digits_mlp, settings)


def test_the_cli_search_times_its_trials_flushed(tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "core", "search", "digits-mlp", "--objective", "latency", "--max-drop", "1",
         "--trials", "6", "--storage", storage, "--flush-denormals"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ", timed with denormals flushed to zero" in done.stdout
