"""End-to-end throughput of ``pneumoscan predict`` (torch, onnx) and ``pneumoscan batch`` against the pure-compute
bound, side by side in one run, on the same images; plus the share of time in decoding vs the model, and label
parity between the backends.

Rows (all on the shipped model unless ``--checkpoint``):

- ``compute onnx`` / ``compute torch``: ``Predictor.probabilities_from_prepared`` on batches of ``--batch-size``
  uint8 images already decoded and resized, in memory (the bound no pipeline can beat on this machine);
- ``decode``: ``read_image`` + ``prepare`` in one process, per image (what the model waits for without parallelism);
- ``predict onnx`` / ``predict torch``: the CLI in a subprocess, wall time from start to exit (model load included);
- ``batch``: ``pneumoscan batch`` in a subprocess on a local Ray cluster of ``--num-cpus``, wall time from start to
  exit (Ray start-up included), and its steady rate from the first committed row to the last.

Example (the BENCHMARKS.md §7 run)::

    flock /tmp/pneumoscan-heavy.lock python benchmarks/batch_throughput.py \\
        --data ../shared/data/kermany224 --num-cpus 2 --json runs/bench-batch.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


class _Rows(dict):
    """The result rows; each one is echoed to stderr as it is measured, so a stopped run still shows its figures."""

    def __setitem__(self, key: str, value: dict) -> None:
        super().__setitem__(key, value)
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {json.dumps(value)}", file=sys.stderr, flush=True)


def _images(data: Path, limit: int | None) -> list[Path]:
    data = data.resolve()
    files = sorted(p for s in SPLITS for p in (data / s).rglob("*") if p.is_file() and not p.name.startswith("."))
    return files[:limit] if limit else files


def _cli(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pneumoscan.cli.main", *args], capture_output=True, text=True,
                          env=env)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"pneumoscan {' '.join(args[:1])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done


def _compute_rate(predictor: object, prepared: np.ndarray, batch_size: int, seconds: float) -> float:
    batches = [prepared[i:i + batch_size] for i in range(0, len(prepared) - batch_size + 1, batch_size)]
    predictor.probabilities_from_prepared(batches[0])  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3 * batch_size:
        predictor.probabilities_from_prepared(batches[(n // batch_size) % len(batches)])
        n += batch_size
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Kaggle-layout folder ({train,val,test}/CLASS/*)")
    parser.add_argument("--checkpoint", help=".pt checkpoint (torch rows); default: the shipped model")
    parser.add_argument("--onnx", help=".onnx export (onnx rows); default: the shipped model's")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--compute-seconds", type=float, default=15.0)
    parser.add_argument("--skip-torch-predict", action="store_true", help="leave out the slowest row")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    from pneumoscan.data.io import read_image
    from pneumoscan.inference.predictor import Predictor

    files = _images(args.data, args.limit)
    n = len(files)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                        os.environ.get("PYTHONPATH")]))}
    rows: dict[str, dict[str, float | str | None]] = _Rows()

    # Pure compute bound and decode cost, in this process.
    onnx = Predictor.load(args.onnx, backend="onnx") if args.onnx else Predictor.default(backend="onnx")
    torch_p = (Predictor.load(args.checkpoint, backend="torch", precision="fp32") if args.checkpoint
               else Predictor.default(backend="torch", precision="fp32"))
    sample = files[:: max(1, n // 512)][:512]
    start = time.perf_counter()
    prepared = np.stack([onnx.prepare(read_image(f)) for f in sample])
    decode_per_image = (time.perf_counter() - start) / len(sample)
    rows["decode (1 process)"] = {"images_per_s": 1 / decode_per_image, "ms_per_image": 1000 * decode_per_image}
    for name, pred in (("compute onnx", onnx), ("compute torch", torch_p)):
        rate = _compute_rate(pred, prepared, args.batch_size, args.compute_seconds)
        rows[name] = {"images_per_s": rate, "ms_per_image": 1000 / rate}
    del torch_p
    # One intra-op thread: what one actor per core computes on a cluster node (the scaling unit).
    from pneumoscan.inference.onnx_backend import OnnxBackend

    onnx.backend = OnnxBackend(onnx.backend.path, threads=1)
    rate = _compute_rate(onnx, prepared, args.batch_size, args.compute_seconds)
    rows["compute onnx, 1 thread"] = {"images_per_s": rate, "ms_per_image": 1000 / rate}

    with tempfile.TemporaryDirectory(prefix="pneumoscan-bench-") as tmp:
        tmp_path = Path(tmp)
        manifest = tmp_path / "manifest.csv"
        with manifest.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path"])
            w.writerows([str(f)] for f in files)
        predicted: dict[str, dict[str, tuple[float, str]]] = {}
        backends = ["onnx"] if args.skip_torch_predict else ["onnx", "torch"]
        for backend in backends:
            out = tmp_path / f"predict-{backend}.csv"
            model = ["--checkpoint", args.onnx if backend == "onnx" else args.checkpoint] if (
                args.onnx if backend == "onnx" else args.checkpoint) else []
            seconds, _ = _cli(["predict", *map(str, files), *model, "--backend", backend, "--batch-size",
                               str(args.batch_size), "--format", "csv", "--output", str(out)], env)
            rows[f"predict {backend}"] = {"images_per_s": n / seconds, "seconds": seconds}
            predicted[backend] = {r["path"]: (float(r["probability"] or "nan"), r["label"])
                                  for r in csv.DictReader(out.open())}
        out = tmp_path / "batch.parquet"
        model = ["--checkpoint", args.onnx] if args.onnx else []
        seconds, done = _cli(["batch", "--input", str(manifest), "--output", str(out), *model, "--backend", "onnx",
                              "--num-cpus", str(args.num_cpus), "--batch-size", str(args.batch_size), "--json",
                              "--no-progress"], env)
        summary = json.loads(done.stdout)
        busy = summary["decode_seconds"] + summary["model_seconds"]
        rows["batch (Ray, onnx)"] = {
            "images_per_s": n / seconds, "seconds": seconds, "steady_images_per_s": summary["steady_images_per_second"],
            "startup_s": seconds - summary["seconds"] + summary["warmup_seconds"],
            "actors": summary["actors"], "threads": summary["threads"],
            "decode_share": summary["decode_seconds"] / busy if busy else None,
            "decode_s": summary["decode_seconds"], "model_s": summary["model_seconds"]}
        import pyarrow.parquet as pq

        batch = {r["path"]: (r["probability"], r["label"]) for r in pq.read_table(out).to_pylist()}

    parity: dict[str, float | int] = {}
    if "torch" in predicted:
        common = sorted(set(predicted["onnx"]) & set(predicted["torch"]))
        parity["onnx_vs_torch_labels_differ"] = sum(predicted["onnx"][p][1] != predicted["torch"][p][1]
                                                    for p in common)
        parity["onnx_vs_torch_max_prob_diff"] = max(abs(predicted["onnx"][p][0] - predicted["torch"][p][0])
                                                    for p in common)
        parity["compared"] = len(common)
    parity["batch_vs_predict_onnx_max_prob_diff"] = max(abs((batch[p][0] or 0) - predicted["onnx"][p][0])
                                                        for p in predicted["onnx"])
    parity["batch_vs_predict_onnx_labels_differ"] = sum(batch[p][1] != predicted["onnx"][p][1]
                                                        for p in predicted["onnx"])

    bound = rows["compute onnx"]["images_per_s"]
    print(f"{n} images, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, batch {args.batch_size}")
    print("| row | images/s | % of ONNX compute bound | notes |")
    print("| --- | --- | --- | --- |")
    for name, r in rows.items():
        rate = float(r["images_per_s"])
        notes = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                          if k != "images_per_s")
        print(f"| {name} | {rate:.1f} | {100 * rate / bound:.0f}% | {notes} |")
    print("parity:", json.dumps(parity))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"images": n, "rows": rows, "parity": parity,
                                         "date": time.strftime("%Y-%m-%d")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
