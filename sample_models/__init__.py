"""The sample models the tool ships with, by name; `core` reaches them through the `squeezelab.samples` entry point."""

from sample_models.registry import SAMPLES, SampleModel

__all__ = ["SAMPLES", "SampleModel"]
