"""Load and soak for ``trtinfer serve``: a bounded load generator on loopback, and the in-process
``submit`` path of the same model in the same run as its peer.

    python -m trtinfer.benchmarks.serve_load ARTIFACT [ARTIFACT ...] --data ../shared/data -o serve-load

Per artifact: binary tensors at batch 32 and 1, and single PNG uploads, at concurrency 1, 8 and 64
(clients spread over processes so the generator's own GIL is not the bottleneck); images/s,
requests/s, p50/p99 latency and errors. The serving overhead is the ratio of the server's images/s
to the in-process ``Model.submit`` path (64 client threads, same batch) measured in the same run.
Then a soak: 64 PNG clients for ``--soak-seconds`` with the server's resident memory sampled; it
must stay flat after warm-up with zero 5xx. Writes ``serve-load.json`` and ``serve-load.png``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONCURRENCY = (1, 8, 64)
THREADS_PER_PROCESS = 16


@dataclass
class LoadResult:
    scenario: str
    clients: int
    seconds: float
    requests: int = 0
    images: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != "200")

    def per_second(self) -> tuple[float, float]:
        return self.requests / self.seconds, self.images / self.seconds


# -- the generator (runs in worker processes) ---------------------------------------------------------------
def _client_loop(port: int, path: str, body: bytes, headers: dict[str, str], deadline: float,
                 out: list[tuple[int, float]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out.append((status, time.perf_counter() - start))
    conn.close()


def _process_clients(port: int, path: str, body: bytes, headers: dict[str, str], threads: int,
                     seconds: float) -> list[tuple[int, float]]:
    deadline = time.monotonic() + seconds
    results: list[list[tuple[int, float]]] = [[] for _ in range(threads)]
    workers = [threading.Thread(target=_client_loop, args=(port, path, body, headers, deadline, results[i]))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return [r for chunk in results for r in chunk]


def run_load(pool: ProcessPoolExecutor, port: int, scenario: str, path: str, body: bytes, headers: dict[str, str],
             rows: int, clients: int, seconds: float) -> LoadResult:
    processes = max(1, min(clients // THREADS_PER_PROCESS + (clients % THREADS_PER_PROCESS > 0), 4))
    per = [clients // processes + (i < clients % processes) for i in range(processes)]
    started = time.monotonic()
    futures = [pool.submit(_process_clients, port, path, body, headers, n, seconds) for n in per]
    samples = [s for f in futures for s in f.result()]
    elapsed = max(seconds, time.monotonic() - started - 0.05)
    latencies = np.array([t for s, t in samples if s == 200]) * 1e3
    statuses = Counter(str(s) for s, _ in samples)
    ok = statuses.get("200", 0)
    return LoadResult(scenario, clients, seconds if elapsed > seconds * 1.5 else elapsed, len(samples), ok * rows,
                      dict(statuses), float(np.percentile(latencies, 50)) if len(latencies) else 0.0,
                      float(np.percentile(latencies, 99)) if len(latencies) else 0.0)


# -- requests -------------------------------------------------------------------------------------------------
def tensor_request(x: np.ndarray, name: str) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    return head + np.ascontiguousarray(x, "<f4").tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                                             "Content-Type": "application/octet-stream"}


def png_request(image: np.ndarray) -> tuple[bytes, dict[str, str]]:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue(), {"Content-Type": "image/png"}


# -- the in-process peer ------------------------------------------------------------------------------------------
def in_process(model: Any, x: np.ndarray, clients: int, seconds: float) -> LoadResult:
    deadline = time.monotonic() + seconds
    counts = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def client(i: int) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            model.submit(x).result()
            latencies[i].append(time.perf_counter() - start)
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    flat = np.array([v for chunk in latencies for v in chunk]) * 1e3
    return LoadResult(f"in-process submit b{len(x)}", clients, elapsed, sum(counts), sum(counts) * len(x),
                      {"200": sum(counts)}, float(np.percentile(flat, 50)), float(np.percentile(flat, 99)))


# -- the server --------------------------------------------------------------------------------------------------
def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory (``VmHWM``: its peak so far) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_artifact(artifact: Path, images: np.ndarray, seconds: float, soak_s: float,
                     pool: ProcessPoolExecutor, log: Any) -> dict[str, Any]:
    import trtinfer
    from trtinfer.preprocess import preprocess
    from trtinfer.serve.registry import IMAGE_SUFFIX  # noqa: F401 -- the serve extra must be present

    from trtinfer.benchmarks.serve_process import start_server

    with trtinfer.load(artifact) as model:
        name = model.manifest.name
        x32 = preprocess(images[:32], model.manifest.preprocess)
        input_name = model.manifest.input.name
        in_process(model, x32, 64, min(2.0, seconds))  # warm-up
        peers = {32: in_process(model, x32, 64, seconds), 1: in_process(model, x32[:1], 64, seconds)}
    server = start_server([artifact], Path(os.environ.get("TMPDIR", "/tmp")))
    results: list[LoadResult] = []
    soak: dict[str, Any] = {}
    try:
        t32, h32 = tensor_request(x32, input_name)
        t1, h1 = tensor_request(x32[:1], input_name)
        png, hpng = png_request(images[0])
        run_load(pool, server.port, "warm-up", f"/v2/models/{name}/infer", t32, h32, 32, 8, min(2.0, seconds))
        for clients in CONCURRENCY:
            results.append(run_load(pool, server.port, "tensors b32", f"/v2/models/{name}/infer", t32, h32, 32,
                                    clients, seconds))
            results.append(run_load(pool, server.port, "tensors b1", f"/v2/models/{name}/infer", t1, h1, 1,
                                    clients, seconds))
            results.append(run_load(pool, server.port, "png upload", f"/v1/models/{name}/predict", png, hpng, 1,
                                    clients, seconds))
            for r in results[-3:]:
                log(f"  {name} {r.scenario:<12} c{clients:<3} {r.per_second()[1]:9.1f} img/s "
                    f"{r.per_second()[0]:8.1f} req/s p50 {r.p50_ms:7.2f} ms p99 {r.p99_ms:7.2f} ms errors {r.errors}")
        if soak_s > 0:
            soak = run_soak(pool, server, name, png, hpng, soak_s, log)
    finally:
        code = server.stop()
    by = {(r.scenario, r.clients): r for r in results}
    summary = {
        "tensors_b32_c64_vs_in_process": by[("tensors b32", 64)].per_second()[1] / peers[32].per_second()[1],
        "tensors_b1_c64_vs_in_process": by[("tensors b1", 64)].per_second()[1] / peers[1].per_second()[1],
        "png_c64_vs_c1_requests": by[("png upload", 64)].per_second()[0] / by[("png upload", 1)].per_second()[0],
        # an upload also decodes and preprocesses its PNG in the server, which the in-process peer skips
        "png_c64_vs_in_process_b1": by[("png upload", 64)].per_second()[1] / peers[1].per_second()[1],
        "errors": sum(r.errors for r in results), "server_exit_code": code,
    }
    return {"artifact": str(artifact), "model": name, "precision": model.manifest.precision,
            "backend": model.backend, "peers": {str(k): asdict(v) for k, v in peers.items()},
            "results": [asdict(r) for r in results], "soak": soak, "summary": summary}


def run_soak(pool: ProcessPoolExecutor, server: Any, name: str, png: bytes, headers: dict[str, str], seconds: float,
             log: Any) -> dict[str, Any]:
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.wait(2.0):
            samples.append((time.monotonic() - started, rss_mib(server.process.pid)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run_load(pool, server.port, "soak png", f"/v1/models/{name}/predict", png, headers, 1, 64, seconds)
    finally:
        stop.set()
        sampler.join()
    peak = rss_mib(server.process.pid, "VmHWM")
    warm = [m for t, m in samples if t >= seconds * 0.25]
    growth = (warm[-1] - warm[0]) if len(warm) >= 2 else float("nan")
    server_errors = sum(n for s, n in result.statuses.items() if s.startswith("5") or s == "0")
    log(f"  {name} soak {seconds:.0f} s at 64 clients: {result.per_second()[0]:.1f} req/s, 5xx/failed "
        f"{server_errors}, RSS {warm[0]:.0f} -> {warm[-1]:.0f} MiB after warm-up ({growth:+.1f} MiB), "
        f"peak {peak:.0f} MiB")
    return {"result": asdict(result), "rss_mib": samples, "rss_growth_after_warmup_mib": growth,
            "peak_rss_mib": peak, "server_errors": server_errors}


def plot(report: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    labels, values, colors = [], [], []
    for entry in report:
        for key in ("32", "1"):
            labels.append(f"{entry['model']}\nin-process b{key}")
            values.append(entry["peers"][key]["images"] / entry["peers"][key]["seconds"])
            colors.append("#888")
        for r in entry["results"]:
            if r["clients"] == 64:
                labels.append(f"{entry['model']}\n{r['scenario']} c64")
                values.append(r["images"] / r["seconds"])
                colors.append("#2a6")
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.set_xlabel("images/s (same run)")
    ax.set_title("trtinfer serve vs the in-process submit path")
    ax = axes[1]
    for entry in report:
        if entry["soak"]:
            t, m = zip(*entry["soak"]["rss_mib"])
            ax.plot(t, m, label=entry["model"])
    ax.set_xlabel("soak time (s)")
    ax.set_ylabel("server resident memory (MiB)")
    ax.set_title("soak: 64 PNG clients")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder (or its parent): the images sent")
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario")
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("-o", "--out", type=Path, default=Path("serve-load"))
    args = parser.parse_args(argv)
    from trtinfer.calibration.cifar import load_cifar

    images = load_cifar(args.data, "test").images[:64]
    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    with ProcessPoolExecutor(4) as pool:
        for artifact in args.artifacts:
            print(f"{artifact}:", flush=True)
            report.append(measure_artifact(artifact, images, args.seconds, args.soak_seconds, pool,
                                           lambda line: print(line, flush=True)))
            s = report[-1]["summary"]
            print(f"  => tensors b32 c64 / in-process: {s['tensors_b32_c64_vs_in_process']:.3f}; "
                  f"b1 c64 / in-process: {s['tensors_b1_c64_vs_in_process']:.3f}; "
                  f"PNG c64 / c1 requests/s: {s['png_c64_vs_c1_requests']:.2f}; "
                  f"PNG c64 / in-process b1 img/s: {s['png_c64_vs_in_process_b1']:.3f}; errors {s['errors']}; "
                  f"exit {s['server_exit_code']}", flush=True)
    (args.out / "serve-load.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "serve-load.png")
    print(f"wrote {args.out / 'serve-load.json'} and {args.out / 'serve-load.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
