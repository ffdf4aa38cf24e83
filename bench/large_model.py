"""Peak memory while compressing a model too large for one protobuf: a generated MLP of ~537 M parameters (2.15 GB
of float32 weights in external data), compressed by the CLI (`python -m core compress`) in a child process.

Target (issue 6): peak resident memory <= 3x the model's fp32 size for the whole command: load (with its sandbox
probe), rank, prune, quantize, export, and the report measured on the export. Three runs: 50 % pruning in
float32 (an export over 2 GB, so written with external data), 50 % pruning + 8-bit weights, and 50 % of the
channels removed, timed against the original (interleaved, in the sandbox child the CLI uses for users' models).
Printed per run: the largest process's peak RSS (wait4's rusage of the CLI, which covers the children it reaped)
and the process tree's summed RSS sampled every 20 ms; the ratio uses the larger of the two.
Run: .venv/bin/python bench/large_model.py [--width 4096] [--layers 32] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench.* from the repo
from bench.memory import tree_rss
from core.onnx.external_data import refer_to_external_data

TARGET_RATIO = 3.0
SAMPLE_S = 0.02


def generate_mlp(folder: Path, width: int, layers: int, seed: int = 0) -> Path:
    """`layers` Gemm layers of width x width with ReLU between, weights streamed to `weights.bin` one layer at a
    time (the generator never holds the model in memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    initializers, nodes, offset = [], [], 0
    previous = "input"
    with open(folder / "weights.bin", "wb") as data:
        for index in range(layers):
            for name, shape in ((f"fc{index}.weight", (width, width)), (f"fc{index}.bias", (width,))):
                values = (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(width)).astype(np.float32)
                data.write(values.tobytes())
                tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
                refer_to_external_data(tensor, "weights.bin", offset, values.nbytes)
                initializers.append(tensor)
                offset += values.nbytes
            output = f"fc{index}" if index == layers - 1 else f"relu{index}"
            nodes.append(
                helper.make_node(
                    "Gemm",
                    [previous, f"fc{index}.weight", f"fc{index}.bias"],
                    [f"fc{index}"],
                    name=f"fc{index}",
                    transB=1,
                )
            )
            if index < layers - 1:
                nodes.append(helper.make_node("Relu", [f"fc{index}"], [output], name=f"relu{index}"))
            previous = output
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["batch", width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "mlp.onnx"
    onnx.save_model(model, path)
    return path


def run_measured(command: list[str]) -> tuple[int, int, float, str]:
    """(largest process's peak RSS, peak summed tree RSS, seconds, output) of `command`."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        tree_peak = 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, tree_rss(process.pid))
            time.sleep(SAMPLE_S)
        log.seek(0)
        output = log.read()
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed ({os.waitstatus_to_exitcode(status)}):\n{output}")
    return usage.ru_maxrss * 1024, tree_peak, seconds, output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--folder", type=Path, help="where to generate the model (default: a temporary folder)")
    args = parser.parse_args()
    root = args.folder or Path(tempfile.mkdtemp(prefix="squeezelab-large-"))
    try:
        started = time.perf_counter()
        model = generate_mlp(root / "model", args.width, args.layers)
        params = args.layers * (args.width * args.width + args.width)
        fp32 = params * 4
        print(
            f"generated {model} in {time.perf_counter() - started:.0f} s: {params:,} parameters, {fp32 / 1e9:.2f} GB fp32"
        )
        worst = 0.0
        runs = (
            ("prune 50 %, float32", ["--no-latency"]),
            ("prune 50 %, 8-bit weights", ["--bits", "8", "--no-latency"]),
            ("50 % of channels removed, timed", ["--granularity", "channel", "--budget", "6"]),
        )
        for number, (label, settings) in enumerate(runs):
            out = root / "out" / str(number)
            out.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "core", "compress", str(model), "--prune", "0.5", *settings,
                       "--out", str(out / "model.onnx")]  # fmt: skip
            largest, tree, seconds, output = run_measured(command)
            files = sorted(out.iterdir())
            written = ", ".join(f"{path.name} {path.stat().st_size / 1e9:.2f} GB" for path in files)
            ratio = max(largest, tree) / fp32
            worst = max(worst, ratio)
            print(f"\n{label}: {seconds:.0f} s, wrote {written}")
            print(f"  peak RSS: largest process {largest / 1e9:.2f} GB, process tree {tree / 1e9:.2f} GB "
                  f"-> {ratio:.2f}x the fp32 size")  # fmt: skip
            print(
                "  "
                + "\n  ".join(
                    line
                    for line in output.splitlines()
                    if line.startswith(("mlp", "size", "fidelity", "the export", "MACs", "speed-up"))
                )
            )
        verdict = "met" if worst <= TARGET_RATIO else "NOT met"
        print(f"\nworst peak {worst:.2f}x the model's fp32 size; target <= {TARGET_RATIO:.0f}x: {verdict}")
    finally:
        if args.folder is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
