"""Artifacts for the runtime tests: small torchvision classifiers exported to ONNX with a manifest, and the
TensorRT backend's stand-ins.

Each artifact is built once per session (export takes seconds); tests that modify files copy it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fakes import tensorrt as fake_trt
from fakes.tensorrt import make_plan_artifact
from trtinfer.manifest import BatchProfile

from .helpers import export_artifact, resnet18_cifar, tiny_net


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_net()


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, tiny_model) -> Path:
    return export_artifact(tmp_path_factory.mktemp("art") / "tiny", tiny_model, "tiny")


@pytest.fixture(scope="session")
def resnet_model():
    return resnet18_cifar()


@pytest.fixture(scope="session")
def resnet_artifact(tmp_path_factory, resnet_model) -> Path:
    return export_artifact(tmp_path_factory.mktemp("art") / "resnet18", resnet_model, "resnet18")


@pytest.fixture
def artifact_copy(tmp_path, tiny_artifact) -> Path:
    """A private copy of the tiny artifact that a test may tamper with."""
    return Path(shutil.copytree(tiny_artifact, tmp_path / "copy"))


# -- the TensorRT backend against its stand-ins (fakes.tensorrt over the queue CUDA of fakes.cuda) -------------
SIMPLE = [BatchProfile(1, 8, 16)]


@pytest.fixture(params=sorted(fake_trt.TRT_VERSIONS), ids=lambda major: f"trt{major}")
def trt_version(request) -> str:
    """The TensorRT version the stand-ins claim: every stand-in test runs as TensorRT 10 and as 11."""
    return fake_trt.TRT_VERSIONS[request.param]


@pytest.fixture
def fakes(monkeypatch, request, trt_version) -> tuple[fake_trt.StandIns, list[BatchProfile]]:
    """The stand-ins installed for one test; ``indirect`` parametrisation gives other profiles."""
    profiles = getattr(request, "param", SIMPLE)
    return fake_trt.install(monkeypatch, profiles, version=trt_version), profiles


@pytest.fixture
def plan_artifact(tiny_artifact, tmp_path, fakes):
    """The tiny artifact with a stand-in model.plan and its engine record (for the TensorRT claimed)."""
    return make_plan_artifact(tiny_artifact, tmp_path / "plan", fakes[1], trt_version=fakes[0].trt.__version__)
