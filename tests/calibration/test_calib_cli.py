"""``trtinfer calib make`` / ``calib show``: the command line around calibration sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtinfer.cli import main

CIFAR_OPTS = ["--input-size", "32", "--normalize", "cifar10", "--no-progress"]


def test_make_is_reproducible(tmp_path: Path, cifar_root: Path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["calib", "make", "--data", str(cifar_root), "--samples", "100", "-o", str(a), *CIFAR_OPTS]) == 0
    out = capsys.readouterr().out
    assert "100 images [3, 32, 32]" in out and "train split" in out and "10 classes, 10-10 each" in out
    assert main(["calib", "make", "--data", str(cifar_root / "cifar-10-batches-py"), "--samples", "100",
                 "-o", str(b), *CIFAR_OPTS]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert main(["calib", "make", "--data", str(cifar_root), "--samples", "100", "--seed", "1",
                 "-o", str(tmp_path / "c.npz"), *CIFAR_OPTS]) == 0
    assert (tmp_path / "c.npz").read_bytes() != a.read_bytes()


def test_show(tmp_path: Path, cifar_root: Path, capsys):
    path = tmp_path / "c.npz"
    assert main(["calib", "make", "--data", str(cifar_root), "-n", "20", "--mean", "0.5,0.5,0.5", "--std",
                 "0.25,0.25,0.25", "--input-size", "32", "-o", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["calib", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "20 images" in out and "sha256 verified" in out and "normalize custom" in out
    assert "only 20 calibration images" in out  # the small-set warning travels with the file
    assert main(["calib", "show", "--json", str(path)]) == 0
    assert '"count": 20' in capsys.readouterr().out


@pytest.mark.parametrize("args, message, exit_code", [
    (["--samples", "5000"], "fewer than the 5000 asked for", 1),
    (["--samples", "10", "--mean", "0.5,0.5,0.5"], "--mean and --std go together", 1),
    (["--samples", "10", "--mean", "a,b,c", "--std", "1,1,1"], "expected comma-separated numbers", 2),
    (["--samples", "10", "--normalize", "imagenette"], "'imagenette' is not one of 'imagenet'", 2),
])
def test_bad_options_are_one_line(tmp_path: Path, cifar_root: Path, capsys, args, message, exit_code):
    out = tmp_path / "c.npz"
    code = main(["calib", "make", "--data", str(cifar_root), "--input-size", "32", "-o", str(out), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == exit_code and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("bad", [
    ["--input-size", "0"], ["--input-size", "32", "--resize", "4"], ["--input-size", "32", "--normalize", "imagenette"],
    ["--input-size", "32", "--mean", "0.5,x,0.5", "--std", "1,1,1"], ["--input-size", "32", "--mean", "0.5,0.5,0.5"],
    ["--input-size", "32", "--mean", "0.5,0.5", "--std", "1,1"], ["--input-size", "64", "--resize", "32"],
])
def test_build_and_calib_make_refuse_preprocessing_alike(tmp_path: Path, cifar_root: Path, capsys, bad):
    """One declaration of --input-size/--resize/--normalize/--mean/--std and one check (make_spec):
    both commands fail the same way, in the same words, before touching the checkpoint or the data."""
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"never read")
    runs = {}
    for name, argv in (("build", ["build", str(checkpoint), "-o", str(tmp_path / "out"), *bad]),
                       ("calib make", ["calib", "make", "--data", str(cifar_root), "-o", str(tmp_path / "c.npz"),
                                       "--no-progress", *bad])):
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0 and err.startswith("error: ") and err.count("\n") == 1, (name, err)
        runs[name] = (code, err.replace("trtinfer calib make", "CMD").replace("trtinfer build", "CMD"))
    assert runs["build"] == runs["calib make"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "c.npz").exists()


def test_bad_data_and_output(tmp_path: Path, cifar_root: Path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["calib", "make", "--data", str(tmp_path / "empty"), "--input-size", "32",
                 "-o", str(tmp_path / "c.npz"), "--no-progress"]) == 1
    assert "empty" in capsys.readouterr().err
    np.save(tmp_path / "gray.npy", np.zeros((10, 32, 32, 1), np.uint8))
    assert main(["calib", "make", "--data", str(tmp_path / "gray.npy"), "--input-size", "32",
                 "-o", str(tmp_path / "c.npz"), "--no-progress"]) == 1
    assert "1 channels" in capsys.readouterr().err
    assert main(["calib", "make", "--data", str(cifar_root), "--input-size", "32", "-o", str(tmp_path / "c.bin"),
                 "--no-progress"]) == 1
    assert ".npz" in capsys.readouterr().err
    existing = tmp_path / "exists.npz"
    existing.write_bytes(b"old")
    assert main(["calib", "make", "--data", str(cifar_root), "-n", "10", "--input-size", "32", "-o", str(existing),
                 "--no-progress"]) == 1
    assert "--force" in capsys.readouterr().err and existing.read_bytes() == b"old"
    assert main(["calib", "make", "--data", str(cifar_root), "-n", "10", "--input-size", "32", "-o", str(existing),
                 "--no-progress", "--force"]) == 0
    assert existing.read_bytes() != b"old"
    assert main(["calib", "show", str(tmp_path / "missing.npz")]) == 1


def test_make_help(capsys):
    assert main(["calib", "make", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--samples" in out and "--input-size" in out and "--normalize" in out
