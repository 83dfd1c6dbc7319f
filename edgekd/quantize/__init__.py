"""Quantization that earns its place: onnxruntime INT8 (dynamic, static QDQ) and FP16 weights.

:func:`quantize_model` builds the variants of one ONNX model for the device's instruction set,
repairs accuracy by leaving the most sensitive nodes in FP32, gates agreement with FP32, times
every variant against FP32 in one run and keeps one only where it pays (:mod:`edgekd.quantize.decision`).
Data reaches it only through :func:`dataset_feeds` / :class:`QuantData`.
"""
