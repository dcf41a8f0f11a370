"""Soak test for ``pneumoscan serve``: many requests of real images mixed with garbage, RSS over time, error counts
by status and latency percentiles — to see whether memory levels off and whether the server stays correct.

Loopback only (the server is started here, on a free 127.0.0.1 port, and stopped at the end). Example::

    python benchmarks/soak.py --backend onnx --requests 10000 --concurrency 8 --output runs/soak/onnx.json

Each request uploads one file to ``POST /v1/predict``: a real X-ray from ``--images`` (default
``../shared/data/kermany224/test``) or, with probability ``--garbage`` (default 0.1), a bad file drawn from a fixed
set (random bytes, empty, text, truncated JPEG, GIF, WebP, half a DICOM, a decompression-bomb PNG header). An answer
is *expected* when a real image gets 200 with a probability and a bad file gets a 4xx with a string ``detail``;
anything else is counted as unexpected (with samples). The server's resident set size (``/proc/PID/status``) is
sampled every ``--rss-every`` seconds; "levels off" is judged from the growth over the second half of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "kermany224" / "test"
MAX_REQUESTS = 200_000


@dataclass
class SoakReport:
    """What one soak run measured (latencies in ms, memory in MB)."""

    backend: str
    model: str
    requests: int
    concurrency: int
    garbage_fraction: float
    real_images: int
    seconds: float
    throughput_rps: float
    status_counts: dict[str, int]
    unexpected: int
    latency_ms: dict[str, dict[str, float]]
    rss_start_mb: float
    rss_half_mb: float
    rss_end_mb: float
    rss_max_mb: float
    rss_growth_second_half_mb: float
    levels_off: bool
    server_alive: bool
    rss_samples: list[tuple[float, int, float]] = field(default_factory=list)  # (seconds, requests done, MB)
    unexpected_samples: list[str] = field(default_factory=list)


def garbage_files() -> dict[str, bytes]:
    """The bad files mixed into the load (each must be answered 4xx)."""
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 255, size=(64, 64), dtype=np.uint8)

    def save(fmt: str, arr: np.ndarray = grey, **kw: object) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, **kw)
        return buf.getvalue()

    jpeg = save("JPEG")
    bomb = io.BytesIO()
    Image.new("L", (20_000, 20_000)).save(bomb, format="PNG")  # ~1 MB file declaring 400 M pixels
    dicom = b"\0" * 128 + b"DICM" + rng.bytes(600)
    return {
        "random.bin": rng.bytes(4096), "empty.png": b"", "notes.txt": b"patient notes, not an image\n" * 20,
        "truncated.jpg": jpeg[: len(jpeg) // 2], "anim.gif": save("GIF"), "photo.webp": save("WEBP"),
        "half.dcm": dicom, "bomb.png": bomb.getvalue(),
    }


def read_rss_mb(pid: int) -> float:
    """Resident set size of a process from /proc (Linux), in MB; 0 when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextmanager
def server(checkpoint: str | None, backend: str, extra: list[str], timeout: float = 300.0) -> Iterator[
        tuple[str, subprocess.Popen[bytes]]]:
    """``pneumoscan serve`` on a free 127.0.0.1 port; yields (URL, process); stopped with SIGINT at the end."""
    from benchmarks.load_test import server_process

    with server_process(checkpoint, backend, ["--no-access-log", *extra], timeout, "pneumoscan-soak-") as running:
        yield running


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ms = np.asarray(values) * 1000
    return {"n": len(values), "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1), "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1)}


async def soak(url: str, pid: int, images: list[bytes], *, requests: int, concurrency: int, garbage: float,
               seed: int, rss_every: float) -> dict[str, object]:
    """Send the requests; returns the raw measurements."""
    rng = np.random.default_rng(seed)
    bad = garbage_files()
    bad_names = sorted(bad)
    plan: list[tuple[str, bytes, bool]] = []
    for i in range(requests):
        if rng.random() < garbage:
            name = bad_names[int(rng.integers(len(bad_names)))]
            plan.append((name, bad[name], False))
        else:
            plan.append((f"xray-{i}.jpeg", images[int(rng.integers(len(images)))], True))
    statuses: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {"real": [], "garbage": []}
    unexpected: list[str] = []
    samples: list[tuple[float, int, float]] = []
    done = 0
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()

    async def sampler() -> None:
        while True:
            samples.append((round(time.perf_counter() - started, 2), done, round(read_rss_mb(pid), 1)))
            await asyncio.sleep(rss_every)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        model = (await client.get("/v1/model")).json()

        async def worker() -> None:
            nonlocal done, next_index
            while next_index < len(plan):
                name, data, real = plan[next_index]
                next_index += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", files={"files": (name, data, "application/octet-stream")})
                    status = str(r.status_code)
                    body = r.json()
                    if real:
                        ok = r.status_code == 200 and body["results"][0].get("probability") is not None
                    else:
                        ok = 400 <= r.status_code < 500 and isinstance(body.get("detail"), str)
                    problem = "" if ok else f"{name}: HTTP {r.status_code}: {r.text[:160]}"
                except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
                    status, problem = type(err).__name__, f"{name}: {type(err).__name__}: {err}"
                latencies["real" if real else "garbage"].append(time.perf_counter() - t0)
                statuses[status] += 1
                if problem:
                    unexpected.append(problem)
                done += 1

        task = asyncio.create_task(sampler())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        task.cancel()
        samples.append((round(seconds, 2), done, round(read_rss_mb(pid), 1)))
        alive = (await client.get("/healthz")).status_code == 200
    return {"model": model, "statuses": statuses, "latencies": latencies, "unexpected": unexpected,
            "samples": samples, "seconds": seconds, "alive": alive}


def summarise(raw: dict[str, object], *, backend: str, requests: int, concurrency: int, garbage: float,
              n_images: int, tolerance_mb: float) -> SoakReport:
    samples: list[tuple[float, int, float]] = raw["samples"]  # type: ignore[assignment]
    rss = [s[2] for s in samples]
    half = next((s[2] for s in samples if s[1] >= requests // 2), rss[-1])
    growth = round(rss[-1] - half, 1)
    model: dict[str, object] = raw["model"]  # type: ignore[assignment]
    latencies: dict[str, list[float]] = raw["latencies"]  # type: ignore[assignment]
    seconds = float(raw["seconds"])  # type: ignore[arg-type]
    statuses: Counter[str] = raw["statuses"]  # type: ignore[assignment]
    unexpected: list[str] = raw["unexpected"]  # type: ignore[assignment]
    return SoakReport(
        backend=str(model.get("backend")), model=f"{model.get('name')} {model.get('version')}", requests=requests,
        concurrency=concurrency, garbage_fraction=garbage, real_images=n_images, seconds=round(seconds, 1),
        throughput_rps=round(requests / seconds, 2) if seconds > 0 else 0.0,
        status_counts=dict(sorted(statuses.items())), unexpected=len(unexpected),
        latency_ms={"real": _percentiles(latencies["real"]), "garbage": _percentiles(latencies["garbage"]),
                    "all": _percentiles(latencies["real"] + latencies["garbage"])},
        rss_start_mb=rss[0], rss_half_mb=half, rss_end_mb=rss[-1], rss_max_mb=max(rss),
        rss_growth_second_half_mb=growth, levels_off=growth <= tolerance_mb, server_alive=bool(raw["alive"]),
        rss_samples=samples, unexpected_samples=unexpected[:10],
    )


def render(r: SoakReport) -> str:
    lat = r.latency_ms
    lines = [
        f"server       {r.backend} backend, model {r.model}",
        f"load         {r.requests} requests at concurrency {r.concurrency}, {r.garbage_fraction:.0%} garbage, "
        f"{r.real_images} distinct real images",
        f"time         {r.seconds:.1f} s -> {r.throughput_rps:.1f} requests/s",
        "statuses     " + ", ".join(f"{k}: {v}" for k, v in r.status_counts.items()),
        f"unexpected   {r.unexpected}" + ("" if r.server_alive else "  [SERVER DOWN AT THE END]"),
    ]
    for key in ("real", "garbage", "all"):
        p = lat[key]
        if p.get("n"):
            lines.append(f"latency {key:<8} n {p['n']:<6} p50 {p['p50']:.0f} ms  p95 {p['p95']:.0f} ms  "
                         f"p99 {p['p99']:.0f} ms  max {p['max']:.0f} ms")
    lines.append(f"RSS MB       start {r.rss_start_mb:.0f}, at half {r.rss_half_mb:.0f}, end {r.rss_end_mb:.0f}, "
                 f"max {r.rss_max_mb:.0f}; second-half growth {r.rss_growth_second_half_mb:+.0f} MB -> "
                 + ("levels off" if r.levels_off else "STILL GROWING"))
    step = max(1, len(r.rss_samples) // 10)
    lines.append("RSS over time " + "  ".join(f"{int(n)}:{mb:.0f}" for _, n, mb in r.rss_samples[::step]))
    lines += [f"unexpected   {u}" for u in r.unexpected_samples]
    return "\n".join(lines)


def load_images(folder: Path, limit: int) -> list[bytes]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png", ".dcm"))[:limit]
    if not files:
        raise SystemExit(f"{folder}: no images (.jpeg/.jpg/.png/.dcm) found; pass --images DIR")
    return [p.read_bytes() for p in files]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="best.pt or .onnx (default: the shipped model)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of real images (searched recursively)")
    p.add_argument("--max-images", type=int, default=1000)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--garbage", type=float, default=0.1, help="fraction of bad files (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rss-every", type=float, default=1.0, help="seconds between RSS samples")
    p.add_argument("--tolerance-mb", type=float, default=50.0,
                   help="second-half RSS growth still counted as levelled off (default 50 MB)")
    p.add_argument("--output", type=Path, help="write the JSON report here")
    p.add_argument("--serve-option", action="append", default=[], help="extra `serve` option (repeatable)")
    args = p.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 256 or not 0 <= args.garbage <= 1:
        p.error(f"--requests 1..{MAX_REQUESTS}, --concurrency 1..256, --garbage 0..1")
    images = load_images(args.images, args.max_images)
    with server(args.checkpoint, args.backend, args.serve_option) as (url, proc):
        raw = asyncio.run(soak(url, proc.pid, images, requests=args.requests, concurrency=args.concurrency,
                               garbage=args.garbage, seed=args.seed, rss_every=args.rss_every))
    report = summarise(raw, backend=args.backend, requests=args.requests, concurrency=args.concurrency,
                       garbage=args.garbage, n_images=len(images), tolerance_mb=args.tolerance_mb)
    print(render(report))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(f".{args.output.name}.tmp")
        tmp.write_text(json.dumps(asdict(report), indent=2))
        os.replace(tmp, args.output)
    return 0 if report.unexpected == 0 and report.server_alive else 1


if __name__ == "__main__":
    sys.exit(main())
