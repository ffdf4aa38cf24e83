"""`python -m app.serve [streamlit options]`: the dashboard, with the libraries its first page needs imported before
the server answers. Streamlit imports a script's modules on its first run, so the first visitor used to wait for
them: onnx (its ml_dtypes computes float8 limits at import), ONNX Runtime, pandas and pyarrow for the tables,
plotly, the engine — 1.4 s of a 3.9 s first load on this 2-core machine."""

from __future__ import annotations

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


def main() -> None:
    for module in PRELOAD:
        importlib.import_module(module)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(Path(__file__).with_name("main.py")), *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
