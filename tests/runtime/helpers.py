"""Helpers of the runtime tests: export small classifiers as artifacts, make inputs, compute references."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trtinfer.labels import CIFAR10
from trtinfer.manifest import ONNX_NAME, BatchProfile, Manifest, TensorSpec
from trtinfer.preprocess import make_spec

INPUT_SIZE = 32
NUM_CLASSES = 10


def engine_artifact(directory: Path, model, profiles: list[BatchProfile]) -> Path:
    """A tiny artifact with a real TensorRT engine of those batch profiles; skips the calling test
    (or fixture) where TensorRT and a GPU cannot run it."""
    import pytest

    from gpu_env import tensorrt_skip_reason
    from trtinfer.builders.engine.artifact import build_engine_into_artifact
    from trtinfer.builders.engine.settings import EngineBuildSettings

    reason = tensorrt_skip_reason()
    if reason:
        pytest.skip(f"needs TensorRT: {reason}")
    art = export_artifact(directory, model, "tiny")
    build_engine_into_artifact(art, EngineBuildSettings(profiles=list(profiles)))
    return art


def export_artifact(directory: Path, model, name: str, precision: str = "fp32", input_size: int = INPUT_SIZE,
                    num_classes: int = NUM_CLASSES) -> Path:
    """torch model -> ``directory`` with model.onnx (dynamic batch, input/logits) and manifest.json."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    sample = torch.zeros(2, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, sample, str(directory / ONNX_NAME), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17)
    manifest = Manifest(
        name=name, arch=name, num_classes=num_classes,
        labels=list(CIFAR10) if num_classes == 10 else [f"class_{i}" for i in range(num_classes)],
        precision=precision, input=TensorSpec("input", [-1, 3, input_size, input_size]),
        output=TensorSpec("logits", [-1, num_classes]), preprocess=make_spec(input_size, "cifar10"),
    )
    manifest.record_file(directory, ONNX_NAME)
    manifest.write(directory)
    return directory


def tiny_net():
    """A few convolutions: fast enough for thousands of requests, and each row's logits depend
    strongly on its own input (a mix-up of rows cannot pass a tight comparison)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, NUM_CLASSES),
    ).eval()


def resnet18_cifar():
    """torchvision ResNet-18, 10 classes, with the CIFAR stem (3x3 conv, no max-pool) at 32x32."""
    import torch
    import torchvision
    from torch import nn

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net.eval()


def distinct_inputs(rows: int, seed: int = 0, size: int = INPUT_SIZE) -> np.ndarray:
    """Random inputs whose rows differ strongly (a per-row offset), float32 NCHW."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 3, size, size), dtype=np.float32)
    x += rng.uniform(-3, 3, size=(rows, 1, 1, 1)).astype(np.float32)
    return x


def torch_reference(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def run_in_threads(target: Callable[[int], None], count: int) -> None:
    """Run ``target(i)`` for i in range(count), each in its own thread, and wait for all of them."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class LaneTrace:
    """What the host does in a TensorRT model's calls, in order: ``("launch", lane)`` for each chunk
    launched, ``("event", lane)`` / ``("stream", lane)`` for each host wait on a lane's event / stream
    (lane None: not a lane's). Works the same on the stand-ins and on a GPU: it wraps our lanes'
    ``launch`` and the ``synchronize`` of the CUDA layer in use, for the test (``monkeypatch``)."""

    def __init__(self, monkeypatch, model, on_launch: Callable[[object], None] | None = None) -> None:
        from trtinfer.runtime.backends.tensorrt import lanes

        self.steps: list[tuple[str, int | None]] = []
        owner = {}
        for lane in model._lanes:
            owner.update({id(lane.done): lane.index, id(lane.uploaded): lane.index, id(lane.stream): lane.index})
        launch = lanes.Lane.launch

        def traced_launch(lane, use_graphs):
            self.steps.append(("launch", lane.index))
            if on_launch is not None:
                on_launch(lane)
            return launch(lane, use_graphs)

        monkeypatch.setattr(lanes.Lane, "launch", traced_launch)
        first = model._lanes[0]
        for kind, cls in (("event", type(first.done)), ("stream", type(first.stream))):
            def traced_wait(obj, _kind=kind, _wait=cls.synchronize):
                self.steps.append((_kind, owner.get(id(obj))))
                return _wait(obj)

            monkeypatch.setattr(cls, "synchronize", traced_wait)

    def launches(self) -> list[int | None]:
        return [lane for kind, lane in self.steps if kind == "launch"]

    def check_pipelined(self, chunks: int, lanes: int) -> None:
        """Consecutive chunks went to different lanes, and the host never waited for a chunk before the
        next one was launched: between two launches it waited only for the lane about to be reused
        (its chunk before last). So two chunks are queued at once on two streams, which is what lets
        a GPU overlap one's copies with the other's compute. One wait (a stream) at the end."""
        launches = self.launches()
        assert len(launches) == chunks, self.steps
        assert all(a != b for a, b in zip(launches, launches[1:])), f"consecutive chunks on one lane: {launches}"
        waits: list[tuple[str, int | None]] = []
        seen = 0
        for kind, lane in self.steps:
            if kind != "launch":
                waits.append((kind, lane))
                continue
            assert all(w == ("event", lane) for w in waits) and (seen or not waits), \
                f"before chunk {seen} (lane {lane}) the host waited for {waits}: {self.steps}"
            seen += 1
            waits = []
        assert len(waits) == 1 and waits[0][0] == "stream", f"the call ended with the waits {waits}"
        assert sum(kind != "launch" for kind, _ in self.steps) == max(0, chunks - lanes) + 1, self.steps
