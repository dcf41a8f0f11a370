"""The inference service behind the HTTP handlers: decode, batch, run the model once at a time, explain.

Why it is shaped like this:

- The :class:`~pneumoscan.inference.predictor.Predictor` is loaded once per process (in the app's lifespan) and
  shared by all requests.
- Nothing CPU-bound runs on the event loop: decoding and the network run in worker threads (``anyio.to_thread``), so
  ``/healthz`` and other requests stay responsive while a large DICOM is decoded.
- Decoding is concurrent but bounded (``decode_concurrency``): memory for huge images and CPU for inference stay
  bounded.
- The network runs one batch at a time (an ``anyio.Lock``): PyTorch and ONNX Runtime already use every core for one
  batch, and two batches at once only oversubscribe the cores. Requests that arrive while a batch runs are not just
  queued but *batched*: whoever takes the lock next scores every image waiting at that moment (up to
  ``batch_size``) in one call and hands each request its share. Under load this turns N small calls into one larger,
  more efficient one, without a timer that would add latency when the server is idle.
- Waiting for the lock happens on the event loop (not in a blocked thread), so a burst of requests cannot exhaust
  the thread pool.
- Grad-CAM needs gradients through the shared model, so it runs under the same lock, one request at a time.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from PIL import Image

from pneumoscan.data.io import read_image
from pneumoscan.errors import ConfigError, ImageReadError, http_status
from pneumoscan.inference.gate import GateDecision, colourfulness
from pneumoscan.inference.predictor import Prediction, Predictor
from pneumoscan.serving.settings import ServeSettings

logger = logging.getLogger(__name__)

#: Longest side of the preview image returned for display.
PREVIEW_MAX_SIDE = 768
HEATMAPS_NEED_TORCH = ("heatmaps need the torch backend (Grad-CAM uses gradients through the PyTorch model); this "
                       "server runs the onnx backend: ask without heatmap=true, or serve with --backend torch")


def error_status(err: ImageReadError) -> int:
    """HTTP status for a file that cannot be used, from the one table :data:`pneumoscan.errors.ERROR_TABLE`:
    413 too large, 415 not an image / unsupported format or variant, 422 empty, truncated or corrupt."""
    return http_status(err, default=422)


@dataclass
class Upload:
    """One received file."""

    name: str
    data: bytes
    error: ImageReadError | None = None  # set when the upload itself was refused (e.g. too many bytes)


@dataclass
class Decoded:
    """A file after decoding: the model input, or why there is none."""

    name: str
    prepared: np.ndarray | None = None  # uint8 (S, S)
    preview_png: bytes | None = None
    error: ImageReadError | None = None
    lungs: Any = None  # LungGeometry: from the lung crop, or found for the page's lung outline (preview)
    chroma: float | None = None  # colourfulness of the file, for the competence gate


@dataclass
class FileResult:
    """Everything the handler needs to build one ``ResultOut``."""

    name: str
    probability: float | None = None
    label: str | None = None
    error: ImageReadError | None = None
    images: dict[str, str] = field(default_factory=dict)  # ResultOut field name -> base64 PNG
    fields: dict[str, Any] = field(default_factory=dict)  # further ResultOut fields (lungs, heatmap_lung_fraction)
    prediction: Prediction | None = None  # status, reason, population, threshold, gate scores


@dataclass(eq=False)  # identity comparison: `job in queue` must not compare arrays
class _Job:
    images: np.ndarray  # uint8 (n, S, S)
    future: asyncio.Future[Any]  # (probabilities (n,), features (n, D) or None)


class InferenceService:
    """Turns uploaded bytes into probabilities with one shared :class:`Predictor`.

    Create it inside the running event loop (the app's lifespan): it owns an ``anyio.Lock``.
    """

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor = predictor
        self.settings = settings
        self._model_lock = anyio.Lock()
        self._decode_limiter = anyio.CapacityLimiter(settings.decode_concurrency)
        self._queue: list[_Job] = []
        self.batches_run = 0
        self.images_scored = 0

    @property
    def heatmaps_available(self) -> bool:
        """Grad-CAM needs the PyTorch model (``predictor.model``), which the onnx backend does not have."""
        return self.predictor.model is not None

    # -- decoding --------------------------------------------------------------------------------------------
    def _decode(self, upload: Upload, preview: bool) -> Decoded:
        if upload.error is not None:
            return Decoded(upload.name, error=upload.error)
        try:
            image = read_image(upload.data, name=upload.name, max_pixels=self.settings.max_pixels)
        except ImageReadError as err:
            return Decoded(upload.name, error=err)
        prepared, lungs = self.predictor.prepare_with_lungs(image)
        if preview and lungs is None:
            lungs = self._find_lungs(image)
        return Decoded(upload.name, prepared, _preview_png(image) if preview else None, lungs=lungs,
                       chroma=colourfulness(upload.data))

    def _find_lungs(self, image: np.ndarray) -> Any:
        """Lung geometry for the page's outline; None (and one warning) in a build without a lung model."""
        from pneumoscan.errors import CheckpointError

        try:
            return self.predictor.lung_segmenter().geometry(image)
        except CheckpointError as err:
            logger.warning("no lung outline: %s", err)
            return None

    async def decode(self, uploads: list[Upload], *, preview: bool = False) -> list[Decoded]:
        """Decode and preprocess every upload in worker threads (at most ``decode_concurrency`` at once)."""
        out: list[Decoded | None] = [None] * len(uploads)

        async def one(i: int, upload: Upload) -> None:
            out[i] = await anyio.to_thread.run_sync(self._decode, upload, preview, limiter=self._decode_limiter)

        async with anyio.create_task_group() as tg:
            for i, upload in enumerate(uploads):
                tg.start_soon(one, i, upload)
        return [d for d in out if d is not None]

    # -- scoring ---------------------------------------------------------------------------------------------
    async def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for uint8 (n, S, S) images, batched with whatever else is waiting."""
        probs, _ = await self.scores(images)
        return probs

    async def scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and penultimate features (for the gate) for uint8 (n, S, S) images, batched."""
        job = _Job(images, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        try:
            async with self._model_lock:
                if not job.future.done():  # else an earlier lock holder already scored it with its own batch
                    await self._run_waiting()
        except BaseException:  # cancelled while waiting (client gone): do not score it for nobody
            if job in self._queue:
                self._queue.remove(job)
            raise
        return await job.future

    async def _run_waiting(self) -> None:
        """Score the waiting jobs as one batch and settle every job's future (also when the model fails)."""
        batch = self._take_batch()
        # Shielded: a cancelled request must not leave the other requests of its batch without an answer.
        with anyio.CancelScope(shield=True):
            try:
                scored = await anyio.to_thread.run_sync(self._run_batch, np.concatenate([j.images for j in batch]))
            except Exception as err:
                for j in batch:
                    j.future.set_exception(err)
                return
        probs, feats = scored
        start = 0
        for j in batch:
            stop = start + len(j.images)
            j.future.set_result((probs[start:stop], None if feats is None else feats[start:stop]))
            start = stop

    def _take_batch(self) -> list[_Job]:
        """Waiting jobs in arrival order, up to ``batch_size`` images (always at least one job)."""
        batch: list[_Job] = []
        total = 0
        while self._queue:
            nxt = self._queue[0]
            if batch and total + len(nxt.images) > self.settings.batch_size:
                break
            batch.append(self._queue.pop(0))
            total += len(nxt.images)
        return batch

    def _run_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = [self.predictor.scores_from_prepared(images[i:i + self.settings.batch_size])
               for i in range(0, len(images), self.settings.batch_size)]
        self.batches_run += 1
        self.images_scored += len(images)
        feats = None if any(f is None for _, f in out) else np.concatenate([f for _, f in out])
        return np.concatenate([p for p, _ in out]), feats

    async def explain(self, prepared: np.ndarray, lungs: Any = None) -> dict[str, Any]:
        """Grad-CAM for one uint8 (S, S) image: base64 PNGs for ``heatmap_png_base64`` and ``overlay_png_base64``,
        and ``heatmap_lung_fraction`` (share of the heatmap inside the lungs; None without a lung model)."""
        if not self.heatmaps_available:
            raise ConfigError(HEATMAPS_NEED_TORCH)
        async with self._model_lock:
            return await anyio.to_thread.run_sync(self._explain, prepared, lungs)

    def _explain(self, prepared: np.ndarray, lungs: Any = None) -> dict[str, Any]:
        from pneumoscan.data.lungs import heatmap_lung_fraction
        from pneumoscan.explain.gradcam import explain_prepared, heatmap_png, lung_map_for, overlay_png

        cam = explain_prepared(self.predictor, prepared)
        # Without a known geometry, the prepared image is the whole film: find the lungs in it.
        lung_map = lung_map_for(self.predictor, prepared.astype(np.float32) / 255.0, lungs)
        share = heatmap_lung_fraction(cam, lung_map) if lung_map is not None else None
        return {"heatmap_png_base64": _b64(heatmap_png(cam)), "overlay_png_base64": _b64(overlay_png(prepared, cam)),
                "heatmap_lung_fraction": share}

    # -- everything ------------------------------------------------------------------------------------------
    async def predict(self, uploads: list[Upload], *, heatmap: bool = False, preview: bool = False,
                      population: str | None = None) -> list[FileResult]:
        """Score and gate every upload; a file that cannot be used gets ``error`` set and does not affect the others.

        ``population`` chooses the operating point for this request (None: the server's).
        """
        if heatmap and not self.heatmaps_available:
            raise ConfigError(HEATMAPS_NEED_TORCH)
        self.predictor.threshold_for(population)  # an unknown population is a ConfigError (400) before any work
        decoded = await self.decode(uploads, preview=preview)
        good = [d for d in decoded if d.prepared is not None]
        decisions: list[GateDecision] = []
        probs = np.zeros(0)
        if good:
            batch = np.stack([d.prepared for d in good])
            probs, feats = await self.scores(batch)
            decisions = await anyio.to_thread.run_sync(self._assess, batch, feats, [d.chroma for d in good])
        by_name = iter(zip(probs, decisions, strict=True))
        results: list[FileResult] = []
        for d in decoded:
            if d.prepared is None:
                results.append(FileResult(d.name, error=d.error))
                continue
            p, decision = next(by_name)
            pred = self.predictor.result(d.name, float(p), decision, population=population)
            result = FileResult(d.name, probability=float(p), label=pred.label, prediction=pred)
            if d.preview_png is not None:
                result.images["preview_png_base64"] = _b64(d.preview_png)
                if d.lungs is not None:
                    result.images["lung_outline_png_base64"] = _b64(_lung_outline_png(d.lungs))
            result.fields.update(_lung_fields(self.predictor, d.lungs))
            if heatmap:
                explained = await self.explain(d.prepared, d.lungs)
                result.fields["heatmap_lung_fraction"] = explained.pop("heatmap_lung_fraction")
                result.images.update(explained)
            results.append(result)
        return results

    def _assess(self, batch: np.ndarray, feats: np.ndarray | None, chroma: list[float | None]) -> list[GateDecision]:
        hook = self.predictor.lung_fraction
        lungs = [hook(im) for im in batch] if hook is not None else None
        return self.predictor.gate.assess(batch, feats, chroma=chroma, lung_fractions=lungs)

    def model_dict(self) -> dict[str, Any]:
        """The fields of ``ModelOut``."""
        info = self.predictor.info
        return {
            "name": info.name, "version": info.version, "backend": info.backend,
            "image_size": info.preprocess.image_size, "preprocess": info.preprocess.to_dict(),
            "threshold": info.threshold, "threshold_rule": info.threshold_rule, "temperature": info.temperature,
            "class_names": list(info.class_names), "operating_points": dict(info.operating_points),
            "metrics": dict(info.metrics), "heatmaps": self.heatmaps_available,
            "populations": {k: dict(v) for k, v in info.populations.items()},
            "default_population": info.default_population, "population": self.predictor.population,
            "gate": self.predictor.gate.describe(),
        }


def load_predictor(settings: ServeSettings) -> Predictor:
    """Load the model the settings name (onnx backend: no PyTorch import)."""
    predictor = Predictor.load(settings.checkpoint, backend=settings.backend, device=settings.device,
                               precision=settings.precision, population=settings.population)
    if settings.backend == "onnx" and predictor.info.backend != "onnx":  # pragma: no cover - Predictor.load's job
        raise ConfigError("--backend onnx needs an .onnx file")
    return predictor


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _lung_fields(predictor: Predictor, lungs: Any) -> dict[str, Any]:
    """``lungs`` (lung-crop models: found, box, fallback) and ``input_box`` (where the model input — and so the
    heatmap — lies in the image, fractions x0, y0, x1, y1) of one result."""
    cfg = predictor.info.preprocess
    if not cfg.lung_crop or lungs is None:
        return {}
    from pneumoscan.data.lungs import crop_box

    left, top, right, bottom = crop_box(lungs, cfg.lung_margin, 10000, 10000)
    return {"lungs": lungs.report(), "input_box": [left / 1e4, top / 1e4, right / 1e4, bottom / 1e4]}


def _lung_outline_png(lungs: Any) -> bytes:
    """Transparent PNG (square, whole-image frame like the preview) with only the lung outline drawn."""
    from pneumoscan.data.lungs import outline_rgba, resize_map

    buf = io.BytesIO()
    Image.fromarray(outline_rgba(resize_map(lungs.mask, 384, 384)), mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _preview_png(image: np.ndarray) -> bytes:
    """The decoded [0, 1] grey image as an 8-bit PNG, aspect kept, longest side at most :data:`PREVIEW_MAX_SIDE`."""
    grey = Image.fromarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8), mode="L")
    grey.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    grey.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
