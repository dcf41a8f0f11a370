"""The REST API and web page: ``create_app(settings)`` builds a FastAPI application around one loaded model.

Endpoints:

- ``GET /``: the web page (static, no external assets, works offline).
- ``GET /healthz``: liveness/readiness, always open (no API key).
- ``GET /v1/model``: the deployed model (name, version, input size, threshold, operating points, populations and the
  default one, competence gate, metrics).
- ``POST /v1/predict``: multipart, one or more files under ``files``; ``heatmap=true`` (query parameter or form
  field) adds Grad-CAM images (torch backend only: 400 otherwise), ``preview=true`` adds the decoded image as PNG
  (for display: browsers cannot show DICOM), ``population=NAME`` labels at that population's threshold. Each result
  has ``status`` ``ok`` or ``out_of_scope`` (competence gate; then ``label`` is null, ``reason`` says why and the
  probability is for information only).
- ``GET /docs``: Swagger UI. Offline when a local copy of Swagger UI is installed (the ``swagger-ui-py`` package);
  otherwise FastAPI's default page, which loads Swagger UI from a CDN and needs internet. ``/openapi.json`` always
  works.

Errors are JSON ``{"detail": "<file>: <problem>"}``, with the status of the one error table
(:data:`pneumoscan.errors.ERROR_TABLE`, shared with the CLI). With one file, a file that cannot be used is answered
413 (too many bytes or pixels), 415 (not an image, or an unsupported format or DICOM variant: GIF, WebP, PALETTE COLOR,
no pixel data, ...) or 422 (empty, truncated, corrupt: JPEG, PNG and DICOM header or pixel data alike). With several
files the answer is 200 and each bad file carries ``error`` (probability and label null), so one bad file in a batch
does not cost the client the others. Too many files, or a body larger than all files at their limit, is 413 for the
whole request; no files is 422. An image that decodes but is not a chest X-ray is not an error: 200 with
``status: "out_of_scope"`` (the competence gate).

Security (:class:`RequestGuard`, from the headers, before any byte of the body is read): when a key is configured,
``/v1/*`` needs ``X-API-Key`` (compared in constant time, ``secrets.compare_digest``) or is answered 401 without the
body being read or spooled; a declared or streamed body over the request limit is 413 as soon as it passes it; at
most ``max_concurrent_uploads`` requests with a body run at once (503 with ``Retry-After`` beyond). ``/healthz``,
the page (``/``, ``/static``) and the docs (``/docs``, ``/openapi.json``) are open without a key; the page asks for
the key and sends it with its ``/v1`` calls. The page is served with a strict Content-Security-Policy (only
same-origin scripts, styles and images) so it cannot load anything from elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from pneumoscan import __version__
from pneumoscan.errors import ImageTooLargeError, PneumoError, RequestTooLargeError, http_status
from pneumoscan.inference.predictor import Predictor
from pneumoscan.serving.schemas import ErrorOut, HealthOut, ModelOut, PredictOut, ResultOut
from pneumoscan.serving.service import HEATMAPS_NEED_TORCH, InferenceService, Upload, error_status, load_predictor
from pneumoscan.serving.settings import ServeSettings

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong X-API-Key"},
}
_FILE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"model": ErrorOut, "description": "heatmap requested from the onnx backend"},
    413: {"model": ErrorOut, "description": "file too large (bytes or pixels), too many files"},
    415: {"model": ErrorOut, "description": "not an image, or an unsupported format / DICOM variant (one file)"},
    422: {"model": ErrorOut, "description": "no files, or an empty / truncated / corrupt image (one file)"},
}

NO_FILES = "no files: upload one or more images in the multipart form field 'files'"
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="required when the server was started with an API key")


class RequestTooLarge(HTTPException):
    """The request body is larger than every allowed file together (raised while the body streams in).

    An :class:`HTTPException` so that FastAPI's form parsing passes it through instead of answering 400; its status
    comes from the error table (:class:`~pneumoscan.errors.RequestTooLargeError`).
    """

    def __init__(self, limit: int) -> None:
        err = RequestTooLargeError(f"request too large: more than {limit / 1024 / 1024:.0f} MB")
        super().__init__(http_status(err), str(err))


class RequestGuard:
    """Pure ASGI middleware doing, from the headers alone and before any byte of the body is read, what must not
    cost an unauthenticated or abusive client the server's memory or disk:

    1. **API key** on ``/v1/*`` (when one is configured): a missing or wrong ``X-API-Key`` is answered 401 without
       calling ``receive()``, so the body is neither read nor spooled (the FastAPI dependency behind it only
       documents the key in the OpenAPI schema and checks again);
    2. **declared size**: a ``Content-Length`` over the request limit is answered 413 at once;
    3. **concurrent uploads**: at most ``max_concurrent_uploads`` requests with a body are in flight; one more is
       answered 503 with ``Retry-After`` (each may spool up to the request limit to disk);
    4. **streamed size**: the body is counted as it streams, so a chunked body or one whose ``Content-Length`` is
       absent is stopped with 413 as soon as it passes the limit.

    Every refusal of a request that has a body carries ``Connection: close``: the unread rest of the body must not be
    taken for the next request on the connection.
    """

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app = app
        self.limit = settings.max_request_bytes
        self.max_active = settings.max_concurrent_uploads
        self.key = None if settings.api_key is None else settings.api_key.get_secret_value().encode("utf-8")
        self.active = 0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        declared = next((v for k, v in headers if k == b"content-length"), None)
        has_body = any(k == b"transfer-encoding" for k, _ in headers) or (
            declared is not None and declared.strip() not in (b"", b"0"))
        path = str(scope.get("path", ""))
        if self.key is not None and (path == "/v1" or path.startswith("/v1/")):
            given = next((v for k, v in headers if k == b"x-api-key"), None)
            if not given:
                await _refuse(send, 401, "missing API key: send it in the X-API-Key header", has_body,
                              {"WWW-Authenticate": "APIKey"})
                return
            if not secrets.compare_digest(given, self.key):
                await _refuse(send, 401, "invalid API key", has_body, {"WWW-Authenticate": "APIKey"})
                return
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            await _refuse(send, 413, RequestTooLarge(self.limit).detail, has_body)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_active:
            await _refuse(send, 503, f"busy: {self.active} uploads in progress (the server's "
                          "--max-concurrent-uploads); retry shortly", has_body, {"Retry-After": "1"})
            return
        self.active += 1
        seen = 0
        over = False

        async def counted() -> Any:
            nonlocal seen, over
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise RequestTooLarge(self.limit)
            return message

        async def closing(message: Any) -> None:
            if over and message.get("type") == "http.response.start":  # the rest of the body stays unread
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, closing)
        finally:
            self.active -= 1


async def _refuse(send: Callable[[Any], Awaitable[None]], status: int, detail: str, close: bool,
                  headers: dict[str, str] | None = None) -> None:
    """Answer ``{"detail": ...}`` straight from the middleware, without reading the request body."""
    body = json.dumps({"detail": detail}).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# -- dependencies ----------------------------------------------------------------------------------------------------
def get_service(request: Request) -> InferenceService:
    service: InferenceService | None = getattr(request.app.state, "service", None)
    if service is None:  # only between startup failure and exit, or when the app is used without its lifespan
        raise HTTPException(503, "model not loaded")
    return service


def require_api_key(request: Request, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """Check ``X-API-Key`` when the server has a key (constant-time comparison); no-op otherwise."""
    settings: ServeSettings = request.app.state.settings
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode("utf-8")
    if not key:
        raise HTTPException(401, "missing API key: send it in the X-API-Key header",
                            headers={"WWW-Authenticate": "APIKey"})
    if not secrets.compare_digest(key.encode("utf-8"), expected):
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "APIKey"})


Service = Annotated[InferenceService, Depends(get_service)]


# -- the application ---------------------------------------------------------------------------------------------------
def create_app(settings: ServeSettings | None = None, *, predictor: Predictor | None = None) -> FastAPI:
    """Build the application.

    Args:
        settings: server settings; default: from ``PNEUMOSCAN_*`` environment variables.
        predictor: an already loaded model (the CLI loads it first so that a bad checkpoint is a one-line error);
            default: loaded by the lifespan from ``settings``. Either way it is loaded once per process.
    """
    settings = settings if settings is not None else ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = predictor if predictor is not None else await anyio.to_thread.run_sync(load_predictor, settings)
        service = app.state.service = InferenceService(loaded, settings)
        logger.info("serving %s (%s) with the %s backend; API key %s", loaded.info.name, loaded.info.version,
                    loaded.info.backend, "required" if settings.auth_required else "not required")
        try:
            yield
        finally:
            logger.info("scored %d images in %d network calls", service.images_scored, service.batches_run)
            app.state.service = None

    app = FastAPI(
        title="pneumoscan",
        version=__version__,
        summary="Pneumonia probability for chest X-rays (JPEG, PNG, DICOM). Research use, not a medical device.",
        lifespan=lifespan,
        docs_url=None,  # /docs is added below, with local Swagger UI assets when installed
        redoc_url=None,  # ReDoc is CDN-only
    )
    app.state.settings = settings
    app.state.service = None
    _mark_binary_uploads(app)
    app.add_middleware(RequestGuard, settings=settings)
    _add_exception_handlers(app)
    _add_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/healthz", response_model=HealthOut, tags=["service"])
    async def healthz(request: Request) -> HealthOut:
        """Liveness and readiness (the model is loaded before the server accepts requests); no API key needed."""
        ready = getattr(request.app.state, "service", None) is not None
        return HealthOut(status="ok" if ready else "loading", auth_required=settings.auth_required,
                         pneumoscan_version=__version__)

    @app.get("/v1/model", response_model=ModelOut, tags=["model"], responses=_ERRORS,
             dependencies=[Depends(require_api_key)])
    async def model(service: Service) -> ModelOut:
        """The deployed model: name, version, input size, threshold and rule, operating points, populations (with
        their thresholds and the default), the competence gate's limits, metrics."""
        return ModelOut(**service.model_dict())

    @app.post("/v1/predict", response_model=PredictOut, tags=["model"], responses=_FILE_ERRORS,
              dependencies=[Depends(require_api_key)])
    async def predict(
        request: Request,
        service: Service,
        files: Annotated[list[UploadFile], File(description="one or more images: JPEG, PNG, TIFF, BMP, DICOM")],
        heatmap: Annotated[bool, Query(description="add Grad-CAM heatmap and overlay PNGs (torch only)")] = False,
        preview: Annotated[bool, Query(description="add the decoded image as PNG, for display")] = False,
        population: Annotated[str | None, Query(description="operating point to label at (GET /v1/model lists "
                                                            "them; default: the server's)")] = None,
    ) -> PredictOut:
        """Probability of pneumonia, label, threshold and competence-gate status for each image, in upload order.

        ``status`` is ``ok`` (labelled) or ``out_of_scope``: the gate refused the image (not a frontal chest X-ray
        like the model's training images; ``reason`` says why); its ``label`` is null and its ``probability`` is
        given for information only. ``heatmap``, ``preview`` and ``population`` may be sent as query parameters or
        as form fields.
        """
        started = time.perf_counter()
        # Also accepted as form fields, read from the already parsed form: declared as Form parameters they would
        # appear in the schema, and Swagger UI would send them with every try.
        form = await request.form()
        heatmap = heatmap or _form_flag(form.get("heatmap"), "heatmap")
        preview = preview or _form_flag(form.get("preview"), "preview")
        form_population = form.get("population")
        population = population or (str(form_population).strip() if isinstance(form_population, str) else None) \
            or None
        if heatmap and not service.heatmaps_available:
            raise HTTPException(400, HEATMAPS_NEED_TORCH)
        if not files:
            raise HTTPException(422, NO_FILES)
        if len(files) > settings.max_files:
            raise RequestTooLargeError(f"too many files: {len(files)}, at most {settings.max_files} per request")
        uploads = [await _receive(f, i, settings.max_upload_bytes) for i, f in enumerate(files)]
        results = await service.predict(uploads, heatmap=heatmap, preview=preview, population=population)
        if len(results) == 1 and results[0].error is not None:
            err = results[0].error
            raise HTTPException(error_status(err), str(err))
        info = service.predictor.info
        chosen = population or service.predictor.population
        threshold = service.predictor.threshold_for(chosen)
        out = PredictOut(model=ModelOut(**service.model_dict()), results=[
            ResultOut(filename=r.name, probability=r.probability, label=r.label, threshold=threshold,
                      model=info.name, version=info.version, population=chosen,
                      status="error" if r.error is not None else (r.prediction.status if r.prediction else "ok"),
                      reason=str(r.error) if r.error is not None else (r.prediction.reason if r.prediction else None),
                      gate=r.prediction.gate if r.prediction else None,
                      error=None if r.error is None else str(r.error), **r.images, **r.fields)
            for r in results])
        logger.info("predict: %d file(s), %d failed, %d out of scope, %.0f ms", len(results),
                    sum(r.error is not None for r in results),
                    sum(r.prediction is not None and r.prediction.status == "out_of_scope" for r in results),
                    1000 * (time.perf_counter() - started))
        return out

    return app


async def _receive(upload: UploadFile, index: int, limit: int) -> Upload:
    """Read one uploaded file, at most ``limit`` bytes (a longer one becomes an error, not a read of all of it)."""
    name = _safe_name(upload.filename, index)
    try:
        data = await upload.read(limit + 1)
    finally:
        await upload.close()
    if len(data) > limit:
        return Upload(name, b"", ImageTooLargeError(name, f"file too large: more than {limit / 1024 / 1024:g} MB "
                                                          "(the server's --max-upload-mb)"))
    return Upload(name, data)


def _form_flag(value: object, name: str) -> bool:
    """A boolean form field: true/1/yes/on or false/0/no/off (absent is false)."""
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise HTTPException(422, f"{name}: expected true or false, got {str(value)[:40]!r}")


def _safe_name(filename: str | None, index: int) -> str:
    """The base name of an uploaded file, printable and at most 200 characters; ``upload-N`` when absent."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()[:200]
    return base or f"upload-{index + 1}"


def _add_exception_handlers(app: FastAPI) -> None:
    """Every error answer is JSON ``{"detail": str}``."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if tuple(e.get("loc", ())) == ("body", "files") and e.get("type") == "missing":
                problems.append(NO_FILES)
                continue
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(PneumoError)
    async def user_error(request: Request, exc: PneumoError) -> JSONResponse:
        """Status from the one error table (pneumoscan.errors.ERROR_TABLE); options and the like are 400."""
        return JSONResponse({"detail": str(exc)}, status_code=http_status(exc, default=400))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error (see the server log)"}, status_code=500)


def _mark_binary_uploads(app: FastAPI) -> None:
    """Add ``format: binary`` to upload fields in the OpenAPI schema.

    FastAPI writes OpenAPI 3.1 file fields as ``contentMediaType`` only; Swagger UI then shows a text box instead of
    a file picker for a list of files. ``format: binary`` (the OpenAPI 3.0 spelling, still valid) fixes that.
    """
    generate = app.openapi

    def patch(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and node.get("contentMediaType") == "application/octet-stream":
                node.setdefault("format", "binary")
            for value in node.values():
                patch(value)
        elif isinstance(node, list):
            for value in node:
                patch(value)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            patch(generate())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def local_swagger_ui() -> Path | None:
    """Folder of a locally installed Swagger UI 5 (package ``swagger-ui-py``), or None.

    Found without importing the package (its import pulls in web-framework adapters we do not need).
    """
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        static = Path(location) / "static"
        if (static / "swagger-ui-bundle.js").is_file() and (static / "swagger-ui.css").is_file():
            return static
    return None


def _add_docs(app: FastAPI) -> None:
    assets = local_swagger_ui()
    if assets is not None:
        app.mount("/docs/assets", StaticFiles(directory=assets), name="swagger-ui")
        urls = {"swagger_js_url": "/docs/assets/swagger-ui-bundle.js",
                "swagger_css_url": "/docs/assets/swagger-ui.css",
                "swagger_favicon_url": "/docs/assets/favicon-32x32.png"}
    else:
        logger.info("Swagger UI is not installed locally (pip install swagger-ui-py): /docs loads it from a CDN and "
                    "needs internet; /openapi.json works offline")
        urls = {}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="pneumoscan API", **urls)

    app.state.docs_offline = assets is not None
