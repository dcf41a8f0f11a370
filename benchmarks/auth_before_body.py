"""How much of an unauthenticated upload the server takes before it answers 401 (issue 14).

Starts ``pneumoscan serve`` (loopback, the shipped model unless ``--checkpoint``, ``--backend onnx``) with an API
key, then, ``--trials`` times, sends the headers of a ``--mb`` MB multipart upload without the key plus 64 KiB of
body on a raw socket (no ``Expect: 100-continue``) and waits for the answer::

    python benchmarks/auth_before_body.py --trials 3 --mb 40
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.security import test_refuse_before_body as raw
from tests.serving.support import running_server

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "pneumoscan" / "weights"
SHIPPED_ONNX = WEIGHTS / "pneumoscan-efficientnet_lite0-239bec14.onnx"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=SHIPPED_ONNX)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--mb", type=int, default=40)
    args = p.parse_args(argv)
    total = args.mb * 1024 * 1024
    log = Path(tempfile.mkdtemp(prefix="pneumoscan-auth-")) / "server.log"
    with running_server(["--checkpoint", str(args.checkpoint), "--backend", "onnx"], log,
                        env={"PNEUMOSCAN_API_KEY": "bench-key"}) as srv:
        for trial in range(args.trials):
            sock = raw._connect(srv)
            t0 = time.perf_counter()
            sock.sendall(raw._head(total, None) + raw._part_start() + b"\0" * raw.FIRST_CHUNK)
            status, _ = raw._read_answer(sock)
            dt = time.perf_counter() - t0
            more = raw._send_rest(sock, total, raw.FIRST_CHUNK)
            sock.close()
            print(f"trial {trial}: HTTP {status} after {dt * 1000:.1f} ms with {raw.FIRST_CHUNK} body bytes sent; "
                  f"the kernel then accepted {more} more bytes before the close (of {total})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
