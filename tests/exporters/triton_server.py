"""A real Triton Inference Server for the tests and the Triton-vs-serve benchmark: the ``tritonserver`` 2.51
binary that the registry's ``nvidia-pytriton`` wheel ships (Python backend only), installed by
``scripts/triton_server.sh`` into ``build/triton`` (``$TRTINFER_TRITON_DIR``), started on free loopback
ports with explicit model control, so models are loaded and unloaded through the repository API.

The Python backend's stub embeds ``/usr/bin/python3`` (the install script copies the stub built for its
version) and finds it through ``python3`` on ``PATH``, so the server runs with ``PATH=/usr/bin:/bin``: a
venv's ``python3`` first on ``PATH`` gives "No module named 'numpy'". Models it runs import Debian's
numpy and Pillow.

:func:`missing` names what is absent (and how to get it); the ``triton`` fixture skips with that text.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]
TRITON_DIR = Path(os.environ.get("TRTINFER_TRITON_DIR", REPO / "build" / "triton"))
SERVER_DIR = TRITON_DIR / "pytriton" / "tritonserver"
BINARY = SERVER_DIR / "bin" / "tritonserver"
BACKENDS = SERVER_DIR / "backends"
STUB = BACKENDS / "python" / "triton_python_backend_stub"
LIBS = TRITON_DIR / "nvidia_pytriton.libs"
SYSTEM_PYTHON = Path("/usr/bin/python3")
START_TIMEOUT_S = 60
#: What Triton says when a model's config is valid but its backend is not installed.
NO_BACKEND = "unable to find backend library"
_INSTALL = "bash scripts/triton_server.sh (as root: it also apt-installs python3-numpy python3-pil)"


def missing() -> list[str]:
    """What this machine lacks to run the real server, each with the fix; empty when it can run."""
    gaps = [what for path, what in ((BINARY, "tritonserver"), (STUB, "its Python-backend stub")) if not path.is_file()]
    if gaps:
        return [f"{' and '.join(gaps)} under {TRITON_DIR}: run {_INSTALL}"]
    if not SYSTEM_PYTHON.is_file():
        return [f"{SYSTEM_PYTHON}, whose Python the backend stub embeds"]
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import numpy, PIL.Image"], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin"})
    if probe.returncode != 0:
        return [f"numpy and Pillow for {SYSTEM_PYTHON} ({probe.stderr.strip().splitlines()[-1]}): "
                "apt-get install python3-numpy python3-pil"]
    return []


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (a killed test run
    leaves no server behind)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    from trtinfer.benchmarks.serve_process import free_port

    return free_port()


@dataclass
class TritonServer:
    """A running ``tritonserver`` over one model repository; models start unloaded (explicit control)."""

    process: subprocess.Popen
    repository: Path
    http_port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        """``host:port`` of the HTTP endpoint, as tritonclient and examples/triton_image_client.py take it."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def client(self):
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.url, network_timeout=300, connection_timeout=300)

    def load(self, name: str) -> str | None:
        """Load ``name`` through the repository API: None when it is READY, else Triton's error text."""
        from tritonclient.utils import InferenceServerException

        client = self.client()
        try:
            client.load_model(name)
        except InferenceServerException as exc:
            return str(exc)
        finally:
            client.close()
        return None if self.is_ready(name) else f"{name} loaded without error but is not READY"

    def is_ready(self, name: str) -> bool:
        client = self.client()
        try:
            return bool(client.is_model_ready(name))
        finally:
            client.close()

    def unload(self, name: str) -> None:
        client = self.client()
        try:
            client.unload_model(name, unload_dependents=True)
        finally:
            client.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (Triton unloads every model and exits); its exit code."""
        from trtinfer.benchmarks.serve_process import terminate

        return terminate(self.process, timeout)


def start_triton(repository: Path, log_dir: Path, *args: str) -> TritonServer:
    """``tritonserver`` over ``repository`` on free loopback ports, waited on until its HTTP endpoint is live."""
    from trtinfer.benchmarks.serve_process import wait_for_health

    problems = missing()
    if problems:
        raise RuntimeError("cannot start tritonserver: " + "; ".join(problems))
    http_port, grpc_port = _free_port(), _free_port()
    log = log_dir / f"tritonserver-{http_port}.log"
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(LIBS), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8"}
    command = [str(BINARY), f"--model-repository={repository}", f"--backend-directory={BACKENDS}",
               "--model-control-mode=explicit", "--http-address=127.0.0.1", f"--http-port={http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}", "--allow-metrics=false",
               "--exit-on-error=false", *args]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                               preexec_fn=_die_with_parent)
    server = TritonServer(process, repository, http_port, grpc_port, log)
    problem = wait_for_health(process, f"http://{server.url}/v2/health/live", START_TIMEOUT_S)
    if problem is None:
        return server
    if process.poll() is None:
        server.stop()
    raise RuntimeError(f"tritonserver {problem}:\n{server.log_tail()}")


def triton_fixture(tmp_path_factory) -> Iterator[TritonServer]:
    """The body of a session fixture: one server over an empty repository folder the tests export into;
    skips naming what is missing; the server must exit 0."""
    import pytest

    problems = missing()
    if problems:
        message = "no real Triton server here: " + "; ".join(problems)
        if os.environ.get("CI"):  # CI installs it (scripts/triton_server.sh, as root): a skip there would hide a red
            pytest.fail(message + " (CI=true: the real-Triton tests must run in CI)", pytrace=False)
        pytest.skip(message)
    repository = tmp_path_factory.mktemp("triton-repository")
    server = start_triton(repository, tmp_path_factory.mktemp("triton-log"))
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"tritonserver exited with {code}:\n{server.log_tail()}"
