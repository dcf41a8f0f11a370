"""Refuse before reading, on a real uvicorn server: the API key, the size limit and the upload bound are enforced
from the headers, so an unauthenticated 40 MB upload costs the server (almost) nothing.

The client is a raw socket with no ``Expect: 100-continue``: it sends the headers and a small part of the body, then
waits for the answer. An answer that arrives before the rest is sent proves the server decided without reading it
(before this guard, FastAPI received and spooled the whole multipart body before the key was checked).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.serving.support import Server, TinyModel, png_bytes, running_server, tiny_model

KEY = "k-sec-123"
BOUNDARY = "pneumoscanboundary"
FORTY_MB = 40 * 1024 * 1024
FIRST_CHUNK = 64 * 1024  # what the client sends before waiting for the answer
#: The server's request limit: --max-files 2 x --max-upload-mb 30 + 1 MB of form framing. Over 40 MB, so that only
#: the key can stop the 40 MB upload.
LIMIT = 61 * 1024 * 1024
HUNDRED_MB = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.getbasetemp()
    tiny: TinyModel = tiny_model(base)
    args = ["--checkpoint", str(tiny.onnx), "--backend", "onnx", "--max-upload-mb", "30", "--max-files", "2",
            "--max-concurrent-uploads", "2"]
    with running_server(args, tmp_path_factory.mktemp("srv") / "server.log", block_torch=True,
                        env={"PNEUMOSCAN_API_KEY": KEY}) as srv:
        yield srv


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(length: int | None, key: str | None, path: str = "/v1/predict") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _part_start() -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode("ascii")


def _read_answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status code and raw header block of the first answer on ``sock`` (waits at most ``timeout`` s)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 "), f"no HTTP answer: {data[:200]!r}"
    return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[0].lower()


def _send_rest(sock: socket.socket, total: int, already: int) -> int:
    """Keep sending body bytes until the server closes; returns how many more bytes the kernel accepted."""
    sock.settimeout(5)
    sent = 0
    block = b"\0" * 65536
    try:
        while already + sent < total:
            sent += sock.send(block[: total - already - sent])
    except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
        pass
    return sent


def test_unauthenticated_40_mb_upload_is_refused_before_the_body(server: Server) -> None:
    for key in (None, "wrong-key"):
        sock = _connect(server)
        try:
            sock.sendall(_head(FORTY_MB, key) + _part_start() + b"\0" * FIRST_CHUNK)
            started = time.monotonic()
            status, head = _read_answer(sock)
            waited = time.monotonic() - started
            assert status == 401, head
            assert b"connection: close" in head and b"www-authenticate: apikey" in head
            # The answer came with only FIRST_CHUNK (< 1 MB) of the 40 MB sent: the server read less than that.
            assert waited < 5.0
            more = _send_rest(sock, FORTY_MB, FIRST_CHUNK)
            assert FIRST_CHUNK + more < FORTY_MB, "the server kept the connection open for the whole body"
        finally:
            sock.close()
    assert server.process.poll() is None


def test_declared_and_streamed_size_limits(server: Server) -> None:
    # Declared over the limit: 413 from the headers.
    sock = _connect(server)
    try:
        sock.sendall(_head(HUNDRED_MB, KEY) + _part_start() + b"\0" * FIRST_CHUNK)
        status, head = _read_answer(sock)
        assert status == 413 and b"connection: close" in head
    finally:
        sock.close()
    # No Content-Length (chunked): counted while streaming, 413 as soon as the limit is passed.
    sock = _connect(server)
    sent = 0
    try:
        sock.sendall(_head(None, KEY))
        chunk = b"\0" * 65536
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        sock.sendall(f"{len(_part_start()):x}\r\n".encode() + _part_start() + b"\r\n")
        sock.settimeout(10)
        status = None
        while sent < HUNDRED_MB:
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            sock.setblocking(False)
            try:
                peek = sock.recv(65536, socket.MSG_PEEK)
            except BlockingIOError:
                peek = b""
            finally:
                sock.setblocking(True)
                sock.settimeout(10)
            if peek:
                break
        status, head = _read_answer(sock)
        assert status == 413 and b"connection: close" in head
        assert LIMIT <= sent < HUNDRED_MB, sent
    finally:
        sock.close()
    assert server.process.poll() is None


def test_concurrent_upload_bound_answers_503(server: Server) -> None:
    """Two authenticated uploads held open (body not finished) fill --max-concurrent-uploads 2; a third is 503."""
    held = []
    try:
        for _ in range(2):
            sock = _connect(server)
            sock.sendall(_head(500_000, KEY) + _part_start() + b"\0" * 1000)
            held.append(sock)
        time.sleep(0.5)  # let the server take both into the application
        r = httpx.post(f"{server.url}/v1/predict", files={"files": ("a.png", png_bytes(1))},
                       headers={"X-API-Key": KEY}, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert "busy" in r.json()["detail"]
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200  # no body: not an upload
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the held uploads are released when their clients go away
        r = httpx.post(f"{server.url}/v1/predict", files={"files": ("a.png", png_bytes(1))},
                       headers={"X-API-Key": KEY}, timeout=10)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text


def test_open_and_closed_endpoints_with_and_without_key(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for path in ("/healthz", "/", "/static/app.js", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        assert c.get("/healthz").json()["auth_required"] is True
        for headers in ({}, {"X-API-Key": "nope"}, {"X-API-Key": KEY[:-1]}):
            r = c.get("/v1/model", headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "APIKey"
            assert c.get("/v1/unknown", headers=headers).status_code == 401  # /v1 is closed as a whole
        assert c.get("/v1/model", headers={"X-API-Key": KEY}).json()["backend"] == "onnx"
        r = c.post("/v1/predict", files={"files": ("a.png", png_bytes(2))}, headers={"X-API-Key": KEY})
        assert r.status_code == 200, r.text
    log = server.log_text()
    assert KEY not in log and "Traceback" not in log
