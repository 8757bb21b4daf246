"""PyTorch → ONNX export of RedNet with involution as one rednet::Involution node."""
from .exporter import ExportOptions, count_involutions, default_output_path, export, function_body, to_onnx
from .involution_onnx import DOMAIN, VERSION

__all__ = ["ExportOptions", "count_involutions", "default_output_path", "export", "function_body", "to_onnx",
           "DOMAIN", "VERSION"]
