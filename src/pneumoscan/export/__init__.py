"""ONNX export (:mod:`pneumoscan.export.onnx`, needs PyTorch): writes the file that
:mod:`pneumoscan.inference.onnx_backend` (needs only onnxruntime) runs.

Nothing is imported here on purpose: importing the exporter would pull PyTorch in.
"""

from __future__ import annotations
