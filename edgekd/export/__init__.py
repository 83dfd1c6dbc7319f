"""Export to ONNX: PyTorch → ONNX, onnxruntime graph optimization and the parity check."""

from edgekd.export.onnx_export import ExportResult, export_onnx
from edgekd.export.parity import ParityResult, check_parity, parity_batches

__all__ = ["ExportResult", "ParityResult", "check_parity", "export_onnx", "parity_batches"]
