"""HTTP serving: the REST API and web page (:mod:`pneumoscan.serving.app`), started by ``pneumoscan serve``.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, pydantic-settings). With ``--backend onnx`` the
serving path imports no PyTorch, so ``pip install "pneumoscan[serve,onnx]"`` is enough. Nothing is imported here, so
that importing the package stays cheap; use ``from pneumoscan.serving.app import create_app``.
"""

from __future__ import annotations
