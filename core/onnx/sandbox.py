"""Run work on a user's model in a child process with memory and wall-clock limits.

Malformed ONNX files have crashed ONNX Runtime with segfaults at session creation; a hostile one can also hang
or exhaust memory. In a child, any of that ends the child, not the server: the caller gets a clear error.
Only our own values cross the pipe (bytes, arrays, result dataclasses), never anything read from a user's file.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from core.errors import ModelLoadError

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MEMORY_BYTES = 16 * 1024**3
_CONTEXT = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or state inherited


def _child(connection, target: Callable, args: tuple, memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    def progress(fraction: float) -> None:
        connection.send(("progress", fraction))

    try:
        result = target(*args, progress=progress)
    except MemoryError:
        connection.send(("error", f"ran out of memory (limit {memory_bytes / 1024**3:.0f} GiB)"))
    except BaseException as error:  # noqa: BLE001 - every failure becomes one line for the user
        lines = [line for line in str(error).splitlines() if line.strip()]
        connection.send(("error", lines[0] if lines else type(error).__name__))
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
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: Callable[[float], None] | None = None,
) -> Any:
    """`target(*args, progress=...)` in a child; its return value, or ModelLoadError naming `what` went wrong.

    `target` must be a module-level function (the child imports it afresh).
    """
    parent, child = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(child, target, args, memory_bytes), daemon=True)
    process.start()
    child.close()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelLoadError(f"{what} took longer than {timeout_s:.0f} s and was stopped", source)
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
                    raise ModelLoadError(f"{what} failed: {value}", source)
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
