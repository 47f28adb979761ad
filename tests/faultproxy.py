"""A fault-injecting HTTP proxy in front of the moto server.

Every S3 request of the job (driver, Python workers, executors in other processes) goes over
HTTP, so a proxy sees them all without touching the job's code: it names each request's S3
operation, records it (headers included), forwards it to moto, and on a matching rule answers
with a 500, drops the connection, delays it, SIGKILLs the process that sent it, or runs a
test's callback instead.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import psutil

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length"}
SET_BY_US = HOP_BY_HOP | {"server", "date"}

INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)


def operation(method: str, path: str, query: str, headers) -> tuple[str, str]:
    """(S3 operation, object key) of a path-style request."""
    q = parse_qs(query, keep_blank_values=True)
    bucket, _, key = path.lstrip("/").partition("/")
    if "uploadId" in q:
        return {
            "PUT": "UploadPart",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }[method], key
    if "uploads" in q:
        return ("CreateMultipartUpload" if method == "POST" else "ListMultipartUploads"), key
    if method == "POST" and "delete" in q:
        return "DeleteObjects", key
    if not key:
        return {"GET": "ListObjects", "PUT": "CreateBucket", "HEAD": "HeadBucket"}.get(
            method, method + "Bucket"
        ), key
    if method == "PUT":
        return ("CopyObject" if "x-amz-copy-source" in headers else "PutObject"), key
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}[method], key


@dataclass
class Seen:
    op: str
    key: str
    headers: dict[str, str]
    pid: int | None  # the process that sent it, when it could be found


@dataclass
class Fault:
    """Fire on the ``nth`` request of ``op`` whose key contains ``key``, ``times`` times in a
    row. action: error (HTTP 500) | reset (close without answering) | kill (SIGKILL the sender,
    then close) | delay (``seconds``, then forward) | call (``call(seen)``, then close, or
    forward when ``forward``)."""

    op: str
    action: str
    key: str = ""
    nth: int = 1
    times: int = 1
    seconds: float = 0.0
    call: Callable[[Seen], None] | None = None
    forward: bool = False  # call: then forward the request instead of closing
    matched: int = 0
    fired: list[Seen] = field(default_factory=list)

    def hit(self, seen: Seen) -> bool:
        if seen.op != self.op or self.key not in seen.key:
            return False
        self.matched += 1
        return self.nth <= self.matched < self.nth + self.times


def _pid_of_peer(port: int) -> int | None:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid and conn.pid != os.getpid():
            return conn.pid
    return None


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = urlparse(upstream)
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.seen.clear()

    def ops(self, op: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.op == op]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- per request -----------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in h.headers.items()}
        op, key = operation(h.command, url.path, url.query, headers)
        seen = Seen(op, key, headers, None)
        with self.lock:
            self.seen.append(seen)
            fault = next((f for f in self.faults if f.hit(seen)), None)
            if fault is not None:
                fault.fired.append(seen)
        if fault is not None:
            if fault.action in ("kill", "call"):
                seen.pid = _pid_of_peer(h.client_address[1])
            if fault.action == "error":
                h.send_response(500)
                h.send_header("Content-Type", "application/xml")
                h.send_header("Content-Length", str(len(INTERNAL_ERROR)))
                h.end_headers()
                h.wfile.write(INTERNAL_ERROR)
                return
            if fault.action == "delay":
                time.sleep(fault.seconds)
            elif fault.action == "call" and fault.forward:
                fault.call(seen)
            else:
                if fault.action == "kill" and seen.pid is not None:
                    os.kill(seen.pid, signal.SIGKILL)
                elif fault.action == "call" and fault.call is not None:
                    fault.call(seen)
                h.close_connection = True
                try:
                    h.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
        self._forward(h, body)

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        up = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            up.request(h.command, h.path, body=body, headers=headers)
            resp = up.getresponse()
            data = resp.read()
            h.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in SET_BY_US:
                    h.send_header(k, v)
            length = resp.getheader("Content-Length") if h.command == "HEAD" else len(data)
            h.send_header("Content-Length", str(length or 0))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        finally:
            up.close()
