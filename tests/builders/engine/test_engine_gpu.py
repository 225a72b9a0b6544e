"""builders/engine/ on a GPU with TensorRT (``pytest -m gpu``): real FP32, FP16 and INT8 engines run and
compared with ONNX Runtime on the same artifact, timing-cache reuse, several profiles, the mismatch
errors and ``trtinfer build`` end to end. Skipped with the reason where there is no GPU or TensorRT."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from gpu_env import tensorrt_skip_reason
from tiny_artifacts import NUM_CLASSES, write_tiny_artifact
from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader
from trtinfer.builders.engine.artifact import build_engine_into_artifact
from trtinfer.builders.engine.profiles import parse_batch_profiles, select_profile
from trtinfer.builders.engine.settings import EngineBuildError, EngineBuildSettings
from trtinfer.errors import ArtifactError
from trtinfer.manifest import BatchProfile, Manifest, PreprocessSpec, TensorSpec
from trtinfer.runtime.backends.tensorrt import cuda, devices

AGREEMENT = 0.995
GPU_ARTIFACTS_ENV = "TRTINFER_TEST_ARTIFACTS"


@pytest.fixture(scope="session")
def trt_ready() -> None:
    reason = tensorrt_skip_reason()
    if reason:
        pytest.skip(reason)


def _train_small_cnn(cifar_dir: Path, seed: int = 0):
    """A small CIFAR-10 CNN trained for a minute: real, well-separated logits for agreement checks."""
    import torch
    from torch import nn

    from trtinfer.calibration.cifar import load_cifar

    torch.manual_seed(seed)
    train = load_cifar(cifar_dir, "train")
    x = torch.from_numpy(train.images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
    y = torch.from_numpy(train.labels)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, NUM_CLASSES))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(8):
        for idx in torch.randperm(len(x)).split(128):
            xb, yb = x[idx].to(device), y[idx].to(device)
            xb = torch.where(torch.rand(len(xb), 1, 1, 1, device=device) < 0.5, xb, xb.flip(3))
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval().cpu()


def make_gpu_artifacts(root: Path, cifar_dir: Path) -> dict[str, Path]:
    """FP32, FP16 (ModelOpt AutoCast) and INT8 (ModelOpt Q/DQ) artifacts of one trained model."""
    import onnx
    import torch
    from modelopt.onnx.autocast import convert_to_mixed_precision
    from modelopt.onnx.quantization import quantize

    from trtinfer.calibration.cifar import load_cifar

    model = _train_small_cnn(cifar_dir)
    out: dict[str, Path] = {}
    fp32 = root / "fp32"
    fp32.mkdir(parents=True)
    torch.onnx.export(model, (torch.zeros(2, 3, 32, 32),), str(fp32 / "model.onnx"), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    fp16 = root / "fp16"
    fp16.mkdir()
    onnx.save(convert_to_mixed_precision(str(fp32 / "model.onnx"), "fp16", keep_io_types=True),
              str(fp16 / "model.onnx"))
    int8 = root / "int8"
    int8.mkdir()
    calib = load_cifar(cifar_dir, "train").images[:512]
    calib = ((calib.transpose(0, 3, 1, 2).astype(np.float32) / 255) - 0.5) / 0.5
    quantize(str(fp32 / "model.onnx"), quantize_mode="int8", calibration_data=calib, calibration_eps=["cpu"],
             output_path=str(int8 / "model.onnx"), high_precision_dtype="fp32", log_level="WARNING")
    for precision, directory in (("fp32", fp32), ("fp16", fp16), ("int8", int8)):
        manifest = Manifest(name=f"cifar-cnn-{precision}", arch="test-cnn", num_classes=NUM_CLASSES,
                            labels=[str(i) for i in range(NUM_CLASSES)], precision=precision,
                            input=TensorSpec("input", [-1, 3, 32, 32]), output=TensorSpec("logits", [-1, NUM_CLASSES]),
                            preprocess=PreprocessSpec(input_size=32, resize=32, mean=[0.5] * 3, std=[0.5] * 3))
        manifest.record_file(directory, "model.onnx")
        manifest.write(directory)
        out[precision] = directory
    return out


@pytest.fixture(scope="session")
def gpu_artifacts(trt_ready, tmp_path_factory, cifar_dir) -> dict[str, Path]:
    """Artifacts from `trtinfer build` when TRTINFER_TEST_ARTIFACTS names a folder with fp32/ fp16/ int8/,
    else made here from a small CNN trained on the shared CIFAR-10 rows."""
    import shutil

    given = os.environ.get(GPU_ARTIFACTS_ENV)
    root = tmp_path_factory.mktemp("gpu-artifacts")
    if given:
        out = {}
        for precision in ("fp32", "fp16", "int8"):
            source = Path(given) / precision
            if not (source / "manifest.json").is_file():
                pytest.skip(f"{GPU_ARTIFACTS_ENV}={given} has no {precision}/manifest.json")
            out[precision] = Path(shutil.copytree(source, root / precision))
        return out
    return make_gpu_artifacts(root, cifar_dir)


def cifar_test_inputs(cifar_dir: Path) -> np.ndarray:
    from trtinfer.calibration.cifar import load_cifar

    images = load_cifar(cifar_dir, "test").images
    return (((images.transpose(0, 3, 1, 2).astype(np.float32) / 255) - 0.5) / 0.5).copy()


def run_onnxruntime(artifact: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def run_plan(artifact: Path, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Execute model.plan directly (TensorRT + cuda-python): the engine stage's own check, independent of
    the runtime package."""
    from cuda.bindings import runtime as cudart

    def ok(result):
        return cuda.cuda_call(result, "CUDA")

    manifest = Manifest.read(artifact)
    profiles = manifest.engine.profiles
    trt = tensorrt_loader.import_tensorrt()
    runtime = trt.Runtime(tensorrt_loader.trt_logger())
    engine = runtime.deserialize_cuda_engine((artifact / "model.plan").read_bytes())
    assert engine is not None
    context = engine.create_execution_context()
    out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype("logits")))
    stream = ok(cudart.cudaStreamCreate())
    handle = int(stream)  # TensorRT takes the stream as an integer handle
    outputs = []
    try:
        for start in range(0, len(x), chunk):
            batch = np.ascontiguousarray(x[start:start + chunk], dtype=np.float32)
            index = select_profile(profiles, len(batch))
            assert index is not None, f"no profile holds batch {len(batch)}"
            context.set_optimization_profile_async(index, handle)
            context.set_input_shape("input", batch.shape)
            out = np.empty(tuple(context.get_tensor_shape("logits")), dtype=out_dtype)
            d_in = ok(cudart.cudaMalloc(batch.nbytes))
            d_out = ok(cudart.cudaMalloc(out.nbytes))
            try:
                ok(cudart.cudaMemcpyAsync(d_in, batch.ctypes.data, batch.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
                context.set_tensor_address("input", d_in)
                context.set_tensor_address("logits", d_out)
                assert context.execute_async_v3(handle)
                ok(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
                ok(cudart.cudaStreamSynchronize(stream))
            finally:
                ok(cudart.cudaFree(d_in))
                ok(cudart.cudaFree(d_out))
            outputs.append(out.astype(np.float32))
    finally:
        ok(cudart.cudaStreamDestroy(stream))
    return np.concatenate(outputs)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gpu_engine_matches_onnxruntime(precision, gpu_artifacts, cifar_dir, tmp_path):
    artifact = gpu_artifacts[precision]
    settings = EngineBuildSettings(timing_cache=tmp_path / "timing.cache")
    section = build_engine_into_artifact(artifact, settings)
    manifest = Manifest.read(artifact)
    manifest.verify_files(artifact)
    assert manifest.precision == precision
    layers = section.layer_precisions
    if precision != "fp32":
        assert layers.get(precision, 0) > 0, layers
    gpu = devices.gpu_info(settings.device)
    tensorrt_loader.check_plan_compatible(manifest, tensorrt_loader.trt_version(), gpu["name"], gpu["compute_capability"])

    x = cifar_test_inputs(cifar_dir)
    reference = run_onnxruntime(artifact, x)
    got = run_plan(artifact, x)
    assert got.shape == reference.shape
    agreement = float(np.mean(got.argmax(1) == reference.argmax(1)))
    print(f"{precision}: top-1 agreement with ONNX Runtime {agreement:.4f} on {len(x)} images; layers {layers}")
    assert agreement >= AGREEMENT


@pytest.mark.gpu
def test_gpu_timing_cache_is_reused(gpu_artifacts, tmp_path):
    artifact = gpu_artifacts["fp32"]
    settings = EngineBuildSettings(profiles=parse_batch_profiles(["1:8:64"]), timing_cache=tmp_path / "t.cache")
    started = time.perf_counter()
    first = build_engine_into_artifact(artifact, settings)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = build_engine_into_artifact(artifact, settings)
    second_s = time.perf_counter() - started
    print(f"build without cache {first_s:.2f} s, with cache {second_s:.2f} s")
    assert first.timing_cache.reused is False
    assert second.timing_cache.reused is True
    assert (tmp_path / "t.cache").stat().st_size > 0


@pytest.mark.gpu
def test_gpu_several_profiles(gpu_artifacts, cifar_dir, tmp_path):
    artifact = gpu_artifacts["fp32"]
    settings = EngineBuildSettings(profiles=parse_batch_profiles(["1:1:8", "16:64:256"]),
                                       timing_cache=tmp_path / "t.cache")
    build_engine_into_artifact(artifact, settings)
    x = cifar_test_inputs(cifar_dir)[:40]
    reference = run_onnxruntime(artifact, x)
    small = run_plan(artifact, x, chunk=4)  # profile 0
    large = run_plan(artifact, x, chunk=20)  # profile 1
    np.testing.assert_allclose(small, reference, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(large, reference, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
def test_gpu_mismatch_errors(gpu_artifacts, tmp_path):
    artifact = gpu_artifacts["fp32"]
    build_engine_into_artifact(artifact, EngineBuildSettings(timing_cache=tmp_path / "t.cache"))
    manifest = Manifest.read(artifact)
    gpu = devices.gpu_info()
    version = tensorrt_loader.trt_version()
    tensorrt_loader.check_plan_compatible(manifest, version, gpu["name"], gpu["compute_capability"])
    with pytest.raises(ArtifactError, match="--from-onnx"):
        tensorrt_loader.check_plan_compatible(manifest, version + ".other", gpu["name"], gpu["compute_capability"])
    with pytest.raises(ArtifactError, match="compute capability"):
        tensorrt_loader.check_plan_compatible(manifest, version, "Some Other GPU", "1.0")


@pytest.mark.gpu
def test_gpu_parser_error_names_the_node(trt_ready, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    art = write_tiny_artifact(tmp_path / "bad")
    model = onnx.load(str(art / "model.onnx"))
    bogus = helper.make_node("NoSuchOperator", ["logits"], ["out2"], name="the_bad_node", domain="bogus.domain")
    model.graph.node.append(bogus)
    model.graph.output.append(helper.make_tensor_value_info("out2", TensorProto.FLOAT, None))
    model.opset_import.append(helper.make_opsetid("bogus.domain", 1))
    onnx.save(model, str(art / "model.onnx"))
    manifest = Manifest.read(art)
    manifest.record_file(art, "model.onnx")
    manifest.write(art)
    with pytest.raises(EngineBuildError) as info:
        build_engine_into_artifact(art, EngineBuildSettings(timing_cache=tmp_path / "t.cache"))
    assert "the_bad_node" in info.value.one_line()


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_trtinfer_build_end_to_end(trt_ready, cifar_root, tmp_path):
    """`trtinfer build CHECKPOINT` on a GPU host runs the engine stage itself (--require-engine), and the
    runtime serves the result."""
    import torch
    import torchvision

    import trtinfer
    from trtinfer.builders.source.archs import apply_cifar_stem
    from trtinfer.cli import main

    torch.manual_seed(0)
    model = apply_cifar_stem(torchvision.models.resnet18(num_classes=NUM_CLASSES)).eval()
    checkpoint = tmp_path / "e2e.pth"
    torch.save(model.state_dict(), checkpoint)
    out = tmp_path / "artifacts"
    code = main(["build", str(checkpoint), "--precision", "fp32,fp16,int8", "--calib-data", str(cifar_root),
                 "--calib-samples", "64", "-o", str(out), "--require-engine", "--batch", "1:8:64",
                 "--timing-cache", str(tmp_path / "t.cache")])
    assert code == 0
    x = cifar_test_inputs(cifar_root / "cifar-10-batches-py")[:32]
    for precision in ("fp32", "fp16", "int8"):
        artifact = out / f"e2e-{precision}"
        manifest = Manifest.read(artifact)
        manifest.verify_files(artifact)
        assert manifest.engine.profiles == [BatchProfile(1, 8, 64)]
        if precision != "fp32":
            assert manifest.engine.layer_precisions.get(precision, 0) > 0
        with trtinfer.load(artifact, backend="tensorrt") as served:
            logits = np.asarray(served.infer(x))
        assert logits.shape == (32, NUM_CLASSES) and np.isfinite(logits).all()
