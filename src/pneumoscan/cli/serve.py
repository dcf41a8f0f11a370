"""``pneumoscan serve``: the REST API and web page (FastAPI + uvicorn) for one model.

Options override ``PNEUMOSCAN_*`` environment variables (e.g. ``PNEUMOSCAN_API_KEY``, ``PNEUMOSCAN_CHECKPOINT``),
which override the defaults. With ``--backend onnx`` no PyTorch is imported.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from pneumoscan.errors import ConfigError, require
from pneumoscan.models.precision import PRECISIONS

logger = logging.getLogger(__name__)

# option name -> ServeSettings field; only options given on the command line override the environment.
_OPTIONS = ("checkpoint", "backend", "device", "precision", "population", "host", "port", "api_key", "max_upload_mb",
            "max_pixels", "max_files", "batch_size", "max_concurrent_uploads")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``serve`` sub-command."""
    p = sub.add_parser(
        "serve", help="serve the REST API and web page", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Endpoints: / (web page), GET /healthz, GET /v1/model, POST /v1/predict (multipart 'files'; "
               "?heatmap=true, ?preview=true), /docs, /openapi.json.\nResearch use only, not a medical device.",
    )
    p.add_argument("--checkpoint", type=Path, help="best.pt or an .onnx export (default: the shipped model)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"),
                   help="auto (default): onnx (faster, no PyTorch, no heatmaps) when the model is an .onnx file or the "
                        "shipped model with its export, torch (Grad-CAM heatmaps) for a .pt checkpoint or a "
                        "--precision other than fp32")
    p.add_argument("--device", help="torch device: auto (default), cpu, cuda[:N]")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="torch autocast (default auto: the precision the model was calibrated in, when native here; "
                        "else fp32)")
    p.add_argument("--population", help="operating point to label at (default: the model's default population)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; anything else exposes the server)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument("--api-key", help="require this X-API-Key on /v1 (prefer the PNEUMOSCAN_API_KEY variable: "
                                     "command lines are visible to other users)")
    p.add_argument("--max-upload-mb", type=float, help="largest file in MB (default 50)")
    p.add_argument("--max-pixels", type=int, help="largest decoded image, width x height (default 50,000,000)")
    p.add_argument("--max-files", type=int, help="most files per request (default 16)")
    p.add_argument("--batch-size", type=int, help="most images per network call (default 16)")
    p.add_argument("--max-concurrent-uploads", type=int,
                   help="most requests with a body in flight at once; more are answered 503 (default 16)")
    p.add_argument("--no-access-log", action="store_true", help="do not log every request (uvicorn access log)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Any:
    """``ServeSettings`` from the environment, overridden by the options given on the command line."""
    from pydantic import ValidationError

    from pneumoscan.inference.predictor import resolve_backend
    from pneumoscan.serving.settings import ServeSettings

    given = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name, None) is not None}
    if given.get("backend", os.environ.get("PNEUMOSCAN_BACKEND", "auto")) == "auto":
        # ServeSettings names a concrete backend; "auto" (the default) is settled here, from the model to serve.
        given["backend"] = resolve_backend("auto", given.get("checkpoint", os.environ.get("PNEUMOSCAN_CHECKPOINT")),
                                           precision=given.get("precision",
                                                               os.environ.get("PNEUMOSCAN_PRECISION", "auto")))
    try:
        return ServeSettings(**given)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid server settings: {problems}") from err


def run(args: argparse.Namespace) -> int:
    """Load the model (a bad checkpoint is a one-line error, before any port is bound), then serve until stopped."""
    for module in ("fastapi", "uvicorn", "multipart", "pydantic_settings"):
        require(module, "serve")
    import uvicorn

    from pneumoscan.serving.app import create_app
    from pneumoscan.serving.service import load_predictor

    settings = settings_from_args(args)
    if not settings.host_is_loopback and not settings.auth_required:
        logger.warning("serving on %s without an API key: anyone who can reach this address can use the model "
                       "(set PNEUMOSCAN_API_KEY)", settings.host)
    predictor = load_predictor(settings)
    app = create_app(settings, predictor=predictor)
    print(f"pneumoscan: serving {predictor.info.name} ({predictor.info.version}, {predictor.info.backend}) on "
          f"http://{_url_host(settings.host)}:{settings.port}/  (Ctrl+C to stop)", flush=True)
    level = logging.getLogger("pneumoscan").getEffectiveLevel()
    uvicorn.run(app, host=settings.host, port=settings.port, workers=1, log_level="info" if level <= logging.INFO
                else "warning", server_header=False, timeout_graceful_shutdown=10, access_log=not args.no_access_log)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
