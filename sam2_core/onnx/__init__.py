"""ONNX export of SAM 2 and SAM 1 (:func:`export_onnx`) and an onnxruntime runner
(:mod:`sam2_core.onnx.runtime`, which imports onnxruntime, an optional extra: ``pip install
.[onnx]``)."""

from .export import MANIFEST_NAME, GraphSpec, OnnxManifest, TensorSpec, export_onnx

__all__ = ["MANIFEST_NAME", "GraphSpec", "OnnxManifest", "TensorSpec", "export_onnx"]
