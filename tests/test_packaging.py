"""`pip install .` (not editable) installs only the `trtinfer` namespace, and the runtime stays lean."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True)
    return next(out.glob("trtinfer-*.whl"))


def test_wheel_has_only_the_trtinfer_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"trtinfer", next(t for t in tops if t.endswith(".dist-info"))}
    for sub in ("builders", "calibration", "benchmarks", "runtime", "commands", "serve", "exporters"):
        assert f"trtinfer/{sub}/__init__.py" in names
    # files shipped as data: the page, and the Triton preprocessing model with the pixels it copies
    for data in ("serve/page.html", "exporters/triton_preprocess/model.py", "exporters/triton_classifier/model.py",
                 "pixels.py"):
        assert f"trtinfer/{data}" in names
    assert "trtinfer/builders/source/checkpoint.py" in names and "trtinfer/calibration/cifar.py" in names
    for stage in ("source", "export", "precision", "checks", "engine"):  # the build's stages, one folder each
        assert f"trtinfer/builders/{stage}/__init__.py" in names
    for backend in ("onnxruntime", "openvino", "tensorrt"):  # setup.py lists subpackages one by one
        assert f"trtinfer/runtime/backends/{backend}/runner.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "trtinfer = trtinfer.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_wheel_imports_from_anywhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    assert not any((target / n).exists() for n in ("builders", "calibration", "benchmarks"))
    code = ("import trtinfer, trtinfer.builders.source.checkpoint, trtinfer.calibration.cifar, trtinfer.benchmarks,"
            " sys; print(trtinfer.__file__)\n"
            "import importlib.util as u; print(all(u.find_spec(n) is None for n in ('builders','calibration','benchmarks')))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    first, second = proc.stdout.split()
    assert first.startswith(str(target)) and second == "True"


def test_runtime_import_is_lean():
    code = ("import sys, trtinfer, trtinfer.runtime, trtinfer.preprocess, trtinfer.manifest;"
            "heavy = [m for m in ('torch', 'torchvision', 'modelopt', 'onnx', 'tensorrt', 'rich') if m in sys.modules];"
            "print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_cli_help_and_version_without_heavy_imports():
    code = ("import sys; from trtinfer.cli import main; rc = main(['--help']); "
            "print('HEAVY', [m for m in ('torch', 'modelopt', 'tensorrt') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout
    for cmd in ("build", "inspect"):
        assert cmd in proc.stdout
    exe = Path(sys.executable).with_name("trtinfer")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("trtinfer, version ")
    for cmd in ("build", "inspect", "calib", "doctor", "predict", "serve", "export", "export triton"):
        help_text = subprocess.run([str(exe), *cmd.split(), "--help"], capture_output=True, text=True)
        assert help_text.returncode == 0, help_text.stderr
        assert "Usage: trtinfer " + cmd in help_text.stdout


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in readme and "test-command" in ci
    block = readme.split("<!-- test-command -->", 1)[1].split("```")[1]
    # CI type-checks, runs the default suite, then the long end-to-end runs (and stops at the first failure)
    assert block.strip().splitlines()[-1] == "bash scripts/typecheck.sh && bash scripts/test.sh && bash scripts/test.sh -m long"
    assert (REPO / "scripts" / "typecheck.sh").is_file() and (REPO / "mypy.ini").is_file()


def test_tensorrt_extras_pair_one_cuda_major_each(wheel):
    """[tensorrt-cu12]: TensorRT 10 with cuda-python 12 (drivers before R580); [tensorrt-cu13]: TensorRT 11 with
    cuda-python 13; [tensorrt] is the newest of the two (what PyPI's `tensorrt` is)."""
    from packaging.requirements import Requirement

    archive = zipfile.ZipFile(wheel)
    meta = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    extras: dict[str, dict[str, str]] = {}
    for line in meta.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            for extra in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
                if req.marker is not None and req.marker.evaluate({"extra": extra}):
                    extras.setdefault(extra, {})[req.name] = str(req.specifier)
    assert set(extras) == {"tensorrt", "tensorrt-cu12", "tensorrt-cu13"}
    cu12, cu13 = extras["tensorrt-cu12"], extras["tensorrt-cu13"]
    assert set(cu12) == {"tensorrt-cu12", "cuda-python"} and set(cu13) == {"tensorrt-cu13", "cuda-python"}
    for spec, versions in ((cu12["tensorrt-cu12"], ("10.0.1", "10.16.1.11")), (cu13["tensorrt-cu13"], ("11.4.0.106",))):
        assert all(v in Requirement(f"x{spec}").specifier for v in versions)
    assert "11.0.0.114" not in Requirement(f"x{cu12['tensorrt-cu12']}").specifier
    assert "12.9.0" in Requirement(f"x{cu12['cuda-python']}").specifier
    assert "13.0.0" not in Requirement(f"x{cu12['cuda-python']}").specifier
    assert "13.4.4" in Requirement(f"x{cu13['cuda-python']}").specifier
    assert extras["tensorrt"] == cu13
