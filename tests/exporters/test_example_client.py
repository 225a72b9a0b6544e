"""examples/triton_image_client.py, the client code that works unchanged against Triton running an exported
repository (only --url differs), run as a user would against ``trtinfer serve`` (a real server process
on loopback) with real CIFAR images: its top 3 are the runtime's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trtinfer
from trtinfer.preprocess import decode_image_bytes, preprocess
from trtinfer.benchmarks.serve_process import start_server

pytest.importorskip("tritonclient.http")
pytest_plugins = ["conftest_trained"]
SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "triton_image_client.py"


def test_the_example_client_against_trtinfer_serve(artifacts, cifar_dir, tmp_path):
    from PIL import Image

    from trtinfer.calibration.cifar import load_cifar

    rows = load_cifar(cifar_dir, "test").images[:4]
    files = []
    for i, row in enumerate(rows):
        files.append(tmp_path / f"cifar-{i}.{'png' if i % 2 else 'jpg'}")
        Image.fromarray(row).save(files[-1])
    server = start_server([artifacts["fp32"]], tmp_path)
    try:
        result = subprocess.run([sys.executable, str(SCRIPT), "--url", f"127.0.0.1:{server.port}",
                                 "--model", "resnet-fp32", *map(str, files)],
                                capture_output=True, text=True, timeout=120)
    finally:
        assert server.stop() == 0
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(files)
    with trtinfer.load(artifacts["fp32"]) as model:
        labels = model.manifest.labels
        logits = model.infer(preprocess([decode_image_bytes(f.read_bytes()) for f in files], model.manifest.preprocess))
    for line, path, row in zip(lines, files, logits):
        name, _, rest = line.partition(": ")
        entries = [entry.rsplit(" (", 1) for entry in rest.split(", ")]
        assert name == str(path) and [label for label, _ in entries] == [labels[i] for i in np.argsort(-row)[:3]]
        for label, score in entries:
            assert float(score.rstrip(")")) == pytest.approx(row[labels.index(label)], abs=2e-3)
