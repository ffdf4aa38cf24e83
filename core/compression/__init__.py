"""The recipe and everything that applies it: the technique registries (granularities, criteria, scopes,
activation modes, calibration sources), unstructured, channel and block pruning, the weight grid, int8 activations
through ONNX Runtime's quantizers, the pipeline that turns a model and a recipe into a `Compressed`, and the export.
Imports `core.load`, `core.data`, `core.model`, `core.onnx` and `core.errors`.
"""
