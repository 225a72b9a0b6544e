"""Artifacts for the runtime tests: small torchvision classifiers exported to ONNX with a manifest.

Each artifact is built once per session (export takes seconds); tests that modify files copy it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
