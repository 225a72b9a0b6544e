"""Real servers for the serving tests: ``trtinfer serve`` started as its own process on free loopback
ports (HTTP and gRPC), waited on until ready, and stopped with SIGTERM (which must exit 0)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.helpers import export_artifact, resnet18_cifar, tiny_net
from trtinfer.benchmarks.serve_process import Server, request, start_server  # noqa: F401 -- the tests' launcher

@pytest.fixture(scope="session")
def tiny_served(tmp_path_factory) -> Path:
    return export_artifact(tmp_path_factory.mktemp("serve") / "tiny", tiny_net(), "tiny")


@pytest.fixture(scope="session")
def resnet_served(tmp_path_factory) -> Path:
    return export_artifact(tmp_path_factory.mktemp("serve") / "resnet", resnet18_cifar(), "resnet")


@pytest.fixture(scope="module")
def server(tiny_served, tmp_path_factory):
    """One server for a module's tests; it must shut down with exit code 0."""
    running = start_server([tiny_served], tmp_path_factory.mktemp("server"), "--max-body-mb", "2")
    yield running
    assert running.stop() == 0, running.log.read_text()


def encode(image: np.ndarray, fmt: str, **options) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="session")
def cifar_images(cifar_dir) -> np.ndarray:
    """Eight real CIFAR-10 test rows, uint8 HWC."""
    from trtinfer.calibration.cifar import load_cifar

    return load_cifar(cifar_dir, "test").images[:8]


def error_of(body: bytes) -> str:
    document = json.loads(body)
    assert set(document) == {"error"}, document
    return document["error"]


PEAK_MARGIN = 200 << 20  # the bound on a request's peak resident memory above the level before it


class PeakRss:
    """The server's peak resident memory over one request: ``echo 5 > clear_refs`` resets ``VmHWM`` to the current
    ``VmRSS`` (Linux 4.0+), so the peak read afterwards is the request's own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10  # kB
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def __enter__(self) -> PeakRss:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.before = self._status("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = self._status("VmHWM")

    @property
    def growth(self) -> int:
        return self.peak - self.before

    def check(self) -> None:
        assert self.growth <= PEAK_MARGIN, \
            f"peak RSS {self.peak / 2**20:.0f} MiB is {self.growth / 2**20:.0f} MiB above the " \
            f"{self.before / 2**20:.0f} MiB before the request (at most {PEAK_MARGIN >> 20} MiB allowed)"
