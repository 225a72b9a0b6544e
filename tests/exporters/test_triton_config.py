"""The export's decisions (exporters/triton_config.py) on real FP32, FP16 and INT8 manifests: which Triton
backend each model gets on CPU and GPU nodes, the plan's instance profiles, the ONNX models' engine caches,
the INT8 target check. Each config is parsed into Triton's ``ModelConfig`` protobuf as the export writes it.

The backends these configs name (OpenVINO, TensorRT, ONNX Runtime's TensorRT provider) do not run here, so
the configs' structure is asserted against those backends' sources (cited in triton_config.py), never
against a fake backend."""

from __future__ import annotations

import dataclasses

import pytest

from trtinfer.errors import TrtInferError
from trtinfer.exporters import triton_config as tc
from trtinfer.exporters.triton_config import TritonOptions, parse_pbtxt, to_pbtxt
from trtinfer.manifest import BatchProfile, EngineRecord, Manifest

pytest.importorskip("tritonclient.grpc")
pytest_plugins = ["conftest_trained"]


@pytest.fixture(scope="module")
def manifests(artifacts) -> dict[str, Manifest]:
    return {precision: Manifest.read(path) for precision, path in artifacts.items()}


def config_for(manifest: Manifest, options: TritonOptions):
    kind, platform = tc.choose_format(manifest, options)
    return parse_pbtxt(to_pbtxt(tc.classifier_config(manifest.name, [manifest], kind, platform, options)))


def with_target(manifest: Manifest, target: str) -> Manifest:
    return dataclasses.replace(manifest, target=target)


def with_plan(manifest: Manifest, *profiles: BatchProfile) -> Manifest:
    engine = EngineRecord(tensorrt_version="10.8.0.43", gpu_name="stand-in", compute_capability="9.0",
                          profiles=list(profiles))
    return dataclasses.replace(manifest, engine=engine, target="gpu")


# --- 1. CPU nodes: no OpenVINO-backend batch padding unless asked for ---


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_cpu_default_has_no_openvino_backend_and_no_batch_padding(manifests, precision):
    """The OpenVINO backend keeps an earlier request's pad size (openvino_backend src/openvino.cc), so a batch
    built from several requests fails: the default CPU config never takes that path."""
    config = config_for(with_target(manifests[precision], "cpu"), TritonOptions(kind="cpu"))
    assert config.platform == "onnxruntime_onnx" and config.backend != "openvino"
    assert "ENABLE_BATCH_PADDING" not in config.parameters
    accelerators = [a.name for a in config.optimization.execution_accelerators.cpu_execution_accelerator]
    # FP16/INT8: ONNX Runtime's OpenVINO execution accelerator (x86-64 release containers are built with it)
    assert accelerators == ([] if precision == "fp32" else ["openvino"])
    assert config.max_batch_size == 32 and list(config.dynamic_batching.preferred_batch_size) == [32]


def test_the_plain_cpu_provider_and_the_openvino_backend_are_chosen_by_name(manifests):
    int8 = with_target(manifests["int8"], "cpu")
    plain = config_for(int8, TritonOptions(kind="cpu", cpu_backend="onnxruntime"))
    assert plain.platform == "onnxruntime_onnx" and not plain.optimization.execution_accelerators.cpu_execution_accelerator
    openvino = config_for(int8, TritonOptions(kind="cpu", cpu_backend="openvino"))
    assert openvino.backend == "openvino" and openvino.parameters["ENABLE_BATCH_PADDING"].string_value == "YES"
    assert openvino.max_batch_size == tc.OPENVINO_MAX_BATCH


def test_the_python_backend_classifier_config(manifests):
    options = TritonOptions(kind="cpu", cpu_backend="python", python_runtime="openvino",
                            python_path="/opt/venv/lib/python3.12/site-packages")
    config = config_for(with_target(manifests["int8"], "cpu"), options)
    assert config.backend == "python" and not config.platform
    assert config.parameters["runtime"].string_value == "openvino"
    assert config.parameters["python_path"].string_value == "/opt/venv/lib/python3.12/site-packages"
    assert config.parameters["model_file"].string_value == "model.onnx"
    assert config.max_batch_size == 32 and config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [g.kind for g in config.instance_group] == [2]  # KIND_CPU
    assert config.output[0].label_filename == "labels.txt"
    pre = parse_pbtxt(to_pbtxt(tc.preprocess_config("resnet-int8", manifests["int8"], 32, options)))
    assert pre.parameters["python_path"].string_value == "/opt/venv/lib/python3.12/site-packages"


@pytest.mark.parametrize("kwargs, problem", [
    ({"cpu_backend": "tensorflow"}, "--cpu-backend"),
    ({"python_runtime": "torch"}, "--python-runtime"),
    ({"python_path": "relative/site-packages"}, "--python-path"),
    ({"engine_cache_dir": "cache"}, "--engine-cache-dir"),
    ({"python_runtime": "openvino"}, "--cpu-backend python"),
])
def test_bad_options_are_one_line(kwargs, problem):
    with pytest.raises(TrtInferError, match=problem) as info:
        TritonOptions(**kwargs)
    assert "\n" not in str(info.value) and info.value.hint


# --- 2. plans with several profiles ---


def test_the_instance_group_covers_every_profile(manifests):
    plan = with_plan(manifests["fp16"], BatchProfile(1, 8, 16), BatchProfile(17, 64, 128))
    config = config_for(plan, TritonOptions())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 128
    [group] = config.instance_group
    assert list(group.profile) == ["0", "1"]  # without it only profile 0 gets a context


@pytest.mark.parametrize("profiles, problem", [
    ((BatchProfile(1, 8, 16), BatchProfile(33, 64, 128)), "17..32"),
    ((BatchProfile(4, 8, 16),), "batch 1"),
    ((BatchProfile(17, 64, 128), BatchProfile(2, 8, 16)), "batch 1"),
])
def test_profiles_that_leave_batches_out_are_refused(manifests, profiles, problem):
    with pytest.raises(TrtInferError, match=problem) as info:
        config_for(with_plan(manifests["fp16"], *profiles), TritonOptions())
    assert "\n" not in str(info.value) and "--batch" in info.value.hint


def test_plans_of_one_model_need_the_same_profile_count(manifests):
    plans = [with_plan(manifests["fp16"], BatchProfile(1, 8, 16), BatchProfile(17, 64, 128)),
             with_plan(manifests["fp16"], BatchProfile(1, 32, 256))]
    with pytest.raises(TrtInferError, match="profile") as info:
        tc.classifier_config("resnet-fp16", plans, "gpu", tc.PLAN, TritonOptions())
    assert "--batch" in info.value.hint


# --- 3. one engine cache per ONNX file, in a folder that persists ---


def test_each_onnx_model_gets_its_own_engine_cache(manifests):
    paths = {}
    for precision, manifest in manifests.items():
        config = config_for(with_target(manifest, "gpu"), TritonOptions(kind="gpu"))
        [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
        path = accelerator.parameters["trt_engine_cache_path"]
        sha256 = manifest.files["model.onnx"].sha256
        assert path.startswith(tc.DEFAULT_ENGINE_CACHE_DIR + "/") and sha256 in path
        assert not path.startswith("/tmp")
        paths[precision] = path
    assert len(set(paths.values())) == 3
    config = config_for(with_target(manifests["fp32"], "gpu"), TritonOptions(kind="gpu", engine_cache_dir="/cache"))
    [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["trt_engine_cache_path"].startswith("/cache/")


# --- 4. INT8 graphs go where they were built for ---


def test_int8_artifacts_go_only_to_the_nodes_they_were_built_for(manifests):
    cpu_int8, gpu_int8 = with_target(manifests["int8"], "cpu"), with_target(manifests["int8"], "gpu")
    with pytest.raises(TrtInferError, match="target cpu") as info:
        tc.choose_format(cpu_int8, TritonOptions(kind="gpu"))
    assert "--target gpu" in info.value.hint
    with pytest.raises(TrtInferError, match="target gpu") as info:
        tc.choose_format(gpu_int8, TritonOptions(kind="cpu"))
    assert "--target cpu" in info.value.hint
    assert tc.choose_format(cpu_int8, TritonOptions(kind="cpu"))[0] == "cpu"
    assert tc.choose_format(gpu_int8, TritonOptions(kind="gpu"))[0] == "gpu"
    # FP32/FP16 graphs run anywhere; a schema-1 manifest ("" target) is not judged
    assert tc.choose_format(with_target(manifests["fp16"], "cpu"), TritonOptions(kind="gpu"))[0] == "gpu"
    assert tc.choose_format(with_target(manifests["int8"], ""), TritonOptions(kind="gpu"))[0] == "gpu"
