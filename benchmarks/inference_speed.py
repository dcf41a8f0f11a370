"""Inference speed of one model: PyTorch fp32, PyTorch bf16 and ONNX Runtime, in one run, with ratios.

Measures the network call as the server and ``predict`` make it — ``Predictor.probabilities_from_prepared`` on
uint8 images already resized (normalisation, forward pass, calibration) — not image decoding:

- single-image latency (batch of 1): median and p90 in milliseconds;
- batch throughput: images per second at ``--batch-size``.

bf16 is measured only where it can pay off: on CUDA, or on a CPU with bf16 matrix units (AVX512-BF16 / AMX; see
``pneumoscan.models.hardware.cpu_has_bf16``). Elsewhere bf16 is emulated and slower; it is skipped with a note, or
measured and labelled "emulated" with ``--force-bf16``.

Examples::

    python benchmarks/inference_speed.py --checkpoint runs/cnn/best.pt
    python benchmarks/inference_speed.py --model resnet18 --image-size 224 --batch-size 32 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Row:
    """One backend's numbers."""

    backend: str
    device: str
    single_median_ms: float | None = None
    single_p90_ms: float | None = None
    batch_images_per_s: float | None = None
    single_speedup_vs_fp32: float | None = None
    batch_speedup_vs_fp32: float | None = None
    note: str = ""


def _time_calls(fn: Callable[[], object], seconds: float, min_iters: int, warmup: int = 3) -> list[float]:
    """Durations (s) of repeated calls: ``warmup`` untimed, then until ``seconds`` have passed and ``min_iters`` ran."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(out) < min_iters or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
        if len(out) >= 100_000:
            break
    return out


def measure(name: str, device: str, predictor: object, size: int, batch: int, seconds: float,
            min_iters: int) -> Row:
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, size=(1, size, size), dtype=np.uint8)
    many = rng.integers(0, 256, size=(batch, size, size), dtype=np.uint8)
    run = predictor.probabilities_from_prepared  # type: ignore[attr-defined]
    single = np.asarray(_time_calls(lambda: run(one), seconds, min_iters)) * 1000
    batched = np.asarray(_time_calls(lambda: run(many), seconds, max(3, min_iters // 4)))
    return Row(name, device, round(float(np.median(single)), 3), round(float(np.percentile(single, 90)), 3),
               round(batch / float(np.median(batched)), 1))


def checkpoint_for_model(name: str, image_size: int, folder: Path) -> Path:
    """A checkpoint with randomly initialised weights, so an architecture can be timed without training it."""
    from pneumoscan.data.preprocess import PreprocessConfig
    from pneumoscan.models import create_model
    from pneumoscan.models.checkpoint import save_checkpoint

    model = create_model(name)
    state = {"format_version": 1, "model": {"name": name, "num_classes": 1, "in_chans": 1},
             "state_dict": model.state_dict(), "preprocess": PreprocessConfig(image_size=image_size).to_dict(),
             "class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.5, "threshold_rule": "fixed 0.5",
             "temperature": 1.0, "operating_points": {}}
    return save_checkpoint(state, folder / f"{name}-{image_size}.pt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="a trained checkpoint (.pt)")
    what.add_argument("--model", help="an architecture name, timed with random weights")
    parser.add_argument("--image-size", type=int, default=224, help="with --model: input side (default 224)")
    parser.add_argument("--onnx", type=Path, help="use this export instead of exporting the checkpoint")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per measurement (default 3)")
    parser.add_argument("--min-iters", type=int, default=20, help="at least this many single-image calls")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda[:N]")
    parser.add_argument("--force-bf16", action="store_true", help="measure bf16 even without bf16 hardware")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    import torch

    from pneumoscan.export.onnx import export_onnx
    from pneumoscan.inference.predictor import Predictor
    from pneumoscan.models.hardware import cpu_has_bf16, resolve_hardware

    with tempfile.TemporaryDirectory(prefix="pneumoscan-speed-") as tmp:
        checkpoint = args.checkpoint or checkpoint_for_model(args.model, args.image_size, Path(tmp))
        fp32 = Predictor.from_checkpoint(checkpoint, device=args.device, precision="fp32")
        size = fp32.info.preprocess.image_size
        device = resolve_hardware(args.device, "fp32").device
        rows = [measure("pytorch fp32", device, fp32, size, args.batch_size, args.seconds, args.min_iters)]

        native_bf16 = device.startswith("cuda") or cpu_has_bf16()
        if native_bf16 or args.force_bf16:
            bf16 = Predictor.from_checkpoint(checkpoint, device=args.device, precision="bf16")
            row = measure("pytorch bf16", device, bf16, size, args.batch_size, args.seconds, args.min_iters)
            row.note = "" if native_bf16 else "emulated: this CPU has no bf16 units"
            rows.append(row)
        else:
            rows.append(Row("pytorch bf16", device, note="skipped: this CPU has no bf16 units (AVX512-BF16/AMX), "
                                                         "bf16 would be emulated and slower (--force-bf16 measures)"))

        onnx_path = args.onnx
        if onnx_path is None:
            onnx_path = Path(tmp) / "model.onnx"
            export_onnx(checkpoint, onnx_path, exporter=args.exporter)
        ort_predictor = Predictor.load(onnx_path, backend="onnx")
        providers = ",".join(p.replace("ExecutionProvider", "") for p in ort_predictor.backend.providers)  # type: ignore[attr-defined]
        rows.append(measure("onnxruntime", providers.lower(), ort_predictor, size, args.batch_size, args.seconds,
                            args.min_iters))

    base = rows[0]
    for row in rows:
        if row.single_median_ms and base.single_median_ms:
            row.single_speedup_vs_fp32 = round(base.single_median_ms / row.single_median_ms, 2)
        if row.batch_images_per_s and base.batch_images_per_s:
            row.batch_speedup_vs_fp32 = round(row.batch_images_per_s / base.batch_images_per_s, 2)

    context = {
        "model": fp32.info.name, "version": fp32.info.version, "image_size": size, "batch_size": args.batch_size,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "cpu_has_bf16": cpu_has_bf16(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if args.json:
        print(json.dumps({"context": context, "results": [asdict(r) for r in rows]}, indent=2))
        return 0
    print(f"model {context['model']} ({context['version']}) at {size}x{size}, batch {args.batch_size}; "
          f"{context['cores']} cores, torch {context['torch']} with {context['torch_threads']} threads"
          + (f", GPU {context['cuda']}" if context["cuda"] else ""))
    print(f"{'backend':<14} {'device':<8} {'1 image ms (p50/p90)':>22} {'batch img/s':>12} {'x fp32 (1 / batch)':>19}")
    for r in rows:
        if r.single_median_ms is None:
            print(f"{r.backend:<14} {r.device:<8} {r.note}")
            continue
        ratio = f"{r.single_speedup_vs_fp32:.2f} / {r.batch_speedup_vs_fp32:.2f}"
        print(f"{r.backend:<14} {r.device:<8} {r.single_median_ms:>10.2f} / {r.single_p90_ms:<9.2f} "
              f"{r.batch_images_per_s:>12.1f} {ratio:>19}" + (f"  ({r.note})" if r.note else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
