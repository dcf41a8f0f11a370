"""Deployment artefacts: ONNX export (:mod:`pneumoscan.export.onnx`, needs PyTorch) and the ONNX Runtime backend
(:mod:`pneumoscan.export.onnx_backend`, needs only onnxruntime).

Nothing is imported here on purpose: the backend must load in an install without PyTorch, and importing the exporter
would pull PyTorch in.
"""

from __future__ import annotations
