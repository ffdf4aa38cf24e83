"""`python -m app.serve [streamlit options]`: the dashboard, with the libraries its first page needs imported before
the server answers. Streamlit imports a script's modules on its first run, so the first visitor used to wait for
them: onnx (its ml_dtypes computes float8 limits at import), ONNX Runtime, pandas and pyarrow for the tables,
plotly, the engine — 1.4 s of a 3.9 s first load on this 2-core machine."""

from __future__ import annotations

import ctypes
import importlib
import sys
from pathlib import Path

# What the page imports on its first run, heaviest first. Not app.main itself: its Streamlit caches must be made
# inside the running server.
PRELOAD = (
    "onnx",
    "onnxruntime",
    "pandas",
    "pyarrow",
    "plotly.graph_objects",
    "core.compression.pipeline",
    "core.compression.export",
    "core.measure.summaries",
    "core.present.charts",
    "core.present.html_report",
    "core.data.datasets",
    "core.explore.allocation",
    "core.explore.sweep",
    "core.load.sources",
)


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def _fewer_malloc_arenas() -> None:
    """glibc gives threads that allocate at once their own arenas (up to 8 per core), and keeps what is freed in
    each for reuse there. Streamlit runs each script run in a new thread, and zlib and numpy work in pools, so the
    freed buffers of exports and weights piled up in a dozen arenas: after bench/server_memory.py's tour the server
    held 1.23 GB with glibc's default, 1.15 GB with two arenas."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (musl, macOS): nothing to tune
    libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def main() -> None:
    _fewer_malloc_arenas()  # before any thread starts
    for module in PRELOAD:
        importlib.import_module(module)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(Path(__file__).with_name("main.py")), *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
