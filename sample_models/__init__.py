"""The sample models the tool ships with, by name."""

from sample_models.registry import SAMPLES, EvalSet, SampleModel

__all__ = ["SAMPLES", "EvalSet", "SampleModel"]
