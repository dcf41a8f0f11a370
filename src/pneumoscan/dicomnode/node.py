"""The DICOM node: a pynetdicom Storage SCP, a scoring worker and a forwarder around one :class:`WorkQueue`.

Flow of one instance::

    C-STORE  ─▶ handler (association thread): check UIDs, write DIR/incoming/<SOP UID>.dcm atomically,
                 insert the queue row, answer Success          (no model work: a burst never blocks an association)
    worker   ─▶ up to --batch-size pending rows: header checks, Predictor batch, SR (+ Grad-CAM Secondary Capture)
                 written to DIR/results/, row -> scored (or done without --forward)
    forwarder─▶ one association to the PACS per batch of scored rows, C-STORE of every result, row -> done
                 (failures are retried with exponential back-off; the results stay in DIR meanwhile)

C-ECHO is answered by pynetdicom on any association, independently of the worker. What is refused and how:

- a SOP class other than CR / DX / Secondary Capture: the presentation context is rejected at negotiation;
- an association addressed to another AE title: rejected (``require_called_aet``);
- a data set whose header cannot be parsed, or without valid Study/Series/SOP Instance UIDs: C-STORE status
  0xC210 ("cannot understand"); nothing is written;
- the disk cannot take the file: 0xA700 ("out of resources"), so that the sender keeps the image and retries.

Everything accepted gets a result: a scored SR, or an SR with status "out of scope"/"error" and the reason.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumoscan.dicomnode import conformance as conf
from pneumoscan.dicomnode.queue import QueueItem, WorkQueue, atomic_write_bytes
from pneumoscan.dicomnode.report import build_heatmap_sc, build_sr
from pneumoscan.dicomnode.scoring import Outcome, Scorer, read_header
from pneumoscan.errors import ConfigError, ImageReadError, PneumoError, require

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
MAX_ATTEMPTS = 3  # an instance whose scoring crashed the process this often gets an error SR instead of a 4th try


@dataclass(frozen=True)
class Peer:
    """A remote DICOM application entity."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        """``AET@HOST:PORT`` → Peer.

        Raises:
            ConfigError: malformed text.
        """
        try:
            aet, rest = text.split("@", 1)
            host, port = rest.rsplit(":", 1)
            peer = cls(aet.strip(), host.strip().strip("[]"), int(port))
        except ValueError as err:
            raise ConfigError(f"--forward '{text}': expected AET@HOST:PORT, e.g. ORTHANC@pacs.local:4242") from err
        validate_ae_title(peer.ae_title, "--forward")
        if not peer.host or not 0 < peer.port < 65536:
            raise ConfigError(f"--forward '{text}': expected AET@HOST:PORT with a port in 1..65535")
        return peer

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def validate_ae_title(title: str, what: str = "--ae-title") -> str:
    """AE titles are 1-16 characters of the default repertoire, no backslash or control characters (PS3.5)."""
    if not 0 < len(title) <= 16 or not title.isascii() or "\\" in title or not title.isprintable() \
            or not title.strip():
        raise ConfigError(f"{what} '{title}': an AE title is 1 to 16 printable ASCII characters, no backslash")
    return title


@dataclass(frozen=True)
class NodeConfig:
    """How the node listens and where results go.

    Attributes:
        output: DIR: ``queue.sqlite``, ``incoming/`` (received instances), ``results/`` (SR and heatmap files).
        ae_title: this node's AE title (associations addressed to another title are rejected).
        host: address to listen on.
        port: TCP port (0 picks a free one; see :attr:`DicomNode.port`).
        forward: the PACS to C-STORE results to, or None to keep them in ``output`` only.
        batch_size: instances scored per model call.
        max_associations: concurrent associations accepted.
    """

    output: Path
    ae_title: str = "PNEUMOSCAN"
    host: str = "0.0.0.0"
    port: int = 11112
    forward: Peer | None = None
    batch_size: int = 8
    max_associations: int = 16

    def __post_init__(self) -> None:
        validate_ae_title(self.ae_title)
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port {self.port}: must be in 0..65535")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")


class DicomNode:
    """Storage SCP + worker + forwarder. :meth:`start` returns at once; :meth:`stop` shuts everything down.

    Args:
        config: listening and output settings.
        scorer: the model wrapper (built once; holds the Predictor).
    """

    def __init__(self, config: NodeConfig, scorer: Scorer) -> None:
        self.config = config
        self.scorer = scorer
        self.incoming = config.output / "incoming"
        self.results = config.output / "results"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        self.queue = WorkQueue(config.output / "queue.sqlite")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._server: Any = None
        self._worker: threading.Thread | None = None
        self._busy = threading.Event()

    # -- life cycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover what a previous run left, start listening and start the worker."""
        pynetdicom = require("pynetdicom", "dicom-node")
        self._recover()
        ae = pynetdicom.AE(ae_title=self.config.ae_title)  # type: ignore[attr-defined]
        ae.maximum_associations = self.config.max_associations
        ae.require_called_aet = True
        transfer_syntaxes = conf.decodable_transfer_syntaxes()
        for sop_class in conf.ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(sop_class, transfer_syntaxes)
        ae.add_supported_context(conf.VERIFICATION, list(conf.SEND_TRANSFER_SYNTAXES))
        handlers = [(pynetdicom.evt.EVT_C_STORE, self._on_store)]  # type: ignore[attr-defined]
        try:
            self._server = ae.start_server((self.config.host, self.config.port), block=False,
                                           evt_handlers=handlers)
        except OSError as err:
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port} ({err.strerror})") from err
        self._worker = threading.Thread(target=self._work, name="pneumoscan-dicom-worker", daemon=True)
        self._worker.start()
        logger.info("DICOM node %s listening on %s:%d (%d transfer syntaxes); results in %s%s",
                    self.config.ae_title, self.config.host, self.port, len(transfer_syntaxes), self.results,
                    f", forwarded to {self.config.forward}" if self.config.forward else "")

    @property
    def port(self) -> int:
        """The port actually listened on (useful with ``port=0``)."""
        return int(self._server.server_address[1]) if self._server is not None else self.config.port

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting associations, let the worker finish its batch, close the queue."""
        self._stop.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None
        self.queue.close()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or waiting to be forwarded (or ``timeout`` s pass); True when idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.queue.counts()
            if counts["pending"] == 0 and counts["scored"] == 0 and not self._busy.is_set():
                return True
            time.sleep(0.05)
        return False

    def _recover(self) -> None:
        """Enqueue received files that have no queue row (killed between the rename and the insert)."""
        known = self.queue.known_paths()
        orphans = 0
        for path in sorted(self.incoming.glob("*.dcm")):
            if str(path) in known:
                continue
            uid = path.stem
            try:
                ds = read_header(path, uid)
                sop_class = str(ds.SOPClassUID)
            except (ImageReadError, AttributeError):
                sop_class = ""
            if conf.is_uid(uid) and self.queue.add(uid, sop_class, path, source="recovered"):
                orphans += 1
        counts = self.queue.counts()
        if orphans or counts["pending"] or counts["scored"]:
            logger.info("recovered queue: %d pending (%d files without a row re-enqueued), %d to forward",
                        counts["pending"], orphans, counts["scored"])

    # -- the SCP ----------------------------------------------------------------------------------------------
    def _on_store(self, event: Any) -> int:
        """C-STORE handler: durable write + enqueue, nothing else (runs in the association's thread)."""
        uid = str(event.request.AffectedSOPInstanceUID or "")
        calling = str(getattr(event.assoc.requestor, "ae_title", "") or "?").strip()
        if not conf.is_uid(uid):
            logger.warning("refused an instance from %s: invalid SOP Instance UID", calling)
            return STATUS_CANNOT_UNDERSTAND
        if self.queue.state_of(uid) is not None:
            logger.info("%s: already received; not scored again", uid)
            return STATUS_SUCCESS
        try:
            data = event.encoded_dataset(include_meta=True)
            problem = _header_problem(data, uid)
        except Exception as err:  # broad on purpose: a malformed stream must cost one refusal, never the node
            logger.warning("%s: refused from %s: unreadable data set (%s)", uid, calling, type(err).__name__)
            return STATUS_CANNOT_UNDERSTAND
        if problem:
            logger.warning("%s: refused from %s: %s", uid, calling, problem)
            return STATUS_CANNOT_UNDERSTAND
        path = self.incoming / f"{uid}.dcm"
        try:
            atomic_write_bytes(path, data)
            added = self.queue.add(uid, str(event.request.AffectedSOPClassUID), path, source=calling)
        except OSError as err:
            logger.error("%s: cannot store the received instance (%s)", uid, err.strerror or type(err).__name__)
            return STATUS_OUT_OF_RESOURCES
        logger.info("%s: received from %s%s", uid, calling, "" if added else " (duplicate)")
        self._wake.set()
        return STATUS_SUCCESS

    # -- the worker -------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                did = self._score_some() or self._forward_some()
            except Exception as err:  # broad on purpose: the worker must outlive any bug; the item is retried
                logger.error("DICOM worker error %s; retrying in 1 s", describe_error(err))
                did = False
                self._stop.wait(1.0)
            if not did:
                self._wake.wait(0.5)
                self._wake.clear()

    def _score_some(self) -> bool:
        items = self.queue.pending(self.config.batch_size)
        if not items:
            return False
        self._busy.set()
        try:
            process_items(items, self.scorer, self.queue, self.results, forward=self.config.forward is not None)
        finally:
            self._busy.clear()
        return True

    def _forward_some(self) -> bool:
        if self.config.forward is None:
            return False
        items = self.queue.to_forward(32)
        if not items:
            return False
        self._busy.set()
        try:
            forward_items(items, self.config.forward, self.config.ae_title, self.queue)
        finally:
            self._busy.clear()
        return True


def describe_error(err: BaseException) -> str:
    """``TypeName at file.py:123`` of the innermost frame: enough to find a bug, and never the exception's message,
    which for pydicom/highdicom errors may quote attribute values such as the patient's name (PHI)."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(err).__name__}{where}"


def _header_problem(data: bytes, uid: str) -> str | None:
    """Why a received data set cannot be processed (parsed header, identifying UIDs), or None."""
    pydicom = require("pydicom", "dicom")
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)  # type: ignore[attr-defined]
    if str(ds.get("SOPInstanceUID", "")) != uid:
        return "SOP Instance UID in the data set differs from the C-STORE request"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not conf.is_uid(ds.get(keyword)):
            return f"missing or invalid {keyword}"
    return None


def _to_bytes(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def process_items(items: list[QueueItem], scorer: Scorer, queue: WorkQueue, results: Path, *,
                  forward: bool) -> list[Outcome]:
    """Score queued instances and write their results; every item ends ``scored``/``done``, none is dropped.

    Returns the outcomes (one per item that got a result).
    """
    headers: list[Any] = []
    for item in items:
        try:
            headers.append(read_header(item.path, item.sop_instance_uid))
        except (ImageReadError, OSError) as err:
            headers.append(None)
            logger.error("%s: cannot read the received file (%s)", item.sop_instance_uid, type(err).__name__)
    live = [(i, h) for i, h in zip(items, headers, strict=True) if h is not None]
    for item, _ in live:
        queue.claim(item.sop_instance_uid)
    outcomes = _score_safely(scorer, [(i, h) for i, h in live if i.attempts < MAX_ATTEMPTS])
    outcomes += [scorer.outcome(i.sop_instance_uid, "error", f"scoring failed {i.attempts} times; not retried")
                 for i, _ in live if i.attempts >= MAX_ATTEMPTS]
    by_uid = {o.sop_instance_uid: o for o in outcomes}
    for item, header in zip(items, headers, strict=True):
        if header is None:
            _write_failure(results, item, "the received file is not a readable DICOM data set")
            queue.mark_scored(item.sop_instance_uid, "error", [], forward=False, error="unreadable file")
            continue
        outcome = by_uid[item.sop_instance_uid]
        try:
            paths = write_results(outcome, header, item.path, scorer, results)
        except Exception as err:  # broad on purpose: highdicom refuses some headers; one instance, not the node
            logger.error("%s: cannot build the result SR (%s)", item.sop_instance_uid, describe_error(err))
            _write_failure(results, item, f"result SR could not be built ({type(err).__name__}); "
                           f"outcome was {outcome.status}")
            queue.mark_scored(item.sop_instance_uid, "error", [], forward=False, error="SR build failed")
            continue
        queue.mark_scored(item.sop_instance_uid, outcome.status, paths, forward=forward and bool(paths),
                          error=outcome.reason if outcome.status == "error" else None)
        logger.info("%s: %s%s", item.sop_instance_uid, outcome.status,
                    f" P(pneumonia)={outcome.probability:.4f} {outcome.label}" if outcome.probability is not None
                    else f" ({outcome.reason})")
    return outcomes


def _score_safely(scorer: Scorer, live: list[tuple[QueueItem, Any]]) -> list[Outcome]:
    """One batch call; if it raises (a bug, not a bad image: those come back as error outcomes), one by one, so
    that one poisonous instance cannot take its batch neighbours down with it."""
    triples = [(i.sop_instance_uid, i.path, h) for i, h in live]
    if not triples:
        return []
    try:
        return scorer.score(triples)
    except Exception as err:  # broad on purpose: see docstring
        logger.warning("batch scoring failed (%s); scoring its %d instances one by one", type(err).__name__,
                       len(triples))
    out = []
    for triple in triples:
        try:
            out += scorer.score([triple])
        except Exception as err:  # broad on purpose: see docstring
            logger.error("%s: scoring failed (%s)", triple[0], describe_error(err))
            out.append(scorer.outcome(triple[0], "error", f"internal error while scoring ({type(err).__name__})"))
    return out


def write_results(outcome: Outcome, header: Any, source_path: Path, scorer: Scorer, results: Path) -> list[Path]:
    """Write the SR (and the heatmap Secondary Capture when enabled and scored) atomically into ``results``."""
    uid = outcome.sop_instance_uid
    sr_path = results / f"{uid}.sr.dcm"
    atomic_write_bytes(sr_path, _to_bytes(build_sr(outcome, header)))
    paths = [sr_path]
    if scorer.heatmap and outcome.status == "ok":
        try:
            sc = build_heatmap_sc(outcome, header, scorer.overlay(source_path, uid))
            sc_path = results / f"{uid}.heatmap.dcm"
            atomic_write_bytes(sc_path, _to_bytes(sc))
            paths.append(sc_path)
        except (PneumoError, ValueError) as err:
            logger.warning("%s: no heatmap (%s)", uid, type(err).__name__)
    return paths


def _write_failure(results: Path, item: QueueItem, problem: str) -> None:
    atomic_write_bytes(results / f"{item.sop_instance_uid}.error.json",
                       json.dumps({"sop_instance_uid": item.sop_instance_uid, "status": "error",
                                   "reason": problem}).encode())


def forward_items(items: Iterable[QueueItem], peer: Peer, ae_title: str, queue: WorkQueue) -> int:
    """C-STORE the results of ``items`` to ``peer`` over one association; returns how many were delivered."""
    pynetdicom = require("pynetdicom", "dicom-node")
    pydicom = require("pydicom", "dicom")
    items = list(items)
    ae = pynetdicom.AE(ae_title=ae_title)  # type: ignore[attr-defined]
    for sop_class in (conf.COMPREHENSIVE_SR, conf.SECONDARY_CAPTURE):
        ae.add_requested_context(sop_class, list(conf.SEND_TRANSFER_SYNTAXES))
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        for item in items:
            delay = queue.forward_failed(item.sop_instance_uid, "association failed")
        logger.warning("cannot associate with %s; %d results kept, retry in %.0f s", peer, len(items), delay)
        return 0
    delivered = 0
    try:
        for item in items:
            problem = None
            for path in item.result_paths:
                try:
                    status = assoc.send_c_store(pydicom.dcmread(path))  # type: ignore[attr-defined]
                except (ValueError, RuntimeError, OSError) as err:  # e.g. the PACS refused the SOP class
                    problem = f"not sent ({describe_error(err)})"
                    break
                code = int(getattr(status, "Status", -1)) if status else -1
                if code != 0 and not 0xB000 <= code <= 0xBFFF:  # success or warning
                    problem = f"C-STORE status 0x{code & 0xFFFF:04X}" if code >= 0 else "no C-STORE response"
                    break
            if problem:
                delay = queue.forward_failed(item.sop_instance_uid, problem)
                logger.warning("%s: forwarding to %s failed (%s); retry in %.0f s", item.sop_instance_uid, peer,
                               problem, delay)
            else:
                queue.mark_forwarded(item.sop_instance_uid)
                delivered += 1
                logger.info("%s: results forwarded to %s", item.sop_instance_uid, peer)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return delivered
