"""Run work on a user's model in a child process with memory, CPU and wall-clock limits.

Malformed ONNX files have crashed ONNX Runtime with segfaults at session creation; a hostile one can also hang
or exhaust memory. In a child, any of that ends the child, not the server: the caller gets a clear error.
Only our own values cross the pipe (bytes, arrays, result dataclasses), never anything read from a user's file.

The child enforces its limits itself (address space, CPU seconds, a wall-clock alarm) and dies with its parent
(Linux's PR_SET_PDEATHSIG), so a parent stopped by SIGTERM or SIGKILL leaves nothing running behind it.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from core.errors import InvalidSettingError, ModelLoadError

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MEMORY_GIB = 16.0
MEMORY_SETTING = "SQUEEZELAB_SANDBOX_MEMORY_GIB"  # the address space a child may use
# The first run of a user's model: short, because an upload waits on it and a Loop without exit should fail fast.
PROBE_TIMEOUT_S = 30.0
PROBE_TIMEOUT_SETTING = "SQUEEZELAB_PROBE_TIMEOUT_S"
ALARM_GRACE_S = 5  # the child's own alarm rings this long after the parent's deadline, which reports first
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# What ONNX Runtime and numpy say when an allocation fails under the address-space limit.
OUT_OF_MEMORY = ("Failed to allocate memory", "bad_alloc", "bad allocation", "Unable to allocate")
_CONTEXT = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or state inherited


def _limit_setting(name: str, default: float, most: float, unit: str) -> float:
    """A positive number from the environment variable `name` (up to `most`), or `default`; refused in one line."""
    text = os.environ.get(name)
    try:
        value = default if text is None else float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= most:
        raise InvalidSettingError(f"must be a positive number of {unit}, up to {most:g}", name)
    return value


def memory_limit_bytes() -> int:
    """$SQUEEZELAB_SANDBOX_MEMORY_GIB, or 16 GiB."""
    return int(_limit_setting(MEMORY_SETTING, DEFAULT_MEMORY_GIB, 2**20, "GiB") * 1024**3)


def probe_timeout_s() -> float:
    """How long the first run of a user's model may take: $SQUEEZELAB_PROBE_TIMEOUT_S, or 30 s."""
    return _limit_setting(PROBE_TIMEOUT_SETTING, PROBE_TIMEOUT_S, 86_400, "seconds")


def die_with_parent(parent_pid: int) -> None:
    """The kernel kills this process when its parent dies, however the parent ends (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's deadline and this child's own alarm still hold
        pass
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def _out_of_memory(memory_bytes: int) -> str:
    limit = memory_bytes / 1024**3
    return f"needs more than {limit:g} GiB to run (limit {limit:g} GiB; set with {MEMORY_SETTING})"


def _child(
    connection,
    target: Callable,
    args: tuple,
    memory_bytes: int,
    timeout_s: float,
    parent_pid: int,
    asked: Any = None,  # a multiprocessing Event: set when the parent asks the target to stop
) -> None:
    die_with_parent(parent_pid)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # CPU seconds: the most the child could use on every core within its wall-clock time, so it never cuts a
    # legitimate run short but ends a spinning one even if the parent cannot (SIGXCPU, then SIGKILL).
    cpu_s = math.ceil(timeout_s * len(os.sched_getaffinity(0))) + ALARM_GRACE_S
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + ALARM_GRACE_S))
    signal.alarm(math.ceil(timeout_s) + ALARM_GRACE_S)  # SIGALRM ends the process even inside ONNX Runtime's C++

    def progress(value: Any) -> None:
        connection.send(("progress", value))

    extra = {} if asked is None else {"stop": asked.is_set}
    try:
        result = target(*args, progress=progress, **extra)
    except MemoryError:
        connection.send(("error", (_out_of_memory(memory_bytes), "MemoryError")))
    except BaseException as error:  # noqa: BLE001 - every failure becomes one line for the user, and its details
        text = str(error)
        lines = [line for line in text.splitlines() if line.strip()]
        if any(marker in text for marker in OUT_OF_MEMORY):
            connection.send(("error", (_out_of_memory(memory_bytes), text)))
        else:
            connection.send(("error", (lines[0] if lines else type(error).__name__, text)))
    else:
        connection.send(("result", result))
    finally:
        connection.close()


def run_isolated(
    target: Callable,
    *args: Any,
    source: str,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int | None = None,
    progress: Callable[[Any], None] | None = None,
    timeout_hint: str = "",
    stop: Callable[[], bool] | None = None,
) -> Any:
    """`target(*args, progress=...)` in a child; its return value, or ModelLoadError naming `what` went wrong.

    `target` must be a module-level function (the child imports it afresh). `memory_bytes`: the child's address
    space (default `memory_limit_bytes()`); `timeout_hint` ends the message of a run that took too long. With
    `stop`, the target is called with `stop=` too, a callable that turns True once `stop()` has here (the child
    is told through a multiprocessing Event), so it can end early with what it has.
    """
    memory_bytes = memory_bytes or memory_limit_bytes()
    parent, child = _CONTEXT.Pipe(duplex=False)
    asked = _CONTEXT.Event() if stop is not None else None
    process = _CONTEXT.Process(
        target=_child,
        args=(child, target, args, memory_bytes, timeout_s, os.getpid(), asked),
        daemon=True,
    )
    process.start()
    child.close()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if asked is not None and not asked.is_set() and stop():
                asked.set()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelLoadError(f"{what} took longer than {timeout_s:.0f} s and was stopped{timeout_hint}", source)
            if parent.poll(min(remaining, 0.2)):
                try:
                    kind, value = parent.recv()
                except EOFError:
                    break
                if kind == "progress":
                    if progress:
                        progress(value)
                    continue
                if kind == "error":
                    line, details = value
                    raise ModelLoadError(f"{what} failed: {line}", source, details)
                return value
            elif not process.is_alive():
                break
        process.join(5)
        code = process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            raise ModelLoadError(f"{what} crashed ({name}); the server is unaffected", source)
        raise ModelLoadError(f"{what} stopped without a result (exit code {code})", source)
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        parent.close()
