"""Squeezelab's compression engine: load a model, prune and quantize it, measure, export ONNX.

Never imports streamlit; the dashboard in `app/` and the CLI (`python -m core`) both drive these functions.
"""

from core.benchmark import compare_latency, measure_latency
from core.compress import Compressed, compress, prepare_index
from core.config import PruneConfig, QuantConfig, Recipe
from core.errors import InvalidSettingError, ModelLoadError, SqueezeError, UnsupportedModelError
from core.export import export_bytes, export_model
from core.loading import load_model, model_from_bytes
from core.measure import build_report, summarize_weights
from core.model import Model
from core.pruning import CRITERIA, SCOPES
from core.report import Latency, Report, WeightSummary
from core.verdict import Verdict, speed_verdict

__all__ = [
    "CRITERIA",
    "SCOPES",
    "Compressed",
    "InvalidSettingError",
    "Model",
    "ModelLoadError",
    "PruneConfig",
    "QuantConfig",
    "Recipe",
    "Report",
    "SqueezeError",
    "UnsupportedModelError",
    "Latency",
    "WeightSummary",
    "build_report",
    "speed_verdict",
    "Verdict",
    "summarize_weights",
    "compare_latency",
    "compress",
    "export_bytes",
    "export_model",
    "load_model",
    "measure_latency",
    "model_from_bytes",
    "prepare_index",
]
