"""Builds fail early and clean up always: destination problems are found before any work, SIGINT
and SIGTERM (real signals) unwind with nothing left behind and the truth about what was written,
a multi-artifact commit is all-or-nothing, and a build killed mid-commit is reported by the next."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builders_util import make_model, save
from trtinfer import atomic
from trtinfer.atomic import StagedDirectories
from trtinfer.cli import main
from trtinfer.interrupts import Interrupted

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save(make_model("resnet18", cifar_stem=True), tmp_path_factory.mktemp("ckpt") / "r18.pth")


def _one_error(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("setup, out, match", [
    (lambda t: (t / "f").write_text("x"), "f", "is a file"),
    (lambda t: (t / "f").write_text("x"), "f/sub", "is a file"),
    (lambda t: None, "/dev/null", "not a directory"),
    (lambda t: (t / "ro").mkdir(mode=0o555), "ro/out", "is not writable"),
])
def test_destination_problems_are_found_before_any_work(ckpt, tmp_path, capsys, monkeypatch, setup, out, match):
    if match == "is not writable" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the check is os.access, which root passes")
    import trtinfer.builders.pipeline as pipeline

    setup(tmp_path)
    loaded = []
    monkeypatch.setattr(pipeline.Builder, "load", lambda self: loaded.append(1) or (_ for _ in ()).throw(AssertionError))
    target = out if out.startswith("/") else str(tmp_path / out)
    assert main(["build", str(ckpt), "-o", target, "-q"]) == 1
    assert match in _one_error(capsys)
    assert loaded == []  # refused before the checkpoint was even loaded


def test_a_long_name_and_an_existing_artifact_are_refused_up_front(ckpt, tmp_path, capsys):
    assert main(["build", str(ckpt), "-o", str(tmp_path), "--name", "n" * 300, "-q"]) == 1
    assert "pass a shorter --name" in _one_error(capsys)
    (tmp_path / "r18-fp32").mkdir()
    assert main(["build", str(ckpt), "-o", str(tmp_path), "-q"]) == 1
    assert "already exists" in _one_error(capsys)


@pytest.mark.parametrize("flag, value", [("--atol", "-1"), ("--atol", "nan"), ("--rtol", "inf")])
def test_tolerances_must_be_finite_and_non_negative(ckpt, tmp_path, capsys, flag, value):
    assert main(["build", str(ckpt), "-o", str(tmp_path), flag, value, "-q"]) == 1
    assert f"{flag} {float(value)} must be a finite number >= 0" in _one_error(capsys)


def test_non_finite_weights_are_named(tmp_path, capsys):
    import torch

    model = make_model("resnet18", cifar_stem=True)
    with torch.no_grad():
        model.layer1[0].conv1.weight[0, 0, 0, 0] = float("nan")
        model.fc.bias[0] = float("inf")
    path = save(model, tmp_path / "nan.pth")
    assert main(["build", str(path), "-o", str(tmp_path / "out"), "-q"]) == 1
    error = _one_error(capsys)
    assert "NaN or infinite values in 2 weight tensor(s): layer1.0.conv1.weight, fc.bias" in error
    assert not (tmp_path / "out").exists()


def test_an_input_size_that_cannot_fit_is_refused_with_the_estimate(ckpt, tmp_path, capsys):
    assert main(["build", str(ckpt), "-o", str(tmp_path), "--input-size", "4096", "-q"]) == 1
    error = _one_error(capsys)
    assert "--input-size 4096 needs about" in error and "GiB is available" in error


def test_force_over_a_file_leaves_nothing_aside(ckpt, tmp_path):
    (tmp_path / "r18-fp32").write_text("not an artifact")
    assert main(["build", str(ckpt), "-o", str(tmp_path), "--force", "-q"]) == 0
    assert (tmp_path / "r18-fp32" / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18-fp32"]  # no .r18-fp32.old-<pid>


def _stage_two(tmp_path: Path, overwrite: bool = True) -> StagedDirectories:
    staged = StagedDirectories(overwrite=overwrite)
    for name in ("m-fp32", "m-int8"):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "which").write_text("old")
        d = staged.stage(tmp_path / name)
        (d / "which").write_text("new")
    return staged


def test_a_signal_during_the_commit_waits_for_the_whole_set(tmp_path):
    """A real SIGTERM sent between the two renames of a commit (in a child process of its own): both
    artifacts are still committed, and the interrupt then reports them as written."""
    code = f"""
import os, signal, sys
sys.path[:0] = [{str(REPO / 'tests' / 'builders')!r}, {str(REPO / 'tests')!r}]
from pathlib import Path
from trtinfer import atomic
from trtinfer.interrupts import Interrupted
from test_build_interrupts import _stage_two
real = os.rename
calls = []
def rename_then_signal(src, dst):
    real(src, dst)
    calls.append(dst)
    if len(calls) == 1:
        os.kill(os.getpid(), signal.SIGTERM)
atomic.os.rename = rename_then_signal
try:
    _stage_two(Path({str(tmp_path)!r})).commit()
except Interrupted as exc:
    print(exc.signum, *[p.name for p in exc.written])
    sys.exit(3)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.split() == [str(int(signal.SIGTERM)), "m-fp32", "m-int8"]
    assert {(tmp_path / n / "which").read_text() for n in ("m-fp32", "m-int8")} == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-fp32", "m-int8"]


def test_a_failure_in_the_middle_of_a_commit_rolls_back_every_artifact(tmp_path, monkeypatch):
    staged = _stage_two(tmp_path)
    real_rename = os.rename

    def fail_second(src, dst):
        if Path(dst).name == "m-int8":
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", fail_second)
    with pytest.raises(OSError):
        staged.commit()
    monkeypatch.setattr(atomic.os, "rename", real_rename)
    staged.discard()
    assert {(tmp_path / n / "which").read_text() for n in ("m-fp32", "m-int8")} == {"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-fp32", "m-int8"]


def test_a_build_killed_mid_commit_is_reported_by_the_next(ckpt, tmp_path, capsys):
    """A child process commits two artifacts and is SIGKILLed between the renames; the next build
    into that folder names the split set and removes the leftovers."""
    code = f"""
import os, signal, sys
sys.path[:0] = [{str(REPO / 'tests' / 'builders')!r}, {str(REPO / 'tests')!r}]
from pathlib import Path
from trtinfer import atomic
from test_build_interrupts import _stage_two
real = os.rename
def rename_then_die(src, dst):
    real(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)
atomic.os.rename = rename_then_die
_stage_two(Path({str(tmp_path)!r})).commit()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert any(n.startswith(".trtinfer-commit-") for n in leftovers)
    assert main(["build", str(ckpt), "-o", str(tmp_path), "--name", "m", "-q"]) == 1  # m-fp32 exists
    err = capsys.readouterr().err
    assert "was killed while committing" in err and "m-fp32: new version" in err and "m-int8: old version" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-fp32", "m-int8"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_real_signal_mid_build_removes_every_temporary(ckpt, tmp_path, sig):
    """trtinfer build in a child process, signalled once the export has started."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "trtinfer.cli", "build", str(ckpt), "-o", str(out),
                             "--precision", "fp32,fp16"], stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        seen.append(line)
        if "validating ONNX" in line or time.monotonic() > deadline:
            break
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    text = "".join(seen) + rest
    assert proc.returncode == 128 + sig, text
    assert f"interrupted ({signal.Signals(sig).name}): nothing was written, temporaries removed" in text
    assert not out.exists() or list(out.iterdir()) == []
    assert list(tmp.iterdir()) == []  # no trtinfer-build-*, no ModelOpt or ONNX Runtime scratch


def test_a_planted_journal_in_the_output_folder_deletes_nothing(tmp_path):
    """The build's recovery trusted any path whose parent was the output folder: a planted journal naming
    OUT/other and OUT/README made the next build delete both. Only our own staging and set-aside names count."""
    from trtinfer.atomic import recover_killed_commits
    from trtinfer.errors import ArtifactError

    (tmp_path / "other").mkdir()
    (tmp_path / "README").write_text("keep")
    out = tmp_path.resolve()
    journal = tmp_path / ".trtinfer-commit-999.json"
    journal.write_text(json.dumps({"pid": 999, "artifacts": [str(out / "m-fp32")],
                                   "staged": {str(out / "m-fp32"): str(out / "other")},
                                   "backups": {str(out / "m-fp32"): str(out / "README")}}))
    with pytest.raises(ArtifactError, match="not a commit journal trtinfer wrote .*not a staging folder"):
        recover_killed_commits(tmp_path, print)
    assert (tmp_path / "other").is_dir() and (tmp_path / "README").read_text() == "keep" and journal.exists()


def test_an_artifact_folder_that_is_a_link_is_replaced_as_a_link(tmp_path):
    """--force over OUT/m-fp32 -> elsewhere replaced the link's target; now the link itself is replaced."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "m-fp32").symlink_to(elsewhere)
    staged = StagedDirectories(overwrite=True)
    (staged.stage(out / "m-fp32") / "which").write_text("new")
    staged.commit()
    assert not (out / "m-fp32").is_symlink() and (out / "m-fp32" / "which").read_text() == "new"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep"] and sorted(p.name for p in out.iterdir()) == ["m-fp32"]
