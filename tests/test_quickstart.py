"""The README's quick start, reduced (QUICK=1: one epoch, FP32 and INT8, a bench of seconds), run as a
user runs it: the real script from a shell, on the shared CIFAR rows. Its first experience cannot rot."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_runs_end_to_end(cifar_root, tmp_path):
    out = tmp_path / "qs"
    env = {**os.environ, "QUICK": "1", "OUT": str(out), "CIFAR_ROOT": str(cifar_root),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "TRTINFER_VENV": sys.prefix}  # this test's own environment
    result = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    card = json.loads((out / "resnet18.trtinfer.json").read_text())
    assert card["arch"] == "resnet18" and card["cifar_stem"] and len(card["history"]) == 1
    assert (out / "resnet18.curves.png").stat().st_size > 1000
    for precision in ("fp32", "int8"):
        manifest = json.loads((out / "artifacts" / f"resnet18-{precision}" / "manifest.json").read_text())
        assert manifest["labels"] == card["labels"] and manifest["accuracy"]["samples"] > 0
    rows = list(csv.DictReader((out / "bench" / "results.csv").open()))
    assert rows and list((out / "bench").glob("*.png"))
    assert "Done in" in result.stdout and "trtinfer serve" in result.stdout

