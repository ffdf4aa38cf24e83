"""A corpus of hostile files, generated here: each is refused with a clear reason, nothing runs, nothing outside the
work folder is read or written, and the CLI exits 2."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import core.load.onnx_file
from core import ModelLoadError, SqueezeError, UnsupportedModelError, load_model
from core.cli import main
from tests.graphs import conv_gemm_model

MARKER_NAME = "pwned-marker"


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _external(model: onnx.ModelProto, tensor_name: str, location: str, *, offset: int = 0, length: int = 16) -> None:
    for tensor in model.graph.initializer:
        if tensor.name == tensor_name:
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                tensor.external_data.add(key=key, value=value)


def _zip(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symbolic link entry
            archive.writestr(info, target)
    return path


def _subgraph_model() -> onnx.ModelProto:
    """A model whose external-data tensor sits inside an If branch."""
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "branch_w")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=weight)],
        "then",
        [],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "if",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    tensor = model.graph.node[0].attribute[0].g.node[0].attribute[0].t
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        tensor.external_data.add(key=key, value=value)
    return model


def corpus(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file or folder to load, the reason it must give)."""
    work = folder / "uploads"
    work.mkdir()
    outside = folder / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    secret.write_bytes(np.arange(64, dtype=np.float32).tobytes())
    marker = folder / MARKER_NAME
    cases: dict[str, tuple[Path, str]] = {}

    pickled = work / "checkpoint.pth"
    pickled.write_bytes(pickle.dumps({"state": _Payload(marker)}, protocol=4))
    cases["pickle"] = (pickled, "a pickled file")
    torch_zip = _zip(work / "model.pt", {"model/data.pkl": pickle.dumps(_Payload(marker)), "model/version": b"3"})
    cases["torch zip checkpoint"] = (torch_zip, "a PyTorch checkpoint")
    script = _zip(
        work / "script.pt",
        {"m/code/__torch__/m.py": b"def forward(self, x): ...", "m/constants.pkl": b"\x80\x02]q\x00."},
    )
    cases["TorchScript"] = (script, "a TorchScript archive")
    pt2 = _zip(work / "model.pt2", {"m/archive_format": b"pt2", "m/models/model.json": b"{}"})
    cases[".pt2"] = (pt2, "a torch.export (.pt2) archive")

    for name, location in (("dotdot", "../outside/secret.bin"), ("absolute", str(secret))):
        model = conv_gemm_model()
        _external(model, "fc.w", location)
        path = work / name / "model.onnx"
        path.parent.mkdir()
        path.write_bytes(model.SerializeToString())
        reason = "climbs out of the model's folder" if name == "dotdot" else "is not a relative path"
        cases[f"external data {name}"] = (path, reason)
    for name, link in (("symlink", os.symlink), ("hardlink", os.link)):
        model = conv_gemm_model()
        _external(model, "fc.w", "weights.bin")
        path = work / name / "model.onnx"
        path.parent.mkdir()
        path.write_bytes(model.SerializeToString())
        link(secret, path.parent / "weights.bin")
        cases[f"external data {name}"] = (
            path,
            "goes through a symbolic link" if name == "symlink" else "is a hard link",
        )
    beyond = conv_gemm_model()
    _external(beyond, "fc.w", "weights.bin", offset=0, length=10_000)
    path = work / "beyond" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(beyond.SerializeToString())
    (path.parent / "weights.bin").write_bytes(b"\0" * 64)
    cases["external data past the end"] = (path, "asks for bytes beyond the end of its file")
    path = work / "subgraph" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(_subgraph_model().SerializeToString())
    cases["external data in a subgraph"] = (path, "climbs out of the model's folder")

    traversal = _zip(work / "traversal.zip", {"../../evil.onnx": conv_gemm_model().SerializeToString()})
    cases["zip traversal"] = (traversal, "points outside the archive's folder")
    linked = _zip(work / "linked.zip", {}, symlinks={"model.onnx": str(secret)})
    cases["zip symlink"] = (linked, "is a symbolic link")
    bomb = _zip(work / "bomb.zip", {"model.onnx": b"\0" * 50_000_000})
    cases["zip bomb"] = (bomb, "expands over 200x")

    truncated = work / "truncated.onnx"
    truncated.write_bytes(conv_gemm_model().SerializeToString()[:300])
    cases["truncated protobuf"] = (truncated, "not an ONNX model")
    noise = work / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    cases["random bytes"] = (noise, "not an ONNX model")
    absurd = conv_gemm_model()
    absurd.graph.initializer[2].dims[:] = [100_000, 100_000, 100_000]
    path = work / "absurd.onnx"
    path.write_bytes(absurd.SerializeToString())
    cases["absurd tensor size"] = (path, "declares 1,000,000,000,000,000 elements")
    custom = conv_gemm_model()
    custom.graph.node[1].op_type, custom.graph.node[1].domain = "Evil", "com.attacker"
    custom.opset_import.append(helper.make_opsetid("com.attacker", 1))
    path = work / "custom.onnx"
    path.write_bytes(custom.SerializeToString())
    cases["custom op domain"] = (path, "uses custom operators (domain com.attacker)")

    hf = work / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "bert"}')
    (hf / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    cases["HF folder with modeling_*.py"] = (hf, "holds Python code (modeling_evil.py)")
    remote = work / "remote"
    remote.mkdir()
    (remote / "config.json").write_text('{"model_type": "bert", "auto_map": {"AutoModel": "evil.Model"}}')
    (remote / "model.safetensors").write_bytes(b"")
    cases["HF folder with auto_map"] = (remote, "asks for remote code (auto_map)")
    return cases


def _snapshot(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize("large", [False, True], ids=["in memory", "every model counted large"])
def test_every_hostile_file_is_refused_with_its_reason_and_nothing_runs(large, tmp_path, monkeypatch):
    if large:  # the path that keeps weights on disk (or moves them there) refuses the same files the same way
        monkeypatch.setattr(core.load.onnx_file, "IN_MEMORY_LIMIT", 0)
    cases = corpus(tmp_path)
    outside_before = _snapshot(tmp_path / "outside")
    work = tmp_path / "extracted"
    for name, (path, reason) in cases.items():
        with pytest.raises(SqueezeError) as refused:
            load_model(path, workdir=work)
        assert reason in str(refused.value), f"{name}: {refused.value}"
        assert isinstance(refused.value, ModelLoadError | UnsupportedModelError)
    assert not (tmp_path / MARKER_NAME).exists()
    assert _snapshot(tmp_path / "outside") == outside_before  # nothing written beside the secret
    assert not (tmp_path.parent / "evil.onnx").exists() and not list(tmp_path.rglob("evil.onnx"))
    assert not work.exists() or not any(work.iterdir())  # refused zips leave nothing extracted
    assert len(cases) == 19


def test_the_cli_exits_2_on_each_with_one_line(tmp_path, capsys):
    for name, (path, reason) in corpus(tmp_path).items():
        code = main(["compress", str(path), "--out", str(tmp_path / "out.onnx"), "--no-latency"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and reason in err[0], f"{name}: {err}"
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / MARKER_NAME).exists()


def test_a_model_that_crashes_onnx_runtime_is_contained():
    """A child that dies by a signal (as with a segfault in session creation) gives an error; the caller lives."""
    from core.onnx import sandbox

    with pytest.raises(ModelLoadError, match=r"the probe crashed \(SIGSEGV\); the server is unaffected"):
        sandbox.run_isolated(_segfault, source="x.onnx", what="the probe")
    with pytest.raises(ModelLoadError, match="the probe took longer than 1 s and was stopped"):
        sandbox.run_isolated(_hang, source="x.onnx", what="the probe", timeout_s=1)
    with pytest.raises(
        ModelLoadError,
        match=r"the probe failed: needs more than 2 GiB to run \(limit 2 GiB; set with SQUEEZELAB_SANDBOX_MEMORY_GIB\)",
    ):
        sandbox.run_isolated(_allocate, source="x.onnx", what="the probe", memory_bytes=2 * 1024**3)
    assert sandbox.run_isolated(_answer, source="x.onnx", what="the probe") == 42


def _segfault(progress=None):
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def _hang(progress=None):
    import time

    time.sleep(60)


def _allocate(progress=None):
    return bytearray(8 * 1024**3)


def _answer(progress=None):
    return 42
