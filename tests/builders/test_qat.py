"""Quantization-aware fine-tuning (``trtinfer build --int8 --qat``): when it runs (a pure decision), and the
CPU-target run for real (NNCF's PyTorch quantizers, the fine-tune on real CIFAR rows, the ONNX Q/DQ export,
OpenVINO judging it), on a small model so it fits the default suite. The fragile-MobileNetV2 comparison
over seeds is a benchmark-sized run, not a test (see docs/precision.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trtinfer.manifest import FallbackRecord, Int8ChoiceRecord, MethodTrialRecord, QatRecord, read_record

from trtinfer.builders.qat.run import decide


def _choice(drop: float, fallback: FallbackRecord | None = None) -> Int8ChoiceRecord:
    return Int8ChoiceRecord(ran=True, method="performance", fallback=fallback,
                            methods=(MethodTrialRecord(method="performance", top1_agreement=0.95, top1_drop_points=drop),))


def test_auto_runs_only_when_calibration_and_the_fallback_missed_on_the_slice():
    missed = FallbackRecord(ran=True, passed=False, drop_before_points=0.9, drop_after_points=0.7)
    met = FallbackRecord(ran=True, passed=True, drop_before_points=0.9, drop_after_points=0.3)
    assert decide("auto", _choice(0.9, missed), 0.5).run
    assert "missed" in decide("auto", _choice(0.9, missed), 0.5).reason
    assert not decide("auto", _choice(0.9, met), 0.5).run  # a model the fallback rescued is left alone
    assert not decide("auto", _choice(0.2), 0.5).run  # a model that passed is never touched
    assert decide("auto", _choice(0.8), 0.5).run  # --no-fallback and a miss
    assert not decide("auto", Int8ChoiceRecord(ran=False, reason="no labelled rows"), 0.5).run  # nothing to judge on
    assert decide("on", _choice(0.0), 0.5).run and not decide("off", _choice(9.0), 0.5).run


def test_the_qat_record_reads_back_and_older_manifests_have_none():
    from trtinfer.manifest import CalibrationRecord, QatEpochRecord

    record = CalibrationRecord(method="performance", qat=QatRecord(
        ran=True, kept=True, epochs=2, learning_rate=0.005, drop_before_points=0.6, drop_after_points=0.1,
        history=(QatEpochRecord(1, 1.2, 0.5, 1.3, 0.45, 9.0),)))
    assert read_record(CalibrationRecord, record.to_dict(), name="calibration") == record
    assert read_record(CalibrationRecord, {"method": "mixed"}, name="calibration").qat is None


@pytest.fixture(scope="module")
def folder_rows(tmp_path_factory, cifar_dir):
    """160 real CIFAR train rows (16 per class) as an image folder: a small labelled training source."""
    from PIL import Image

    from trtinfer.calibration.cifar import load_cifar

    train = load_cifar(cifar_dir, "train")
    root = tmp_path_factory.mktemp("rows")
    for label, name in enumerate(train.class_names):
        (root / name).mkdir()
        for i in np.flatnonzero(train.labels == label)[:16]:
            Image.fromarray(np.asarray(train.images[i])).save(root / name / f"{i}.png")
    return root


@pytest.mark.long  # about 50 s for both targets (NNCF's first use is most of it): CI runs it after the default suite
@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_fine_tune_of_each_target_is_exported_judged_and_recorded(tmp_path, folder_rows, monkeypatch, target):
    """CPU: NNCF, BatchNorm folded, uint8/int8 Q/DQ OpenVINO judges. GPU: ModelOpt, the Q/DQ TensorRT needs
    (signed INT8, zero points 0, per-channel weights on axis 0: checked structurally), ONNX Runtime judges."""
    pytest.importorskip("nncf")
    if target == "gpu":
        pytest.importorskip("modelopt.torch.quantization")
    import onnx
    import onnxruntime as ort
    import torch
    import torchvision
    # NNCF's own reference kernels instead of its C++ extension, which compiles for about 40 s on first
    # use (the same quantizer arithmetic; the build uses the compiled one)
    from nncf.torch.quantization import extensions
    from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

    from trtinfer.builders.export.onnx_export import export_onnx
    from trtinfer.builders.precision.nncf_int8 import quantize_int8_nncf
    from trtinfer.builders.progress import Reporter
    from trtinfer.builders.qat.run import CURVES_NAME, QatDecision, run_qat
    from trtinfer.calibration.calibset import make_calibration_set
    from trtinfer.execution import judge_execution
    from trtinfer.preprocess import make_spec

    monkeypatch.setattr(extensions.QuantizedFunctionsCPULoader, "load", classmethod(lambda cls: ReferenceQuantizedFunctions))
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25).eval()
    spec = make_spec(32, "cifar10")
    calib = make_calibration_set(folder_rows, spec, 32, 0, input_shape=[-1, 3, 32, 32])
    fp32, ptq = tmp_path / "fp32.onnx", tmp_path / "int8" / "model.onnx"
    export_onnx(model, fp32, 32)
    ptq.parent.mkdir()
    quantize_int8_nncf(fp32, ptq, calib.x[:32])
    before = onnx.load(str(ptq))

    record, facts = run_qat(model=model, spec=spec, calib=calib, calib_data=folder_rows, target=target, fp32_path=fp32,
                            ptq_path=ptq, judge=judge_execution(target), decision=QatDecision(True, "asked"),
                            mode="on", epochs=2, lr=0.01, batch_size=48, seed=0, report=Reporter(quiet=True))
    assert record.ran and record.kept and record.epochs == 2
    assert record.tool == {"cpu": "nncf-qat", "gpu": "modelopt"}[target]
    assert record.train_rows + record.val_rows == 160 and record.val_rows >= 10  # a held-out tenth
    assert len(record.history) == 2 and all(math.isfinite(h.train_loss) for h in record.history)
    assert math.isfinite(record.drop_before_points) and math.isfinite(record.drop_after_points)
    assert (ptq.parent / CURVES_NAME).stat().st_size > 1000 and record.curves == CURVES_NAME
    assert facts is not None and facts["quantize_linear"] > 0 and not facts["unquantized_compute_ops"]
    graph = onnx.load(str(ptq))
    assert graph.SerializeToString() != before.SerializeToString()  # the fine-tuned model replaced the PTQ one
    ops = {n.op_type for n in graph.graph.node}
    assert "QuantizeLinear" in ops
    if target == "cpu":
        assert "BatchNormalization" not in ops  # folded BN: the post-training graph's layout
    else:
        from trtinfer.builders.qat.modelopt_qat import check_tensorrt_qdq

        check_tensorrt_qdq(graph)  # raises unless every zero point is int8 0 and weights are per-channel on axis 0
    assert not any(n.domain.startswith("org.openvinotoolkit") for n in graph.graph.node)
    session = ort.InferenceSession(str(ptq), providers=["CPUExecutionProvider"])
    for rows in (1, 5):
        assert session.run(None, {"input": calib.x[:rows]})[0].shape == (rows, 10)
    assert not list(tmp_path.glob("int8/qat.onnx"))  # no leftovers


def test_a_fine_tune_that_will_not_fit_is_refused_before_it_starts(tmp_path, folder_rows, monkeypatch):
    """The memory estimate refuses up front, naming the need and the batch size that fits; nothing is written."""
    import torchvision

    from trtinfer.builders.progress import Reporter
    from trtinfer.builders.qat import run as qat_run
    from trtinfer.errors import TrtInferError
    from trtinfer.preprocess import make_spec
    from trtinfer.training import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 << 20)  # a 64 MiB machine
    prepared = []
    monkeypatch.setattr(qat_run, "quantizer_for", lambda target: _Never(prepared))
    model = torchvision.models.resnet18(num_classes=10).eval()
    ptq = tmp_path / "int8" / "model.onnx"
    with pytest.raises(TrtInferError, match=r"fine-tune \(batch 64, with fake quantizers\) .*needs about .* GiB to "
                                            r"train.*cpu memory available for it is") as caught:
        qat_run.run_qat(model=model, spec=make_spec(32, "cifar10"), calib=None, calib_data=folder_rows, target="cpu",
                        fp32_path=tmp_path / "fp32.onnx", ptq_path=ptq, judge=None,
                        decision=qat_run.QatDecision(True, "asked"), mode="on", epochs=1, lr=0.01, batch_size=64,
                        seed=0, report=Reporter(quiet=True))
    assert "leave --qat out" in caught.value.hint
    assert prepared == [] and not tmp_path.joinpath("int8").exists()


class _Never:
    """A stand-in quantizer module that records a call it must never get (the refusal comes first)."""

    __name__ = "never"

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def need_nncf(self) -> str:
        return "0"

    def prepare(self, *args, **kwargs):
        self.calls.append("prepare")
        raise AssertionError("prepare ran before the memory check")
