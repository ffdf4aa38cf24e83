"""What a compressed model is measured to be: weight summaries, the typed report, the speed verdict before and
after measuring, and interleaved ONNX Runtime latency. Imports `core.compression` and everything below it.
"""
