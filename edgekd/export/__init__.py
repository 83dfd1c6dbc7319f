"""Export to ONNX: PyTorch → ONNX, onnxruntime graph optimization and the parity check."""
