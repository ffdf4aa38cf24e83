"""The sandboxed child enforces its own limits and dies with its parent, however the parent ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from core import InvalidSettingError, ModelLoadError, load_model
from core.onnx import sandbox
from core.onnx.runtime import create_session

REPO = Path(__file__).resolve().parents[2]


def write_pid_and_hang(pid_file: str, progress=None) -> None:
    """Runs in the child: says who it is, then never returns."""
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie waiting for a reaper has stopped running


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_no_child_outlives_its_parent(tmp_path, stop):
    pid_file = tmp_path / "child.pid"
    code = (
        "from core.onnx.sandbox import run_isolated\n"
        "from tests.core.test_sandbox import write_pid_and_hang\n"
        f"run_isolated(write_pid_and_hang, {str(pid_file)!r}, source='x.onnx', what='the probe')\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.send_signal(stop)
        parent.wait(10)
        time.sleep(2)
        assert not _alive(child), f"the child outlived its parent's {stop.name}"
    finally:
        parent.kill()


def _memory_bomb() -> bytes:
    """ConstantOfShape of 2^32 floats (16 GiB) at run time, from a graph of a few bytes."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [2**32])
    node = helper.make_node(
        "ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    )
    reduce = helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0)
    graph = helper.make_graph(
        [node, reduce], "bomb", [], [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])], [shape]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def run_bomb(data: bytes, progress=None) -> None:
    create_session(data).run(None, {})


def test_a_run_time_memory_bomb_says_how_much_memory_it_needs():
    # 4 GiB, not less: under 1 GiB the child sometimes could not even start ONNX Runtime's threads (exit 127)
    with pytest.raises(ModelLoadError) as caught:
        sandbox.run_isolated(
            run_bomb, _memory_bomb(), source="bomb.onnx", what="ONNX Runtime", memory_bytes=4 * 1024**3
        )
    assert str(caught.value) == (
        "bomb.onnx: ONNX Runtime failed: needs more than 4 GiB to run (limit 4 GiB; set with SQUEEZELAB_SANDBOX_MEMORY_GIB)"
    )


def _endless_loop(path: Path) -> None:
    """A Conv followed by a Loop whose condition never turns false."""
    from tests.graphs import conv_gemm_model

    model = conv_gemm_model()
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "forever",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1]),
        ],
    )
    model.graph.initializer.extend([helper.make_tensor("keep_going", TensorProto.BOOL, [], [True]),
                                    helper.make_tensor("v0", TensorProto.FLOAT, [1], [0.0])])  # fmt: skip
    model.graph.node.append(helper.make_node("Loop", ["", "keep_going", "v0"], ["v_final"], body=body))
    model.graph.output.append(helper.make_tensor_value_info("v_final", TensorProto.FLOAT, [1]))
    onnx.save(model, path)


def test_a_model_that_never_ends_is_stopped_by_the_probe_limit_with_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "forever.onnx"
    _endless_loop(path)
    monkeypatch.setenv("SQUEEZELAB_PROBE_TIMEOUT_S", "2")
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        load_model(path)
    assert time.monotonic() - started < 30
    assert str(caught.value) == (
        f"{path}: ONNX Runtime on this model took longer than 2 s and was stopped "
        "(set SQUEEZELAB_PROBE_TIMEOUT_S to allow longer)"
    )


@pytest.mark.parametrize(
    ("name", "value"), [("SQUEEZELAB_PROBE_TIMEOUT_S", "soon"), ("SQUEEZELAB_SANDBOX_MEMORY_GIB", "-1")]
)
def test_bad_limit_settings_are_refused_in_one_line(tmp_path, monkeypatch, name, value):
    from tests.graphs import conv_gemm_model

    path = tmp_path / "model.onnx"
    onnx.save(conv_gemm_model(), path)
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettingError, match=f"^{name}: must be"):
        load_model(path)


def test_the_child_s_own_alarm_ends_it_even_when_the_parent_does_not(tmp_path):
    """The parent's deadline is far away here; the child's own limits are what stop it."""
    pid_file = tmp_path / "child.pid"
    receiver, sender = sandbox._CONTEXT.Pipe(duplex=False)
    child = sandbox._CONTEXT.Process(
        target=sandbox._child,
        args=(sender, write_pid_and_hang, (str(pid_file),), 2 * 1024**3, 0.5, os.getpid()),
        daemon=True,
    )
    child.start()
    child.join(30)
    # whichever of its own limits comes first: the wall-clock alarm, or the CPU limit when the spawned child's
    # start-up (imports) already used a second of CPU time on a busy machine
    assert child.exitcode in (-signal.SIGALRM, -signal.SIGXCPU)
    receiver.close()
    assert pid_file.read_text().isdigit()  # it had started: its limits, not a failed start, ended it
