"""ONNX export, validation, ONNX Runtime's transformer fusions, and dynamic int8."""

from .export import export

__all__ = ["export"]
