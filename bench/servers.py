"""Local servers for the bench and the tests alike (tests/helpers.py re-exports these)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], url: str, what: str, wait_s: float = 60):
    """A moto server (stock, or the bench's sink) started as its own process on ``url``,
    once it answers; it is killed if it does not within ``wait_s``."""
    proc = subprocess.Popen(
        [sys.executable, *command, "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + wait_s
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.2)
