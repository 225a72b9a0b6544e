"""Throughput of one artifact's image model in a real Triton (the Python-backend classifier ensemble
``<name>_image``: ``trtinfer export triton --kind cpu --cpu-backend python --with-preprocess``) against
``trtinfer serve`` (its ``<name>_image`` twin), on the same images, in the same run.

    python -m trtinfer.benchmarks.triton_vs_serve ARTIFACT --data ../shared/data [--rounds 3] [-o DIR]

Only one server runs at a time, on the same cores as the other, and the rounds alternate (Triton, serve;
serve, Triton; ...), so drift from other work on the machine falls on both. Each measurement sends the
same Open Inference Protocol request (a BYTES batch of encoded CIFAR test images, JPEG and PNG in turn)
from the load generator of :mod:`.serve_load` (client processes, raw HTTP) for ``--seconds``, after a
warm-up. Both servers run the model with ONNX Runtime on the CPU (``trtinfer serve --backend
onnxruntime``; the exported classifier's default runtime), so the figure compares the servers, not the
runtimes.

Needs a checkout with the server installed (``bash scripts/triton_server.sh``: Triton 2.51 from the
registry's nvidia-pytriton wheel, Python backend only); the launcher is the tests' own
(``tests/exporters/triton_server.py``). Prints images/s per round and the median ratio; writes
``triton-vs-serve.json``.
"""

from __future__ import annotations

import argparse
import os
import importlib.util
import io
import json
import statistics
import struct
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

CHECKOUT = Path(__file__).resolve().parents[1]
#: (label, images per request, concurrent clients): single images that the servers' batchers gather, and
#: client-side batches.
SCENARIOS = (("1 image/request, 16 clients", 1, 16), ("16 images/request, 4 clients", 16, 4))
WARMUP_S = 3.0


def _launcher() -> Any:
    path = CHECKOUT / "tests" / "exporters" / "triton_server.py"
    if not path.is_file():
        sys.exit(f"error: {path} not found; run this benchmark from a trtinfer checkout")
    spec = importlib.util.spec_from_file_location("trtinfer_test_triton_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    problems = module.missing()
    if problems:
        sys.exit("error: no real Triton server here: " + "; ".join(problems))
    return module


def encoded_images(data: Path, count: int) -> list[bytes]:
    from PIL import Image

    from trtinfer.calibration.cifar import load_cifar

    files = []
    for i, row in enumerate(load_cifar(data, "test").images[:count]):
        buf = io.BytesIO()
        Image.fromarray(row).save(buf, "PNG" if i % 2 else "JPEG")
        files.append(buf.getvalue())
    return files


def bytes_request(images: list[bytes], output: str) -> tuple[bytes, dict[str, str]]:
    """An Open Inference Protocol request with the images as one binary BYTES tensor ``image`` [N, 1]."""
    data = b"".join(struct.pack("<I", len(image)) + image for image in images)
    head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images), 1],
                                   "parameters": {"binary_data_size": len(data)}}],
                       "outputs": [{"name": output, "parameters": {"binary_data": True}}]}).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head)),
                         "Content-Type": "application/octet-stream"}


def measure(pool: ProcessPoolExecutor, port: int, model: str, output: str, images: list[bytes],
            seconds: float) -> dict[str, float]:
    """images/s per scenario against the server on ``port`` (after a warm-up of each)."""
    from trtinfer.benchmarks.serve_load import run_load

    path = f"/v2/models/{model}_image/infer"
    figures = {}
    for label, batch, clients in SCENARIOS:
        body, headers = bytes_request(images[:batch], output)
        run_load(pool, port, label, path, body, headers, batch, clients, WARMUP_S)
        result = run_load(pool, port, label, path, body, headers, batch, clients, seconds)
        if result.errors:
            raise RuntimeError(f"{label}: {result.errors} failed requests ({result.statuses})")
        figures[label] = result.per_second()[1]
    return figures


def run_triton(launcher: Any, repo: Path, logs: Path, pool: ProcessPoolExecutor, model: str, output: str,
               images: list[bytes], seconds: float) -> dict[str, float]:
    server = launcher.start_triton(repo, logs)
    try:
        error = server.load(model + "_image")
        if error is not None:
            raise RuntimeError(f"Triton did not load {model}_image: {error}\n{server.log_tail()}")
        return measure(pool, server.http_port, model, output, images, seconds)
    finally:
        server.stop()


def run_serve(artifact: Path, logs: Path, pool: ProcessPoolExecutor, model: str, output: str, images: list[bytes],
              seconds: float) -> dict[str, float]:
    from trtinfer.benchmarks.serve_process import start_server

    server = start_server([artifact], logs, "--backend", "onnxruntime")
    try:
        return measure(pool, server.port, model, output, images, seconds)
    finally:
        server.stop()


def export_python_classifier(artifact: Path, repo: Path) -> None:
    from trtinfer.cli import main

    code = main(["export", "triton", str(artifact), "--repo", str(repo), "--kind", "cpu", "--cpu-backend", "python",
                 "--with-preprocess", "--python-path", sysconfig.get_paths()["purelib"]])
    if code != 0:
        sys.exit(f"error: the export failed (exit {code})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="a CPU artifact (trtinfer build)")
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder (or its parent): the images sent")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server, alternating")
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario and round")
    parser.add_argument("-o", "--out", type=Path, default=Path("triton-vs-serve"))
    args = parser.parse_args(argv)
    from trtinfer.manifest import Manifest

    launcher = _launcher()
    manifest = Manifest.read(args.artifact)
    model, output = manifest.name, manifest.output.name
    images = encoded_images(args.data, max(batch for _, batch, _ in SCENARIOS))
    args.out.mkdir(parents=True, exist_ok=True)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="triton-vs-serve-") as tmp, ProcessPoolExecutor(4) as pool:
        repo, logs = Path(tmp) / "repo", Path(tmp)
        export_python_classifier(args.artifact, repo)
        for index in range(args.rounds):
            order = ("triton", "serve") if index % 2 == 0 else ("serve", "triton")
            for which in order:
                started = time.monotonic()
                figures = (run_triton(launcher, repo, logs, pool, model, output, images, args.seconds)
                           if which == "triton" else run_serve(args.artifact, logs, pool, model, output, images,
                                                               args.seconds))
                rounds.append({"round": index + 1, "server": which, "images_per_s": figures,
                               "wall_s": round(time.monotonic() - started, 1)})
                print(f"round {index + 1} {which:6s} " + "; ".join(f"{label}: {ips:7.1f} images/s"
                                                                   for label, ips in figures.items()), flush=True)
    summary = {}
    for label, _, _ in SCENARIOS:
        by = {which: [r["images_per_s"][label] for r in rounds if r["server"] == which] for which in ("triton", "serve")}
        ratios = [t / s for t, s in zip(by["triton"], by["serve"])]
        summary[label] = {"triton_median": statistics.median(by["triton"]), "serve_median": statistics.median(by["serve"]),
                          "triton_over_serve_median": statistics.median(ratios), "per_round_ratios": ratios}
        print(f"{label}: Triton {summary[label]['triton_median']:.1f} images/s, trtinfer serve "
              f"{summary[label]['serve_median']:.1f} images/s, Triton/serve {summary[label]['triton_over_serve_median']:.2f}x "
              f"(per round {', '.join(f'{r:.2f}' for r in ratios)})")
    report = {"artifact": str(args.artifact), "model": model, "precision": manifest.precision,
              "seconds": args.seconds, "rounds": rounds, "summary": summary,
              "cores": len(os.sched_getaffinity(0)), "numpy": np.__version__}
    (args.out / "triton-vs-serve.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'triton-vs-serve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
