"""Training throughput: pure compute versus the real training pipeline, same model, batch size and precision.

Why: on a 2-core CPU every cycle the input pipeline spends (memory-mapped cache reads, uint8 → float, augmentation)
is a cycle the model does not get. The target is a pipeline at ≥ 90% of pure compute. This script measures, in one
process, for one architecture and image size:

- **compute**: forward + backward + optimizer step on a batch tensor already in memory, already normalised and in
  the model's memory format, under the autocast that :func:`pneumoscan.models.hardware.resolve_hardware` chose —
  the upper bound for training speed;
- **pipeline**: :func:`pneumoscan.training.trainer.train_one_epoch` — exactly what ``pneumoscan train`` runs — over a
  uint8 image cache memory-mapped from disk (decoded once by :func:`pneumoscan.data.cache.load_or_build` for
  ``--data``, or random images for ``synthetic``), with augmentation on;
- **data only** (diagnostic): the pipeline's input side alone (cache read, ``to_input`` with augmentation).

The machine is noisy (shared, other processes), so the measurements are interleaved — compute, pipeline, data,
compute, pipeline, data, … for ``--repeats`` rounds — and medians are reported; the ratio is median pipeline /
median compute. ``--compare-precision`` measures fp32 and bf16 (bf16 is skipped with a note on a CPU without bf16
matrix units, where it is emulated and slower), ``--compare-channels-last`` measures NCHW and channels-last.

Examples::

    python benchmarks/train_throughput.py --model resnet18 --image-size 128 --batch-size 32 --steps 20
    python benchmarks/train_throughput.py --model efficientnet_lite0 --image-size 192 \\
        --data /work/shared/data/kermany224 --compare-precision --compare-channels-last --json tp.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.errors import ConfigError, DataError, PneumoError
from pneumoscan.models import hardware
from pneumoscan.models.precision import PRECISIONS, autocast
from pneumoscan.models.registry import count_parameters, create_model
from pneumoscan.training.augment import BatchAugment
from pneumoscan.training.config import AugmentConfig
from pneumoscan.training.forward import batches, to_input
from pneumoscan.training.trainer import train_one_epoch

logger = logging.getLogger("benchmarks.train_throughput")

TARGET_RATIO = 0.90
KINDS = ("compute", "pipeline", "data")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One setting to measure: autocast precision and memory format."""

    precision: str
    channels_last: bool

    @property
    def label(self) -> str:
        return f"{self.precision}, {'channels-last' if self.channels_last else 'NCHW'}"


@dataclasses.dataclass
class Images:
    """The uint8 (N, S, S) images the pipeline reads (a memory map, like the training cache) and their labels."""

    images: np.ndarray
    labels: np.ndarray
    source: str


class Bench:
    """Model, optimizer, loss and augmentation of one variant, built once and measured repeatedly."""

    def __init__(self, args: argparse.Namespace, variant: Variant, data: Images) -> None:
        hw = hardware.resolve_hardware(args.device, variant.precision)
        self.hw = dataclasses.replace(hw, channels_last=variant.channels_last)
        self.variant, self.data, self.batch_size = variant, data, args.batch_size
        torch.manual_seed(args.seed)
        self.model = create_model(args.model).to(self.hw.device)
        if variant.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=1e-4)
        n_pos = int(data.labels.sum())
        pos_weight = torch.tensor([(len(data.labels) - n_pos) / max(n_pos, 1)], device=self.hw.device)
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.preprocess = PreprocessConfig(image_size=args.image_size, mean=0.5, std=0.25)
        self.augment = BatchAugment(AugmentConfig(), torch.Generator().manual_seed(args.seed + 23))
        first = np.arange(min(args.batch_size, len(data.labels)))
        idx = np.resize(first, args.batch_size)  # a full batch even from a tiny data set
        self.inputs = to_input(data.images[idx], self.preprocess, self.hw)
        self.targets = torch.from_numpy(data.labels[idx].astype(np.float32)).to(self.hw.device).unsqueeze(1)

    def _sync(self) -> None:
        if self.hw.device_type == "cuda":
            torch.cuda.synchronize()

    def compute(self, steps: int) -> float:
        """Images/s of forward + backward + step on the in-memory batch."""
        self.model.train()
        self._sync()
        start = time.perf_counter()
        for _ in range(steps):
            with autocast(self.hw):
                logits = self.model(self.inputs)
            loss = self.loss_fn(logits.float(), self.targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self._sync()
        return steps * self.batch_size / (time.perf_counter() - start)

    def pipeline(self, order: np.ndarray) -> float:
        """Images/s of the real training epoch over ``order`` (indices into the memory-mapped cache)."""
        self._sync()
        start = time.perf_counter()
        train_one_epoch(self.model, self.data.images, self.data.labels, order, batch_size=self.batch_size,
                        preprocess=self.preprocess, hw=self.hw, optimizer=self.optimizer, loss_fn=self.loss_fn,
                        augment=self.augment)
        self._sync()
        return len(order) / (time.perf_counter() - start)

    def data_only(self, order: np.ndarray) -> float:
        """Images/s of the pipeline's input side alone: cache read, conversion, augmentation, memory format."""
        self._sync()
        start = time.perf_counter()
        for idx in batches(order, self.batch_size):
            to_input(self.data.images[np.sort(idx)], self.preprocess, self.hw, self.augment)
        self._sync()
        return len(order) / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------- data ---

def synthetic_images(n: int, size: int, seed: int, folder: Path) -> Images:
    """Random uint8 images saved as .npy and memory-mapped, so reads cost what the training cache's reads cost."""
    rng = np.random.default_rng(seed)
    path = folder / f"synthetic-{n}x{size}.npy"
    np.save(path, rng.integers(0, 256, size=(n, size, size), dtype=np.uint8))
    labels = (rng.random(n) < 0.74).astype(np.int64)  # Kermany's train balance
    return Images(np.load(path, mmap_mode="r"), labels, f"synthetic ({n} random images)")


def real_images(spec: str, n: int, size: int, seed: int, cache_dir: Path | None, workers: int) -> Images:
    """Up to ``n`` labelled training images of ``spec``, decoded once through the image cache."""
    from pneumoscan.data.cache import load_or_build
    from pneumoscan.data.sources import load_records

    records = [r for r in load_records(spec) if r.label is not None]
    train = [r for r in records if r.split == "train"] or records  # never the test split when there is one
    if not train:
        raise DataError(f"{spec}: no labelled training images")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train), min(n, len(train)), replace=False))
    chosen = [train[i] for i in pick]
    images = load_or_build([r.path for r in chosen], size, cache_dir, workers)
    if not isinstance(images, np.memmap):  # first build returns it in memory; reload so both runs read a mmap
        images = load_or_build([r.path for r in chosen], size, cache_dir, workers)
    labels = np.array([r.label for r in chosen], dtype=np.int64)
    return Images(images, labels, f"{spec} ({len(chosen)} training images, cache)")


# ------------------------------------------------------------------------------------------------ variants ---

def choose_variants(args: argparse.Namespace) -> tuple[list[Variant], list[str]]:
    """The variants to measure and notes on the ones skipped (bf16 without bf16 units on the CPU)."""
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    on_cpu = not device.startswith("cuda")
    if args.compare_precision:
        precisions = ["fp32", "bf16"]
    else:
        resolved = hardware.resolve_hardware(args.device, args.precision).amp_dtype
        precisions = [{None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[resolved]]
    formats = [False, True] if args.compare_channels_last else [not args.no_channels_last]
    skipped: list[str] = []
    if "bf16" in precisions and on_cpu and not hardware.cpu_has_bf16():
        precisions.remove("bf16")
        skipped.append("bf16 skipped: this CPU has no bf16 matrix units (AVX512-BF16/AMX), so bf16 would be "
                       "emulated and slower; fp32 is what training uses here")
    elif "bf16" in precisions and not on_cpu and not torch.cuda.is_bf16_supported():
        precisions.remove("bf16")
        skipped.append("bf16 skipped: this GPU does not support bf16")
    variants = [Variant(p, cl) for p in precisions for cl in formats]
    if not variants:
        raise ConfigError("nothing to measure: " + "; ".join(skipped))
    return variants, skipped


def measure(benches: Sequence[Bench], args: argparse.Namespace, n_images: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds: every variant's compute, pipeline and data pass once per round."""
    rng = np.random.default_rng(args.seed)
    samples: dict[str, dict[str, list[float]]] = {b.variant.label: {k: [] for k in KINDS} for b in benches}
    n = args.steps * args.batch_size
    for bench in benches:  # warm-up: oneDNN / cuDNN pick their kernels on the first calls
        bench.compute(args.warmup)
        bench.pipeline(np.resize(rng.permutation(n_images), args.warmup * args.batch_size))
    for rnd in range(args.repeats):
        for bench in benches:
            order = np.resize(rng.permutation(n_images), n)
            runs: dict[str, Callable[[], float]] = {
                "compute": lambda b=bench: b.compute(args.steps),
                "pipeline": lambda b=bench, o=order: b.pipeline(o),
                "data": lambda b=bench, o=order: b.data_only(o),
            }
            for kind, run in runs.items():
                value = run()
                samples[bench.variant.label][kind].append(value)
                logger.info("round %d %s %s: %.1f img/s", rnd + 1, bench.variant.label, kind, value)
    return samples


def summarise(variants: Sequence[Variant], samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    for v in variants:
        s = samples[v.label]
        med = {k: statistics.median(s[k]) for k in KINDS}
        paired = statistics.median(p / c for p, c in zip(s["pipeline"], s["compute"], strict=True))
        rows.append({"variant": v.label, "precision": v.precision, "channels_last": v.channels_last,
                     "compute_images_per_s": round(med["compute"], 2),
                     "pipeline_images_per_s": round(med["pipeline"], 2),
                     "data_images_per_s": round(med["data"], 2),
                     "ratio": round(med["pipeline"] / med["compute"], 4), "ratio_paired_median": round(paired, 4),
                     "samples": {k: [round(x, 2) for x in s[k]] for k in KINDS}})
    return rows


def print_table(result: dict[str, Any]) -> None:
    c = result["config"]
    print(f"train throughput: {c['model']} ({result['parameters_m']:.2f} M params) at {c['image_size']} px, "
          f"batch {c['batch_size']}, {c['steps']} steps x {c['repeats']} interleaved rounds, median")
    print(f"data: {result['data']}; {result['hardware']}; torch {result['torch']}, {result['threads']} threads")
    print(f"{'variant':<22} {'compute img/s':>14} {'pipeline img/s':>15} {'pipeline/compute':>17} "
          f"{'data-only img/s':>16}")
    for r in result["results"]:
        print(f"{r['variant']:<22} {r['compute_images_per_s']:>14.1f} {r['pipeline_images_per_s']:>15.1f} "
              f"{r['ratio']:>16.1%} {r['data_images_per_s']:>16.1f}")
    for note in result["skipped"]:
        print(f"note: {note}")
    worst = min(r["ratio"] for r in result["results"])
    verdict = "met" if worst >= TARGET_RATIO else "NOT met"
    print(f"target pipeline/compute >= {TARGET_RATIO:.0%}: {verdict} (lowest {worst:.1%})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18", help="architecture (pneumoscan models)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="batches per measurement")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians over these)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches per variant before measuring")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a data spec (its training images are used)")
    p.add_argument("--cache-dir", type=Path, help="image cache folder for --data (default: pneumoscan's)")
    p.add_argument("--workers", type=int, default=0, help="decode processes for the cache (0 = all cores)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="autocast when not comparing (auto: as training would choose)")
    p.add_argument("--compare-precision", action="store_true", help="measure fp32 and bf16")
    p.add_argument("--no-channels-last", action="store_true", help="measure NCHW instead of channels-last")
    p.add_argument("--compare-channels-last", action="store_true", help="measure NCHW and channels-last")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log every measurement")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure as configured and return the result document (also printed / written by :func:`main`)."""
    if min(args.steps, args.repeats, args.batch_size) < 1 or args.warmup < 0:
        raise ConfigError("--steps, --repeats and --batch-size must be at least 1, --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    variants, skipped = choose_variants(args)
    n_images = args.steps * args.batch_size
    with tempfile.TemporaryDirectory(prefix="pneumoscan-tp-") as tmp:
        if args.data == "synthetic":
            data = synthetic_images(n_images, args.image_size, args.seed, Path(tmp))
        else:
            data = real_images(args.data, n_images, args.image_size, args.seed, args.cache_dir, args.workers)
        benches = [Bench(args, v, data) for v in variants]
        samples = measure(benches, args, len(data.labels))
        del benches
    return {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "parameters_m": count_parameters(create_model(args.model)) / 1e6,
        "data": data.source, "hardware": hardware.resolve_hardware(args.device, "fp32").description.rsplit(",", 1)[0],
        "torch": torch.__version__, "threads": torch.get_num_threads(), "target_ratio": TARGET_RATIO,
        "skipped": skipped, "results": summarise(variants, samples),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(args)
    except PneumoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
