"""builders/qat/modelopt_qat.py: ModelOpt fake quantizers in a small torchvision-like net, a few SGD steps,
then the Q/DQ ONNX checked structurally for TensorRT (signed INT8, zero points 0, per-channel weights,
every Conv/Gemm fed by DequantizeLinear) and run by ONNX Runtime against the fake-quant PyTorch model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("modelopt")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

from trtinfer.builders.qat import modelopt_qat  # noqa: E402
from trtinfer.errors import BackendUnavailable, ValidationError  # noqa: E402
from trtinfer import versions  # noqa: E402

SIZE = 32
CLASSES = 10


class Block(nn.Module):
    """MobileNetV2's inverted residual in miniature: expand, depthwise, project, residual Add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = channels * 2
        self.conv = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.conv(x)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
            Block(16), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), Block(32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, CLASSES)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE), dtype=np.float32)


@pytest.fixture(scope="module")
def qat(tmp_path_factory):
    """(fine-tuned fake-quant model, its ONNX path, export facts)."""
    torch.manual_seed(0)
    model = TinyNet().train()
    model = modelopt_qat.prepare(model, _images(64, 1), batch_size=32)
    assert model.training  # handed back in the mode it came in
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, labels = torch.from_numpy(_images(16, 2)), torch.randint(0, CLASSES, (16,))
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("qat") / "model.onnx"
    facts = modelopt_qat.export(model, path, SIZE)
    assert model.training
    return model.eval(), path, facts


def _constants(model) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                if n.op_type == "Constant"})
    return out


def test_prepare_inserts_calibrated_quantizers(qat):
    from modelopt.torch.quantization.nn import TensorQuantizer

    model, _, _ = qat
    quantizers = {name: m for name, m in model.named_modules() if isinstance(m, TensorQuantizer) and m.is_enabled}
    weights = [q for name, q in quantizers.items() if name.endswith("weight_quantizer")]
    inputs = [q for name, q in quantizers.items() if name.endswith("input_quantizer")]
    assert len(weights) == 9  # 8 convolutions and the classifier
    assert len(inputs) == 10  # their inputs and the pooling's (nn.AdaptiveAvgPool2d gets one too)
    assert all(q.amax is not None and q.amax.numel() > 1 for q in weights)  # per channel
    assert all(q.amax is not None and q.amax.numel() == 1 and float(q.amax) > 0 for q in inputs)
    assert all(q.num_bits == 8 and not q.unsigned for q in [*weights, *inputs])


def test_export_is_signed_symmetric_per_channel_qdq(qat):
    _, path, facts = qat
    model = onnx.load(str(path))
    consts = _constants(model)
    producers = {out: n for n in model.graph.node for out in n.output}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert facts["tool"] == "modelopt" and facts["quantize_linear"] == len(qs) == 19
    for q in qs:
        zero = consts[q.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), q.name
    compute = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(compute) == 9
    for node in compute:
        data, weight = (producers.get(name) for name in node.input[:2])
        assert data is not None and data.op_type == "DequantizeLinear", node.name
        assert weight is not None and weight.op_type == "DequantizeLinear", node.name
        w = consts[producers[weight.input[0]].input[0]]  # DQ <- Q <- the float weight
        scale = consts[weight.input[1]]
        axis = next(a.i for a in weight.attribute if a.name == "axis")
        assert axis == 0 and scale.shape == (w.shape[0],), node.name
        assert np.all(scale > 0)
    assert not [n for n in model.graph.node if n.op_type == "Cast"]  # ModelOpt's float->float casts dropped


def test_onnx_runtime_matches_fake_quant_torch_with_dynamic_batch(qat):
    model, path, _ = qat
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    x = _images(64, 3)
    got = session.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (64, CLASSES)
    spread = float(np.abs(want).max())
    assert spread > 1e-3  # the logits are not degenerate, so the comparison means something
    # Rounding at a Q node can differ by one step between the two; 5 % of the logits' range allows for
    # that and is far below what a wrong scale, axis or sign gives.
    assert np.abs(got - want).max() <= 0.05 * spread
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    for batch in (1, 5):
        np.testing.assert_allclose(session.run(["logits"], {"input": x[:batch]})[0], got[:batch], rtol=1e-4,
                                   atol=1e-5)


def test_tensorrt_check_refuses_unsigned_and_per_tensor_weights(qat):
    _, path, _ = qat
    model = onnx.load(str(path))
    modelopt_qat.check_tensorrt_qdq(model)
    first_zero = next(n for n in model.graph.node if n.op_type == "QuantizeLinear").input[2]
    zero_node = next(n for n in model.graph.node if n.output[0] == first_zero)
    zero_node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(0, np.uint8)))
    with pytest.raises(ValidationError, match="zero point"):
        modelopt_qat.check_tensorrt_qdq(model)

    model = onnx.load(str(path))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight_dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    for attr in weight_dq.attribute:
        if attr.name == "axis":
            attr.i = 1
    with pytest.raises(ValidationError, match="axis 1"):
        modelopt_qat.check_tensorrt_qdq(model)


def test_modelopt_missing_is_backend_unavailable_with_hint(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(versions, "package_version", lambda name: None)
    for call in (lambda: modelopt_qat.prepare(TinyNet(), _images(4, 0)),
                 lambda: modelopt_qat.export(TinyNet(), tmp_path / "m.onnx", SIZE)):
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert "ModelOpt" in info.value.message and "pip install" in (info.value.hint or "")
    assert not (tmp_path / "m.onnx").exists()


def test_modelopt_torch_import_failure_is_backend_unavailable(monkeypatch):
    """nvidia-modelopt installed but modelopt.torch.quantization failing to import (as without `requests`)."""
    monkeypatch.setitem(sys.modules, "modelopt.torch.quantization", None)
    with pytest.raises(BackendUnavailable) as info:
        modelopt_qat.need_modelopt()
    assert "does not import" in info.value.message and "requests" in (info.value.hint or "")
