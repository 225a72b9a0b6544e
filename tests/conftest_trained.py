"""Session fixtures around the briefly trained CIFAR-10 model (see trained.py).

Test modules that need them declare ``pytest_plugins = ["conftest_trained"]``; everything is built
once per session: the weights, the FP32 ONNX, a 512-image calibration set, the 846-row evaluation
set, the FP32 logits and the FP16 / INT8 models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trained import TrainedModel, train_model


@dataclass
class Built:
    path: Path
    facts: dict[str, Any]


@pytest.fixture(scope="session")
def trained_model(cifar_dir: Path, tmp_path_factory) -> TrainedModel:
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    return train_model(cifar_dir, tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def calib_set(cifar_root: Path, trained_model: TrainedModel):
    from trtinfer.calibration.calibset import make_calibration_set

    return make_calibration_set(cifar_root, trained_model.spec, samples=512, seed=0)


@pytest.fixture(scope="session")
def eval_set(cifar_root: Path, trained_model: TrainedModel, calib_set):
    from trtinfer.calibration.calibset import make_eval_set

    return make_eval_set(cifar_root, trained_model.spec, exclude=calib_set, labels=trained_model.class_names)


@pytest.fixture(scope="session")
def fp32_logits(trained_model: TrainedModel, eval_set) -> np.ndarray:
    from trtinfer.builders.logits import run_onnx

    return run_onnx(trained_model.onnx_path, eval_set.x)


@pytest.fixture(scope="session")
def fp16_model(trained_model: TrainedModel, calib_set, tmp_path_factory) -> Built:
    from trtinfer.builders.precision.tools import reduce_precision

    out = tmp_path_factory.mktemp("fp16") / "model.onnx"
    return Built(out, reduce_precision("fp16", trained_model.onnx_path, out, calibration=calib_set.x))


@pytest.fixture(scope="session")
def int8_model(trained_model: TrainedModel, calib_set, tmp_path_factory) -> Built:
    from trtinfer.builders.precision.tools import reduce_precision

    out = tmp_path_factory.mktemp("int8") / "model.onnx"
    return Built(out, reduce_precision("int8", trained_model.onnx_path, out, calibration=calib_set.x))
