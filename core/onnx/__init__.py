"""ONNX graphs and ONNX Runtime, below everything else: which initializers are prunable weights, tensors and their
shapes, external data, constant folding, MACs, the inputs a graph takes, sessions, and the sandboxed child that runs a
user's model. Imports only `core.errors` (and onnx, onnxruntime, numpy): nothing here knows about models, recipes
or reports.
"""
