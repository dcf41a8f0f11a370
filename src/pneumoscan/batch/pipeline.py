"""Score an archive with Ray Data: decode in parallel tasks, run the model in actors, commit Parquet shards.

The pipeline, streamed so that memory stays bounded whatever the archive's size::

    from_items(paths not yet done)
      -> map_batches(decode_batch)            Ray tasks: read_image + prepare -> uint8 S x S, or the error text
      -> map_batches(Scorer, ActorPool(n))    Ray actors: the model loaded once per actor, batches of --batch-size
      -> driver: rows -> ShardSink            one Parquet shard per --shard-size rows, committed atomically

Why this shape: decoding (JPEG/DICOM, resize) is stateless and embarrassingly parallel, so it runs as plain tasks
wherever there is a free CPU; the network is stateful (a 13 MB model, an ONNX Runtime session or a torch module) and
is loaded once per actor instead of once per batch. Decode tasks and actors ask Ray for different resources, so Ray
Data does not fuse them into one operator and the two stages overlap. The same code runs in-process on a laptop
(``ray.init()`` starts a local cluster) and unchanged on a cluster (``RAY_ADDRESS`` or ``--address``), where each
node's CPUs or GPUs get their own actors; the input files and a ``--checkpoint`` must then be readable at the same
path on every node (the shipped model travels with the package).

Resource plan (defaults; ``--actors`` / ``--threads`` override):

- GPUs present: one actor per GPU (``num_gpus=1``), decode tasks on the CPUs.
- CPU only: ``cpus - max(1, cpus // 4)`` actors (at least one), each with ``cpus // actors`` intra-op threads, and
  the remaining quarter of the CPUs for decode tasks: on the measured shipped model, decoding a 224 px JPEG costs
  about a fifth of scoring it (BENCHMARKS.md §7). On 2 cores: one actor with 2 threads, decode beside it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.batch.inputs import Inputs, Item
from pneumoscan.batch.sink import ShardSink, arrow_schema, passthrough_name
from pneumoscan.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    """What one ``pneumoscan batch`` run did.

    Attributes:
        total: images in the input.
        already_done: skipped because a committed shard holds them (resume).
        scored: rows written by this run (errors included).
        errors: rows of this run whose file could not be read or scored.
        seconds: wall time of the scoring stage, from the pipeline's start to the last shard (actor start-up and
            model loading included; connecting to / starting Ray is ``startup_seconds``).
        warmup_seconds: from the pipeline's start to the first scored rows (actors starting, models loading).
        warmup_rows: rows that arrived with that first block.
        decode_seconds: time the decode tasks spent, summed over tasks.
        model_seconds: time the actors spent in the network call, summed over actors.
        actors: size of the actor pool.
        threads: intra-op threads per actor.
        backend: "onnx" or "torch".
        shards: shard files written by this run.
    """

    total: int
    already_done: int
    scored: int = 0
    errors: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    warmup_seconds: float = 0.0
    warmup_rows: int = 0
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    actors: int = 0
    threads: int = 0
    backend: str = ""
    shards: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float:
        """Rate once the actors run: rows after the first block over the time after it."""
        rest = self.seconds - self.warmup_seconds
        return (self.scored - self.warmup_rows) / rest if rest > 0 and self.scored > self.warmup_rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": self.images_per_second,
                "steady_images_per_second": self.steady_images_per_second}


# -- the two stages (module level: Ray pickles them by reference) -------------------------------------------------
def decode_batch(batch: dict[str, np.ndarray], preprocess: dict[str, Any],
                 max_pixels: int | None) -> dict[str, np.ndarray]:
    """Ray task: paths -> prepared uint8 (n, S, S) images (the model's own preprocessing, intensity standardisation
    included) and each file's colourfulness for the competence gate; a file that cannot be used gets its error text.

    Never raises for a bad file: any exception while reading one file becomes that row's error, so one corrupt
    image in a million cannot fail the job.
    """
    from pneumoscan.data.io import read_image
    from pneumoscan.data.preprocess import PreprocessConfig, prepare
    from pneumoscan.errors import ImageReadError
    from pneumoscan.inference.gate import colourfulness

    start = time.perf_counter()
    config = PreprocessConfig.from_dict(preprocess)
    side = int(config.image_size)
    paths = [str(p) for p in batch["path"]]
    images = np.zeros((len(paths), side, side), dtype=np.uint8)
    chroma = np.full(len(paths), np.nan)
    errors = []
    limit = {} if max_pixels is None else {"max_pixels": max_pixels}
    for i, path in enumerate(paths):
        try:
            images[i] = prepare(read_image(path, **limit), config)
            value = colourfulness(path)
            chroma[i] = np.nan if value is None else value
            errors.append("")
        except ImageReadError as err:
            errors.append(str(err))
        except Exception as err:  # a decoder bug on one file must not stop the archive; the row says what happened
            errors.append(f"{path}: cannot decode ({type(err).__name__}: {err})"[:500])
    per_row = (time.perf_counter() - start) / max(1, len(paths))
    return {"path": np.array(paths, dtype=object), "image": images, "error": np.array(errors, dtype=object),
            "chroma": chroma, "decode_s": np.full(len(paths), per_row)}


class Scorer:
    """Ray actor: holds one :class:`~pneumoscan.inference.predictor.Predictor` and scores prepared batches."""

    def __init__(self, checkpoint: str | None, backend: str, device: str, precision: str, threads: int | None,
                 providers: list[str] | None = None) -> None:
        from pneumoscan.inference.predictor import Predictor

        if backend == "torch" and threads:
            import torch

            torch.set_num_threads(int(threads))
        self.predictor = Predictor.load(checkpoint, backend=backend, device=device, precision=precision)
        if backend == "onnx" and (threads or providers):
            self._reopen_onnx(threads, providers)

    def _reopen_onnx(self, threads: int | None, providers: list[str] | None) -> None:
        """Re-open the ONNX session with this actor's thread count (ONNX Runtime's default is one per core,
        which oversubscribes a node that runs one actor per core) and execution providers."""
        from pneumoscan.inference.onnx_backend import OnnxBackend

        current = self.predictor.backend
        if type(current) is OnnxBackend:
            self.predictor.backend = OnnxBackend(current.path, threads=threads, providers=providers)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        paths = [str(p) for p in batch["path"]]
        errors = [str(e) for e in batch["error"]]
        predictions = score_prepared(self.predictor, paths, batch["image"], errors,
                                     [None if np.isnan(c) else float(c) for c in batch["chroma"]])
        per_row = (time.perf_counter() - start) / max(1, len(paths))
        info = self.predictor.info

        def col(name: str, default: Any = "") -> np.ndarray:
            return np.array([default if getattr(p, name, None) is None else getattr(p, name) for p in predictions],
                            dtype=object)

        return {
            "path": np.array(paths, dtype=object),
            "probability": np.array([np.nan if p.probability is None else p.probability for p in predictions],
                                    dtype=np.float64),
            "label": col("label"),
            "threshold": np.array([p.threshold for p in predictions], dtype=np.float64),
            "population": col("population"),
            "status": np.array([getattr(p, "status", None) or ("error" if p.error else "ok") for p in predictions],
                               dtype=object),
            "reason": col("reason"),
            "model": np.array([info.name] * len(paths), dtype=object),
            "model_version": np.array([info.version] * len(paths), dtype=object),
            "backend": np.array([info.backend] * len(paths), dtype=object),
            "error": col("error"),
            "decode_s": np.asarray(batch["decode_s"], dtype=np.float64),
            "model_s": np.full(len(paths), per_row),
        }


def score_prepared(predictor: Any, paths: list[str], images: np.ndarray, errors: list[str],
                   chroma: list[float | None] | None = None) -> list[Any]:
    """:class:`Prediction` per row: scored through the Predictor's own batch path, or an error row.

    The readable rows go through :meth:`Predictor.predict_prepared`, the very call ``predict_sources`` makes for a
    batch of prepared images, so a batch row gets exactly what ``pneumoscan predict`` gives that file (calibration,
    label, the competence gate's status and reason, the population).
    """
    results: list[Any] = [predictor.error_result(path, err) if err else None
                          for path, err in zip(paths, errors, strict=True)]
    ok = [i for i, err in enumerate(errors) if not err]
    if ok:
        try:
            scored = predictor.predict_prepared(np.stack([images[i] for i in ok]), [paths[i] for i in ok],
                                                chroma=None if chroma is None else [chroma[i] for i in ok])
            for i, pred in zip(ok, scored, strict=True):
                results[i] = pred
        except Exception as err:  # the model failing on a batch: its rows become errors, the job goes on
            logger.exception("scoring a batch of %d images failed", len(ok))
            for i in ok:
                results[i] = predictor.error_result(paths[i], f"{paths[i]}: scoring failed ({type(err).__name__})")
    return results


# -- the driver ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How many actors, with how many threads and which resources each."""

    actors: int
    threads: int
    actor_cpus: float
    actor_gpus: float
    decode_cpus: float
    device: str


def plan_resources(cpus: float, gpus: float, *, actors: int | None = None, threads: int | None = None) -> Plan:
    """The default resource plan described in the module docstring, with the user's overrides."""
    if gpus >= 1:
        n = actors or int(gpus)
        return Plan(n, threads or 1, actor_cpus=1.0 if cpus >= n + 1 else 0.0, actor_gpus=1.0, decode_cpus=1.0,
                    device="cuda")
    whole = max(1, int(cpus))
    n = actors or max(1, whole - max(1, whole // 4))
    t = threads or max(1, whole // n)
    # Each actor asks for one CPU; decode tasks ask for less than one, so Ray never fuses them into the actors and
    # they fit into whatever CPU the actors leave (on 2 cores: the one the single actor does not hold).
    return Plan(n, t, actor_cpus=1.0, actor_gpus=0.0, decode_cpus=0.5, device="cpu")


def model_metadata(info: Any) -> dict[str, Any]:
    """What an archive needs to be evaluated later without the model: stored in every shard's schema."""
    return {"name": info.name, "version": info.version, "backend": info.backend, "threshold": info.threshold,
            "threshold_rule": info.threshold_rule, "temperature": info.temperature,
            "operating_points": dict(info.operating_points), "class_names": list(info.class_names),
            "image_size": info.preprocess.image_size, "preprocess": info.preprocess.to_dict()}


def run_batch(inputs: Inputs, output: str | Path, *, checkpoint: str | Path | None = None, backend: str = "auto",
              address: str | None = None, num_cpus: int | None = None, actors: int | None = None,
              threads: int | None = None, batch_size: int = 32, shard_size: int = 2048, device: str = "auto",
              precision: str = "auto", max_pixels: int | None = None, progress: bool = True) -> BatchSummary:
    """Score ``inputs`` into the shard folder ``output``, resuming where a previous run stopped.

    Args:
        inputs: from :func:`pneumoscan.batch.inputs.load_inputs`.
        output: the ``OUT.parquet`` folder.
        checkpoint: ``.pt`` / ``.onnx``; None for the shipped model.
        backend: "auto", "onnx" or "torch" (see :func:`~pneumoscan.inference.predictor.resolve_backend`).
        address: Ray cluster address ("auto": the cluster ``ray start`` runs on this machine); None: ``RAY_ADDRESS``
            when set, else a local in-process cluster. An already initialised Ray (e.g. in tests) is used as is.
        num_cpus: CPUs of the local cluster (default: all); ignored when joining a cluster.
        actors, threads: override :func:`plan_resources`.
        batch_size: images per network call.
        shard_size: rows per Parquet shard: what a kill can lose and redo at most.
        device, precision: for the torch backend.
        max_pixels: decompression-bomb limit (see :func:`pneumoscan.data.io.read_image`).
        progress: show a progress bar (images/s and ETA) on stderr.

    Raises:
        MissingDependencyError: ray or pyarrow not installed (the ``batch`` extra).
        ConfigError: the output holds another model's scores, or is being written by another run.
    """
    from pneumoscan.batch import require_batch_deps
    from pneumoscan.inference.predictor import Predictor, resolve_backend

    require_batch_deps()
    if batch_size < 1 or shard_size < 1:
        raise ConfigError("--batch-size and --shard-size must be at least 1")
    backend = resolve_backend(backend, checkpoint, precision=precision)
    # The driver loads the model too, once: for the archive's metadata and to fail fast on a bad checkpoint before
    # any cluster resource is taken.
    info = Predictor.load(checkpoint, backend=backend, device="cpu", precision=precision).info
    if info.preprocess.lung_crop:
        # The decode tasks prepare images without a lung model; a lung-crop model would get uncropped inputs.
        raise ConfigError(f"{checkpoint}: pneumoscan batch does not support lung-crop models yet; "
                          "use pneumoscan predict for this model")
    meta = model_metadata(info)
    sink = ShardSink(output, {"model": info.name, "model_version": info.version, "backend": backend,
                              "input": inputs.source}, arrow_schema(inputs.extra_columns, meta))
    try:
        return _run(sink, inputs, info, output, checkpoint, backend, address, num_cpus, actors, threads, batch_size,
                    shard_size, device, precision, max_pixels, progress)
    finally:
        sink.close()


def _run(sink: ShardSink, inputs: Inputs, info: Any, output: str | Path, checkpoint: str | Path | None, backend: str,
         address: str | None, num_cpus: int | None, actors: int | None, threads: int | None, batch_size: int,
         shard_size: int, device: str, precision: str, max_pixels: int | None, progress: bool) -> BatchSummary:
    pending = [it for it in inputs.items if it.path not in sink.done]
    summary = BatchSummary(total=len(inputs.items), already_done=len(inputs.items) - len(pending), backend=backend)
    if summary.already_done:
        logger.info("%s: %d of %d images already scored; scoring the other %d", output, summary.already_done,
                    summary.total, len(pending))
    if not pending:
        return summary
    by_path = {it.path: it for it in pending}

    t0 = time.perf_counter()
    ray, started = _init_ray(address, num_cpus)
    try:
        resources = ray.cluster_resources()
        plan = plan_resources(float(resources.get("CPU", 1)), float(resources.get("GPU", 0)), actors=actors,
                              threads=threads)
        summary.actors, summary.threads = plan.actors, plan.threads
        logger.info("ray: %s CPUs, %s GPUs; %d %s actors x %d threads", resources.get("CPU"), resources.get("GPU", 0),
                    plan.actors, backend, plan.threads)
        ds = _dataset(ray, pending, info.preprocess.to_dict(), max_pixels, plan, checkpoint, backend, precision,
                      device, batch_size)
        summary.startup_seconds = time.perf_counter() - t0
        _consume(ds, sink, by_path, inputs, summary, shard_size, progress)
    finally:
        if started:
            ray.shutdown()
    return summary


def _init_ray(address: str | None, num_cpus: int | None) -> tuple[Any, bool]:
    import ray

    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "ignore_reinit_error": True}
    if address:
        kwargs["address"] = address
    elif num_cpus:
        kwargs["num_cpus"] = int(num_cpus)
    ray.init(**kwargs)
    return ray, True


def _dataset(ray: Any, pending: list[Item], preprocess: dict[str, Any], max_pixels: int | None, plan: Plan,
             checkpoint: str | Path | None, backend: str, precision: str, device: str, batch_size: int) -> Any:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours shows images/s and ETA of the whole archive, resume included
    if not logger.isEnabledFor(logging.INFO):  # Ray Data's per-run INFO lines are noise unless -v
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    # Small blocks keep shards flowing early and bound a kill's loss; the input is only paths.
    n_blocks = max(1, min(len(pending) // max(1, batch_size), 4 * plan.actors + 64))
    ds = ray.data.from_items([{"path": it.path} for it in pending], override_num_blocks=n_blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"preprocess": preprocess, "max_pixels": max_pixels},
                        batch_size=16, batch_format="numpy", num_cpus=plan.decode_cpus)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if plan.device == "cuda" else None
    return ds.map_batches(
        Scorer, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs={"checkpoint": None if checkpoint is None else str(checkpoint), "backend": backend,
                               "device": plan.device if device == "auto" else device, "precision": precision,
                               "threads": plan.threads, "providers": providers},
        compute=ray.data.ActorPoolStrategy(size=plan.actors), num_cpus=plan.actor_cpus,
        num_gpus=plan.actor_gpus or None)


def _consume(ds: Any, sink: ShardSink, by_path: dict[str, Item], inputs: Inputs, summary: BatchSummary,
             shard_size: int, progress: bool) -> None:
    from tqdm import tqdm

    t0 = time.perf_counter()
    buffer: list[dict[str, Any]] = []
    seen: set[str] = set()  # paths handed to the sink in this run: a retried Ray task must not write a path twice
    with tqdm(total=summary.total, initial=summary.already_done, unit="img", desc="batch", dynamic_ncols=True,
              disable=not progress, file=sys.stderr, smoothing=0.1) as bar:
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows = [r for r in _rows(block, by_path, inputs) if r["path"] not in seen]
            if len(rows) < len(block["path"]):
                logger.warning("%d rows delivered twice by the pipeline (a retried task) were dropped",
                               len(block["path"]) - len(rows))
            seen.update(r["path"] for r in rows)
            if not summary.warmup_rows:
                summary.warmup_seconds, summary.warmup_rows = time.perf_counter() - t0, len(rows)
            summary.decode_seconds += float(np.sum(block["decode_s"]))
            summary.model_seconds += float(np.sum(block["model_s"]))
            buffer += rows
            bar.update(len(rows))
            while len(buffer) >= shard_size:
                _commit(sink, buffer[:shard_size], summary)
                buffer = buffer[shard_size:]
        if buffer:
            _commit(sink, buffer, summary)
    summary.seconds = time.perf_counter() - t0


def _commit(sink: ShardSink, rows: list[dict[str, Any]], summary: BatchSummary) -> None:
    shard = sink.write(rows)
    if shard is not None:
        summary.shards.append(str(shard))
        summary.scored += len(rows)
        summary.errors += sum(1 for r in rows if r["error"])


def _rows(block: dict[str, np.ndarray], by_path: dict[str, Item], inputs: Inputs) -> list[dict[str, Any]]:
    out = []
    for i, path in enumerate(block["path"]):
        item = by_path[str(path)]
        prob = float(block["probability"][i])
        row: dict[str, Any] = {
            "path": item.path,
            "probability": None if math.isnan(prob) else prob,
            "threshold": float(block["threshold"][i]),
            "true_label": item.true_label,
            "group": item.group,
        }
        for name in ("label", "population", "status", "reason", "model", "model_version", "backend", "error"):
            value = block[name][i]
            row[name] = None if value is None or value == "" else str(value)
        for column in inputs.extra_columns:
            row[passthrough_name(column)] = item.extra.get(column) or None
        out.append(row)
    return out
