"""Turning a source into a `core.model.Model`: a sample name, an .onnx file (external data, large files kept on
disk), a zip, a Hugging Face folder or a safetensors state dict. What a file is comes from its bytes; code is never
run. Imports `core.model`, `core.onnx` and `core.errors`; sample models reach it through the `squeezelab.samples`
entry point, never by importing `sample_models`.
"""
