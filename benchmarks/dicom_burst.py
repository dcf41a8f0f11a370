"""Burst test of the DICOM node: N instances over C associations at once, C-ECHO during the burst, no loss, no
duplicate.

Starts ``pneumoscan dicom-node`` as a subprocess (the shipped model), optionally forwarding to a real Orthanc started
here (Debian ``orthanc``), sends N copies of a real chest radiograph (``../shared/data/dicom``, each with fresh
Study/Series/SOP Instance UIDs; a synthetic 512×512 DX when the real file is absent) from C threads with one
association each, pings the node with C-ECHO every 0.25 s while doing so, waits until every instance is scored (and
forwarded), then checks: every SOP Instance UID has exactly one SR in the output folder (and in Orthanc), none is
missing, the queue says ``done`` for all, every C-ECHO succeeded.

    python benchmarks/dicom_burst.py --instances 200 --concurrency 4 --backend onnx --orthanc --json

Prints one JSON object (``--json``) or a short report; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SIIM = REPO.parent / "shared" / "data" / "dicom" / "siim_cr_pa_jpeg_baseline.dcm"


def make_instances(n: int) -> tuple[list[Any], str]:
    import pydicom
    from pydicom.uid import generate_uid

    if SIIM.is_file():
        base, source = pydicom.dcmread(SIIM), "siim_cr_pa_jpeg_baseline.dcm (1024x1024 JPEG Baseline)"
    else:
        from tests.dicomnode.support import make_dx

        base, source = make_dx(size=512, phi=False), "synthetic 512x512 DX (real DICOM not found)"
    out = []
    for _ in range(n):
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out, source


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.dicomnode.orthanc import Orthanc, free_port, orthanc_missing
    from tests.dicomnode.support import echo, node_process, send, wait_for

    from pneumoscan.dicomnode.report import read_result

    instances, source = make_instances(args.instances)
    uids = {str(ds.SOPInstanceUID) for ds in instances}
    work = Path(tempfile.mkdtemp(prefix="pneumoscan-burst-"))
    orthanc = None
    if args.orthanc:
        reason = orthanc_missing()
        if reason:
            raise SystemExit(f"--orthanc: {reason}")
        orthanc = Orthanc(work / "orthanc").start()
    port = free_port()
    extra = ["--backend", args.backend, "--batch-size", str(args.batch_size)]
    forward = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}" if orthanc else None
    echoes: list[tuple[int, float]] = []
    try:
        with node_process(work / "node", port, forward=forward, log=work / "node.log", extra=extra):
            stop = threading.Event()

            def ping() -> None:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    echoes.append((echo(port), time.perf_counter() - t0))
                    stop.wait(0.25)

            chunks = [instances[i::args.concurrency] for i in range(args.concurrency)]
            statuses: list[list[int]] = [[] for _ in chunks]

            def sender(i: int) -> None:
                statuses[i] = send(port, chunks[i], calling=f"BURST{i}")

            pinger = threading.Thread(target=ping)
            pinger.start()
            t0 = time.perf_counter()
            threads = [threading.Thread(target=sender, args=(i,)) for i in range(len(chunks))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent_s = time.perf_counter() - t0
            db = work / "node" / "queue.sqlite"

            def all_done() -> bool:
                with sqlite3.connect(db) as conn:
                    return conn.execute("SELECT COUNT(*) FROM instances WHERE state = 'done'").fetchone()[0] \
                        >= len(uids)

            wait_for(all_done, args.timeout, "every instance to be done")
            done_s = time.perf_counter() - t0
            stop.set()
            pinger.join()
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT sop_instance_uid, state, status FROM instances").fetchall()
        result_files = sorted((work / "node" / "results").glob("*.sr.dcm"))
        in_pacs: list[str] = []
        if orthanc:
            found = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SR"}})
            in_pacs = [read_result(orthanc.dataset(i))["source_sop_instance_uid"] for i in found]
    finally:
        if orthanc:
            orthanc.stop()
    flat = [s for chunk in statuses for s in chunk]
    scored_uids = [r[0] for r in rows]
    sr_uids = [p.name.removesuffix(".sr.dcm") for p in result_files]
    echo_ok = [s == 0 for s, _ in echoes]
    checks = {
        "distinct_instances_sent": len(uids) == len(instances),
        "all_c_store_success": flat.count(0) == len(instances),
        "no_loss": set(scored_uids) == uids and set(sr_uids) == uids and (not orthanc or set(in_pacs) == uids),
        "no_duplicate": len(sr_uids) == len(set(sr_uids)) and len(in_pacs) == len(set(in_pacs))
        and len(scored_uids) == len(set(scored_uids)),
        "all_done": all(r[1] == "done" for r in rows),
        "c_echo_answered_during_burst": bool(echoes) and all(echo_ok),
    }
    latencies = [dt for _, dt in echoes]
    return {
        "instances": len(instances), "concurrency": args.concurrency, "backend": args.backend,
        "batch_size": args.batch_size, "source": source, "forwarded_to_orthanc": bool(orthanc),
        "send_seconds": round(sent_s, 2), "accept_rate_per_s": round(len(instances) / sent_s, 1),
        "all_done_seconds": round(done_s, 2), "end_to_end_rate_per_s": round(len(instances) / done_s, 2),
        "statuses": sorted({s: flat.count(s) for s in set(flat)}.items()),
        "scored_ok": sum(1 for r in rows if r[2] == "ok"), "srs_in_output": len(sr_uids),
        "srs_in_orthanc": len(in_pacs),
        "c_echo": {"count": len(echoes), "failed": echo_ok.count(False),
                   "median_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
                   "max_ms": round(1000 * max(latencies), 1) if latencies else None},
        "checks": checks, "ok": all(checks.values()), "work_dir": str(work),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4, help="simultaneous associations")
    p.add_argument("--backend", choices=("torch", "onnx"), default="onnx")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--orthanc", action="store_true", help="forward results to a real Orthanc started here")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for all results")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    summary = run(args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['instances']} instances at concurrency {summary['concurrency']} ({summary['backend']}): "
              f"accepted in {summary['send_seconds']} s ({summary['accept_rate_per_s']}/s), all done in "
              f"{summary['all_done_seconds']} s ({summary['end_to_end_rate_per_s']}/s); C-ECHO "
              f"{summary['c_echo']['count']} sent, {summary['c_echo']['failed']} failed, max "
              f"{summary['c_echo']['max_ms']} ms; checks: {summary['checks']}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
