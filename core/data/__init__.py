"""A model's data and how its outputs on that data are scored: the quality metrics (accuracy on labels, fidelity
to the original's outputs) and the one rule that picks a model's metric. Imports `core.model`, `core.onnx` and
`core.errors`.
"""
