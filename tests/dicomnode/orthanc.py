"""A real Orthanc PACS for tests and benchmarks: Debian's ``orthanc`` (+ ``orthanc-dicomweb``) started with a
temporary configuration on free loopback ports, its own storage folder and no authentication, and stopped after.

``scripts/test.sh`` installs the packages when it runs as root; without them the tests skip with the reason from
:func:`orthanc_missing`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).is_file()), None)


def dicomweb_plugin() -> str | None:
    return next((p for p in PLUGIN_CANDIDATES if Path(p).is_file()), None)


def orthanc_missing() -> str | None:
    """Why a real Orthanc cannot be started here, or None."""
    if orthanc_binary() is None:
        return "Orthanc not installed (Debian: apt-get install orthanc orthanc-dicomweb; scripts/test.sh does it)"
    if dicomweb_plugin() is None:
        return "Orthanc DICOMweb plugin not installed (Debian: apt-get install orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    """One Orthanc process. Use as a context manager, or :meth:`start` / :meth:`stop`.

    Args:
        folder: its private folder (storage, index, config, log).
        aet: its AE title.
    """

    def __init__(self, folder: Path, aet: str = "ORTHANC", extra: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.aet = aet
        self.extra = dict(extra or {})
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        storage = self.folder / "db"
        return {
            "Name": "pneumoscan-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpServerEnabled": True, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": self.aet,
            "DicomPort": self.dicom_port, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True, "DicomCheckModalityHost": False, "UnknownSopClassAccepted": False,
            "DicomModalities": {}, "DicomModalitiesInDatabase": False, "ConcurrentJobs": 2,
            "HttpThreadsCount": 8, "StableAge": 1, "SaveJobs": False, "OrthancExplorerEnabled": False,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                         "Host": f"127.0.0.1:{self.http_port}", "Ssl": False},
            **self.extra,
        }

    def start(self, timeout: float = 60.0) -> Orthanc:
        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError(orthanc_missing() or "no Orthanc")
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=1))
        log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([binary, str(cfg)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 2000) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace")[-n:] if path.is_file() else ""

    # -- REST ---------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json") -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": content_type} if body is not None else {})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    def get(self, path: str) -> Any:
        return json.loads(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path)

    def post(self, path: str, payload: Any) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        ctype = "application/dicom" if isinstance(payload, bytes) else "application/json"
        return json.loads(self._request("POST", path, body, ctype))

    def upload(self, data: bytes) -> dict[str, Any]:
        """Store a DICOM file through the REST API (as a modality would through C-STORE)."""
        return self.post("/instances", data)

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        body = json.dumps({"AET": aet, "Host": host, "Port": port}).encode()
        self._request("PUT", f"/modalities/{name}", body)

    def instances_by_modality(self, modality: str) -> list[dict[str, Any]]:
        """Main tags of every stored instance of ``modality`` (e.g. "SR")."""
        found = self.post("/tools/find", {"Level": "Instance", "Query": {"Modality": modality}, "Expand": True})
        return list(found)

    def dataset(self, orthanc_id: str) -> Any:
        import pydicom

        return pydicom.dcmread(__import__("io").BytesIO(self.get_bytes(f"/instances/{orthanc_id}/file")))

    def clear(self) -> None:
        """Delete every patient (between tests sharing one server)."""
        for pid in self.get("/patients"):
            self._request("DELETE", f"/patients/{pid}")
