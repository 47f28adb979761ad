"""A fault-injecting HTTP proxy in front of the moto server.

Every S3 request of the job (driver, Python workers, executors in other processes) goes over
HTTP, so a proxy sees them all without touching the job's code: it names each request's S3
operation, records it (headers included), forwards it to moto, and on a matching rule answers
with a 500, drops the connection, delays it, SIGKILLs the process that sent it, or runs a
test's callback instead.

Shaped, it stands for S3 as one EC2 instance sees it: every connection carries at most ``rate``
bytes a second each way (request bodies are read from the client, and responses written to it,
at that pace, so the client's socket backs up as it would on a real link) and every request
waits ``latency`` seconds before it is answered. ``make bench`` runs it as its own process:
``python tests/faultproxy.py --upstream URL --rate-mb 50 --latency-ms 20``.
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
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
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
    query: str = ""
    concurrent: int = 1  # requests of this operation being answered when it arrived, itself too


@dataclass
class Fault:
    """Fire on the ``nth`` request of ``op`` whose key contains ``key`` (and query string
    ``query``), ``times`` times in a row. action: error (HTTP 500) | deny (HTTP 403, as S3
    answers a principal without the permission: AccessDenied; no body for a HEAD) | reset
    (close without answering) | kill (SIGKILL the sender, then close) | delay (``seconds``,
    then forward) | call (``call(seen)``, then close, or forward when ``forward``)."""

    op: str
    action: str
    key: str = ""
    query: str = ""
    nth: int = 1
    times: int = 1
    seconds: float = 0.0
    call: Callable[[Seen], None] | None = None
    forward: bool = False  # call: then forward the request instead of closing
    matched: int = 0
    fired: list[Seen] = field(default_factory=list)

    def hit(self, seen: Seen) -> bool:
        if seen.op != self.op or self.key not in seen.key or self.query not in seen.query:
            return False
        self.matched += 1
        return self.nth <= self.matched < self.nth + self.times


def _pid_of_peer(port: int) -> int | None:
    """The process whose socket is the client end at ``port`` (this one, for a request the
    test process sent itself: the driver, in local mode)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


CHUNK = 256 << 10


class _Pace:
    """At most ``rate`` bytes a second over one request's body (None: unlimited)."""

    def __init__(self, rate: float | None):
        self.rate, self.start, self.done = rate, time.monotonic(), 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.rate:
            ahead = self.done / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)


class FaultProxy:
    def __init__(self, upstream: str, rate: float | None = None, latency: float = 0.0):
        self.upstream = urlparse(upstream)
        self.rate, self.latency = rate, latency  # bytes/s per connection, seconds per request
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.active: dict[str, int] = {}  # operation → requests being answered
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
        self.shape(None, 0.0)

    def shape(self, rate: float | None, latency: float = 0.0) -> None:
        """Limit each connection to ``rate`` bytes/s each way, and delay each request."""
        self.rate, self.latency = rate, latency

    def ops(self, op: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.op == op]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- per request -----------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        op, _ = operation(h.command, url.path, url.query, headers)
        with self.lock:
            self.active[op] = self.active.get(op, 0) + 1
        try:
            self._answer(h, url)
        finally:
            with self.lock:
                self.active[op] -= 1

    def _answer(self, h: BaseHTTPRequestHandler, url) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        if self.latency:
            time.sleep(self.latency)
        headers = {k.lower(): v for k, v in h.headers.items()}
        op, key = operation(h.command, url.path, url.query, headers)
        seen = Seen(op, key, headers, None, url.query)
        with self.lock:
            seen.concurrent = self.active.get(op, 1)
            self.seen.append(seen)
            fault = next((f for f in self.faults if f.hit(seen)), None)
            if fault is not None:
                fault.fired.append(seen)
        if (
            fault is not None
            and fault.action not in ("delay", "call")
            or (fault is not None and fault.action == "call" and not fault.forward)
        ):
            h.rfile.read(length)  # the request arrived whole; now the fault
        if fault is not None:
            if fault.action in ("kill", "call"):
                seen.pid = _pid_of_peer(h.client_address[1])
            if fault.action in ("error", "deny"):
                status, body = (500, INTERNAL_ERROR) if fault.action == "error" else (
                    403, ACCESS_DENIED)  # fmt: skip
                body = b"" if h.command == "HEAD" else body
                h.send_response(status)
                h.send_header("Content-Type", "application/xml")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body)
                return
            if fault.action == "delay":
                time.sleep(fault.seconds)
            elif fault.action == "call" and fault.forward:
                fault.call(seen)
            else:
                if fault.action == "kill" and seen.pid not in (None, os.getpid()):
                    os.kill(seen.pid, signal.SIGKILL)
                elif fault.action == "call" and fault.call is not None:
                    fault.call(seen)
                h.close_connection = True
                try:
                    h.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
        self._forward(h, length)

    def _forward(self, h: BaseHTTPRequestHandler, length: int) -> None:
        """Stream the request body to moto as it arrives (paced), then the answer back."""
        up = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            up.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for k, v in h.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    up.putheader(k, v)
            up.putheader("Content-Length", str(length))
            up.endheaders()
            pace = _Pace(self.rate)
            while length > 0:
                chunk = h.rfile.read(min(CHUNK, length))
                if not chunk:
                    raise ConnectionError("the client closed the connection mid-request")
                up.send(chunk)
                length -= len(chunk)
                pace(len(chunk))
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
                pace, view = _Pace(self.rate), memoryview(data)
                for i in range(0, len(data), CHUNK):
                    pace(len(view[i : i + CHUNK]))  # before: the last chunk arrives on time
                    h.wfile.write(view[i : i + CHUNK])
        finally:
            up.close()


def main() -> None:
    """Run a shaped proxy until killed; print its URL on the first line."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--rate-mb", type=float, default=50.0, help="MB/s per connection")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per request")
    args = parser.parse_args()
    proxy = FaultProxy(args.upstream, args.rate_mb * 1e6, args.latency_ms / 1000)
    print(proxy.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
