"""The README's quick start, reduced (QUICK=1: one epoch, FP32 and INT8, a bench of seconds), run as a
user runs it: the real script from a shell, on the shared CIFAR rows. Its first experience cannot rot."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


TRAIN_ROWS_PER_BATCH = 240  # of the shared 932: 1,200 training rows, a quarter of the fine-tune's time


def _fewer_training_rows(cifar_dir: Path, root: Path) -> Path:
    """A CIFAR-10 folder (the standard pickles) with the shared test split whole and the first
    TRAIN_ROWS_PER_BATCH rows of each training batch: the script's plumbing needs every stage, not
    every row (the full run's figures come from the README's own command)."""
    import pickle
    import shutil

    import numpy as np

    from trtinfer.calibration.cifar import load_cifar

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("batches.meta", "test_batch"):
        shutil.copyfile(cifar_dir / name, folder / name)
    train = load_cifar(cifar_dir, "train")  # the five batches in order, as NHWC rows
    per = len(train) // 5
    for i in range(5):
        rows = slice(i * per, i * per + TRAIN_ROWS_PER_BATCH)
        batch = {"batch_label": f"training batch {i + 1} of 5", "labels": train.labels[rows].tolist(),
                 "data": np.ascontiguousarray(train.images[rows].transpose(0, 3, 1, 2).reshape(-1, 3072)),
                 "filenames": [f"row{j}.png" for j in range(TRAIN_ROWS_PER_BATCH)]}
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(batch, f)
    return root


@pytest.mark.long  # about 80 s: CI runs it after the default suite
def test_quickstart_runs_end_to_end(cifar_dir, tmp_path):
    out = tmp_path / "qs"
    data = _fewer_training_rows(cifar_dir, tmp_path / "data")
    env = {**os.environ, "QUICK": "1", "OUT": str(out), "CIFAR_ROOT": str(data),
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

