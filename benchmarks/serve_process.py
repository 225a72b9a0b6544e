"""``trtinfer serve`` as a child process on free loopback ports (HTTP, gRPC and metrics), for the tests and the load benchmark:
started, waited on until ready, spoken to over plain HTTP, and stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    grpc_port: int
    log: Path
    metrics_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, dict, bytes]:
        return request(self.url + path)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        return request(self.url + path, body, headers or {})

    def stop(self, timeout: float = 30) -> int:
        return terminate(self.process, timeout)


def terminate(process: subprocess.Popen, timeout: float) -> int:
    """SIGTERM a server process and wait for its exit code; one that outlives ``timeout`` is killed (and the
    TimeoutExpired raised)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 60) -> tuple[int, Any, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def start_server(artifacts: list[Path], tmp: Path, *args: str) -> Server:
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log = tmp / f"server-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ports = ["--port", str(port), "--grpc-port", str(grpc_port)]
    if "--metrics-port" not in args:
        ports += ["--metrics-port", str(metrics_port)]
    if "--drain-delay-seconds" not in args:  # tests and benchmarks stop at once unless they test the drain
        ports += ["--drain-delay-seconds", "0"]
    process = subprocess.Popen([sys.executable, "-m", "trtinfer.cli", "serve", *map(str, artifacts), *ports, *args],
                               stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    server = Server(process, port, grpc_port, log, metrics_port)
    problem = wait_for_health(process, server.url + "/v2/health/ready", START_TIMEOUT_S)
    if problem is None:
        return server
    if process.poll() is None:
        process.kill()
    raise AssertionError(f"the server {problem}: {log.read_text()}")


def wait_for_health(process: subprocess.Popen, url: str, timeout: float) -> str | None:
    """Poll a server's health ``url`` until it answers 200: None then, else what happened instead ("exited with
    N", or "was not ready within T s"). Shared by this launcher and the real-Triton tests' one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with {process.returncode}"
        try:
            if request(url, timeout=2)[0] == 200:
                return None
        except OSError:
            pass
        time.sleep(0.2)
    return f"was not ready within {timeout:g} s"
