"""Squeezelab's compression engine: load a model, prune and quantize it, measure, export ONNX.

Never imports streamlit; the dashboard in `app/` and the CLI (`python -m core`) both drive these functions. The
packages follow the data flow, each importing only those below it (checked by `lint-imports`):

    cli                        the shell
    explore | present          sensitivity, allocation, sweeps, snapshots | charts, HTML report
    measure                    summaries, the report, the speed verdict, latency
    compression                the recipe, the technique registries, pruning, quantization, the pipeline, export
    load | data                models from samples and files | the user's data (arrays, images, text), metrics
    model                      the working representation
    onnx | archive             graphs, tensors, sessions, the sandbox | safe zip extraction
    errors

The names below are the public API. They load on first use (PEP 562), so `import core` and `import core.errors`
stay cheap: ONNX Runtime, the quantizers and plotting are imported only when something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "SqueezeError": "core.errors",
    "ModelLoadError": "core.errors",
    "UnsupportedModelError": "core.errors",
    "InvalidSettingError": "core.errors",
    "Model": "core.model",
    "EvalSet": "core.model",
    "load_model": "core.load.sources",
    "model_from_bytes": "core.load.onnx_file",
    "PruneConfig": "core.compression.recipe",
    "QuantConfig": "core.compression.recipe",
    "LayerOverride": "core.compression.recipe",
    "Recipe": "core.compression.recipe",
    "CRITERIA": "core.compression.pruning",
    "SCOPES": "core.compression.pruning",
    "GRANULARITIES": "core.compression.granularities",
    "ACTIVATION_MODES": "core.compression.activations",
    "Compressed": "core.compression.pipeline",
    "compress": "core.compression.pipeline",
    "prepare_index": "core.compression.pipeline",
    "export_bytes": "core.compression.export",
    "export_model": "core.compression.export",
    "QUALITY_METRICS": "core.data.quality",
    "build_report": "core.measure.summaries",
    "summarize_weights": "core.measure.summaries",
    "Report": "core.measure.report",
    "Latency": "core.measure.report",
    "WeightSummary": "core.measure.report",
    "Verdict": "core.measure.report",
    "speed_verdict": "core.measure.verdict",
    "compare_latency": "core.measure.benchmark",
    "measure_latency": "core.measure.benchmark",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Loads the module behind a public name on first use, then keeps the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from core.compression.activations import ACTIVATION_MODES
    from core.compression.export import export_bytes, export_model
    from core.compression.granularities import GRANULARITIES
    from core.compression.pipeline import Compressed, compress, prepare_index
    from core.compression.pruning import CRITERIA, SCOPES
    from core.compression.recipe import LayerOverride, PruneConfig, QuantConfig, Recipe
    from core.data.quality import QUALITY_METRICS
    from core.errors import InvalidSettingError, ModelLoadError, SqueezeError, UnsupportedModelError
    from core.load.onnx_file import model_from_bytes
    from core.load.sources import load_model
    from core.measure.benchmark import compare_latency, measure_latency
    from core.measure.report import Latency, Report, Verdict, WeightSummary
    from core.measure.summaries import build_report, summarize_weights
    from core.measure.verdict import speed_verdict
    from core.model import EvalSet, Model
