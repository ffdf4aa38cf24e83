"""ONNX Runtime latency, measured honestly: warm-up, then the models' runs interleaved (A B A B ...) so drift cancels."""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from core.measure.noise import speedup_interval
from core.measure.report import Environment, Latency, LatencyStats
from core.model import Model
from core.onnx.runtime import OnnxModel, create_session
from core.onnx.sandbox import run_isolated

# Instruction-set features that decide which ONNX Runtime kernels are fast on x86 and ARM.
RELEVANT_CPU_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
)

# Native int8 dot products: with these, ONNX Runtime's int8 kernels accumulate in 32 bits.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
X86_INT8_FLAGS = ("avx2", "avx512bw")  # vpmaddubsw: pairs of uint8 x int8 products summed in 16 bits

# Channels per block of ONNX Runtime's blocked-layout (NCHWc) convolutions, by the first flag the CPU has: MLAS
# sets 16 with AVX-512F and 8 with AVX2, and has no blocked layout without them.
NCHWC_BLOCKS = (("avx512f", 16), ("avx2", 8))

Progress = Callable[[float], None]

# Batch-1 latency is measured on one intra-op thread unless asked otherwise. On this project's 2-vCPU machines a
# second thread made resnet18 no faster (22.3 ms vs 22.5 ms median) and its runs far noisier (p90-p10 spread
# 1.3 ms vs 15.6 ms), so one thread gives the steadier, more comparable figure. Every result records its threads.
LATENCY_THREADS = 1
LATENCY_BUDGET_S = 6.0  # seconds of interleaved runs after warm-up, unless asked otherwise


@functools.cache  # the CPU does not change under a running process; every report and verdict asks
def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and the relevant instruction-set flags it reports (read from the machine)."""
    # platform.machine() rather than platform.processor(): the latter forks `uname -p`, a copy of this process
    name, flags = platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    name = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
                if key in ("flags", "Features") and name:
                    break
    except OSError:
        pass
    return name, [flag for flag in RELEVANT_CPU_FLAGS if flag in flags]


def int8_sums_can_saturate(flags: list[str]) -> bool:
    """x86 without VNNI: ONNX Runtime's uint8 x int8 kernels add pairs of products in 16 bits (vpmaddubsw), which
    can saturate; ONNX Runtime's documentation names reduce_range (7-bit weights) as the remedy. Measured on an
    AVX2-only AMD EPYC: digits-cnn's static int8 export had an output SQNR of 16.6 dB against its float reference
    (35.4 dB with reduce_range), where machines with VNNI gave over 25 dB."""
    return any(flag in flags for flag in X86_INT8_FLAGS) and not any(flag in flags for flag in VNNI_FLAGS)


def environment(threads: int, flush_denormals: bool = False) -> Environment:
    cpu, flags = cpu_description()
    return Environment(threads, ort.__version__, cpu, list(flags), flush_denormals)


def stats(samples_ms: list[float]) -> LatencyStats:
    values = np.round(np.asarray(samples_ms, float), 6)  # to the nanosecond: what is kept is what is summarised
    p10, median, p90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
    return LatencyStats(median=median, p90=p90, p10=p10, spread=p90 - p10, runs=len(values), samples=values.tolist())


def nchwc_block() -> int:
    """Channels per block of ONNX Runtime's NCHWc convolutions on this CPU; 1 where it has none."""
    flags = set(cpu_description()[1])
    return next((block for flag, block in NCHWC_BLOCKS if flag in flags), 1)


def measure_latency(
    models: list[OnnxModel],
    feeds: dict[str, np.ndarray],
    *,
    threads: int | None = None,
    warmup: int = 3,
    min_runs: int = 15,
    max_runs: int = 200,
    budget_s: float = LATENCY_BUDGET_S,
    progress: Progress | None = None,
    flush_denormals: bool = False,
) -> tuple[list[LatencyStats], Environment]:
    """Latency in ms of each model on the same feeds, runs interleaved; stops at `max_runs` or once
    `min_runs` are done and `budget_s` is spent. `flush_denormals` holds only in a process where no session
    was made before (see FLUSH_DENORMALS): `time_against_original` gives it one."""
    threads = threads or LATENCY_THREADS
    prepack = all(isinstance(model, bytes) for model in models)  # like for like: see create_session
    sessions = [create_session(model, threads, prepack, flush_denormals=flush_denormals) for model in models]
    samples = interleaved_runs(sessions, feeds, warmup, min_runs, max_runs, budget_s, progress)
    return [stats(timings) for timings in samples], environment(threads, flush_denormals)


def interleaved_runs(
    sessions: list[ort.InferenceSession],
    feeds: dict[str, np.ndarray],
    warmup: int,
    min_runs: int,
    max_runs: int,
    budget_s: float,
    progress: Progress | None = None,
) -> list[list[float]]:
    """Each session's run times in ms after warm-up, runs interleaved; stops at `max_runs` or once `min_runs` are
    done and `budget_s` is spent."""
    for session in sessions:
        for _ in range(warmup):
            session.run(None, feeds)
    samples: list[list[float]] = [[] for _ in sessions]
    started = time.perf_counter()
    for round_index in range(max_runs):
        # the order alternates each round: whichever model runs second finds the caches warmer, and an A/A
        # comparison of a tiny model called that "faster" in 3 runs of 20 when the first always went first
        order = list(zip(sessions, samples, strict=True))
        for session, timings in order if round_index % 2 == 0 else order[::-1]:
            begin = time.perf_counter()
            session.run(None, feeds)
            timings.append((time.perf_counter() - begin) * 1000)
        elapsed = time.perf_counter() - started
        done = round_index + 1
        if progress:
            progress(min(1.0, max(done / max_runs, min(done / min_runs, elapsed / budget_s))))
        if done >= min_runs and elapsed >= budget_s:
            break
    return samples


def compare_latency(
    original: OnnxModel, compressed: OnnxModel | None, feeds: dict[str, np.ndarray], **options
) -> Latency:
    """Original and (optionally) compressed model, interleaved in one run."""
    models = [original] if compressed is None else [original, compressed]
    results, env = measure_latency(models, feeds, **options)
    after = results[1] if compressed is not None else None
    speedup = results[0].median / after.median if after else None
    interval = speedup_interval(results[0].samples, after.samples) if after else None
    return Latency(original=results[0], compressed=after, environment=env, speedup=speedup, speedup_interval=interval)


def _compare_in_child(
    original: OnnxModel, compressed: OnnxModel | None, feeds, options: dict, progress=None
) -> Latency:
    return compare_latency(original, compressed, feeds, progress=progress, **options)


def time_against_original(model: Model, compressed: OnnxModel | None, progress=None, **options) -> Latency:
    """compare_latency of the model's original and `compressed` (if any) on its latency feed. A user's model is
    timed in a sandbox child, so a crash or hang ends the child, not the caller; so is any model with denormals
    flushed, which needs a process of its own (FLUSH_DENORMALS). The samples are timed in process."""
    feeds = model.latency_feed
    if model.is_sample and not options.get("flush_denormals"):
        return compare_latency(model.runnable, compressed, feeds, progress=progress, **options)
    budget = float(options.get("budget_s", LATENCY_BUDGET_S))
    return run_isolated(
        _compare_in_child,
        model.runnable,
        compressed,
        feeds,
        options,
        source=model.name,
        what="measuring latency",
        timeout_s=budget * 4 + 120,
        progress=progress,
    )
