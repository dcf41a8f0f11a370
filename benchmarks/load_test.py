"""Load test for ``pneumoscan serve``: latency percentiles, throughput and errors at a fixed concurrency.

Loopback only: the target must be localhost / 127.0.0.0/8 / ::1 (anything else is refused), and the run is bounded by
a request count and a time limit, after which it stops by itself.

Examples::

    # against a server that is already running
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --requests 2000 --concurrency 8

    # start a server for the run (free loopback port), test it, stop it
    python benchmarks/load_test.py --start --backend onnx --checkpoint runs/cnn/model.onnx --requests 2000 --json

Each request uploads one image (``--image``, default: a synthetic 1024×1024 8-bit PNG X-ray) to ``POST /v1/predict``;
a request counts as an error unless it is answered 200 with a probability. A few warm-up requests are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

from pneumoscan.serving.settings import is_loopback

MAX_REQUESTS = 100_000
MAX_SECONDS = 1800.0


@dataclass
class Report:
    """What one load test measured (latencies in milliseconds)."""

    url: str
    backend: str
    model: str
    image_bytes: int
    concurrency: int
    requests: int
    ok: int
    errors: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    stopped_by_time_limit: bool
    error_samples: list[str] = field(default_factory=list)


def synthetic_png(size: int = 1024, seed: int = 0) -> bytes:
    """A deterministic X-ray-like grey PNG (body, two dark lungs, spine, noise), for when no --image is given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    img = np.full((size, size), 15.0)
    img[(xx / 0.85) ** 2 + ((yy - 0.05) / 0.97) ** 2 <= 1] = 150
    for side in (-1, 1):
        img[((xx - side * 0.38) / 0.27) ** 2 + ((yy + 0.05) / 0.55) ** 2 <= 1] = 60
    img[np.abs(xx) < 0.07] = 185
    img += rng.normal(0, 6, size=img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def check_loopback(url: str) -> None:
    """Refuse any target that is not this machine."""
    host = urlsplit(url).hostname or ""
    if not is_loopback(host):
        raise SystemExit(f"refusing to load-test {host!r}: only loopback targets (127.0.0.1, localhost, ::1) allowed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_process(checkpoint: str | None, backend: str, extra: list[str], timeout: float = 180.0,
                   log_prefix: str = "pneumoscan-load-") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``pneumoscan serve`` on a free 127.0.0.1 port for the duration of the block; yields (URL, process).

    Stopped with SIGINT at the end (killed when it does not stop within 30 s); its log goes to a temp file named in
    every error."""
    port = _free_port()
    cmd = [sys.executable, "-m", "pneumoscan.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--backend", backend, *(["--checkpoint", checkpoint] if checkpoint else []), *extra]
    env = {k: v for k, v in os.environ.items() if k != "PNEUMOSCAN_API_KEY"}
    log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}; log: {log.name}\n"
                                 f"{Path(log.name).read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"server did not start in {timeout:.0f} s; log: {log.name}")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@contextmanager
def started_server(checkpoint: str | None, backend: str, extra: list[str], timeout: float = 180.0) -> Iterator[str]:
    """Run ``pneumoscan serve`` on a free 127.0.0.1 port for the duration of the block; yields its URL."""
    with server_process(checkpoint, backend, extra, timeout) as (url, _proc):
        yield url


async def run_load(url: str, image: bytes, *, requests: int, concurrency: int, time_limit: float, warmup: int,
                   api_key: str | None) -> Report:
    """Send ``requests`` uploads with ``concurrency`` workers (stops early at ``time_limit`` seconds)."""
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as client:
        model = (await client.get("/v1/model")).json()
        for _ in range(warmup):
            await client.post("/v1/predict", files={"files": ("warmup.png", image)})
        issued = 0
        stop_at = time.monotonic() + time_limit
        timed_out = False

        async def worker() -> None:
            nonlocal issued, timed_out
            while issued < requests:
                if time.monotonic() > stop_at:
                    timed_out = True
                    return
                issued += 1
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", files={"files": ("xray.png", image)})
                    ok = r.status_code == 200 and r.json()["results"][0].get("probability") is not None
                    problem = "" if ok else f"HTTP {r.status_code}: {r.text[:200]}"
                except (httpx.HTTPError, ValueError, KeyError, IndexError) as err:
                    problem = f"{type(err).__name__}: {err}"
                elapsed = time.perf_counter() - start
                if problem:
                    errors.append(problem)
                else:
                    latencies.append(elapsed)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    done = len(latencies) + len(errors)
    return Report(
        url=url, backend=str(model.get("backend")), model=f"{model.get('name')} {model.get('version')} "
        f"@{model.get('image_size')}px", image_bytes=len(image), concurrency=concurrency, requests=done,
        ok=len(latencies), errors=len(errors), seconds=round(seconds, 3),
        throughput_rps=round(done / seconds, 2) if seconds > 0 else 0.0,
        p50_ms=round(float(np.percentile(ms, 50)), 2), p95_ms=round(float(np.percentile(ms, 95)), 2),
        p99_ms=round(float(np.percentile(ms, 99)), 2), mean_ms=round(float(statistics.fmean(ms)), 2),
        max_ms=round(float(ms.max()), 2), stopped_by_time_limit=timed_out, error_samples=errors[:5],
    )


def render(report: Report) -> str:
    lines = [
        f"target       {report.url}  ({report.backend} backend, model {report.model})",
        f"load         {report.requests} requests, concurrency {report.concurrency}, {report.image_bytes / 1024:.0f} "
        f"KiB PNG each" + ("  [stopped by the time limit]" if report.stopped_by_time_limit else ""),
        f"result       {report.ok} ok, {report.errors} errors in {report.seconds:.1f} s "
        f"-> {report.throughput_rps:.1f} requests/s",
        f"latency ms   p50 {report.p50_ms:.1f}  p95 {report.p95_ms:.1f}  p99 {report.p99_ms:.1f}  "
        f"mean {report.mean_ms:.1f}  max {report.max_ms:.1f}",
    ]
    lines += [f"error        {e}" for e in report.error_samples]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="running server (loopback only)")
    parser.add_argument("--start", action="store_true", help="start a server on a free loopback port for the run")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="onnx", help="with --start")
    parser.add_argument("--checkpoint", help="with --start: .pt or .onnx (default: the shipped model)")
    parser.add_argument("--server-arg", action="append", default=[], help="with --start: extra serve option")
    parser.add_argument("--requests", type=int, default=2000, help=f"requests to send (at most {MAX_REQUESTS})")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--time-limit", type=float, default=600.0, help="stop after this many seconds")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted requests before measuring")
    parser.add_argument("--image", type=Path, help="file to upload (default: synthetic 1024x1024 PNG)")
    parser.add_argument("--image-side", type=int, default=1024, help="side of the synthetic PNG")
    parser.add_argument("--api-key", default=os.environ.get("PNEUMOSCAN_API_KEY"), help="X-API-Key, if needed")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be between 1 and {MAX_REQUESTS}")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be between 1 and 256")
    if not 0 < args.time_limit <= MAX_SECONDS:
        parser.error(f"--time-limit must be in (0, {MAX_SECONDS:.0f}] seconds")
    image = args.image.read_bytes() if args.image else synthetic_png(args.image_side)

    def go(url: str, key: str | None) -> Report:
        check_loopback(url)
        return asyncio.run(run_load(url, image, requests=args.requests, concurrency=args.concurrency,
                                    time_limit=args.time_limit, warmup=args.warmup, api_key=key))

    if args.start:
        with started_server(args.checkpoint, args.backend, args.server_arg) as url:
            report = go(url, None)
    else:
        report = go(args.url, args.api_key)
    print(json.dumps(asdict(report), indent=2) if args.json else render(report))
    return 0 if report.errors == 0 and not report.stopped_by_time_limit else 1


if __name__ == "__main__":
    sys.exit(main())
