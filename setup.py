"""trtinfer: torchvision classifiers -> validated ONNX / TensorRT artifacts -> fast inference.

The build-time packages live in folders of their own at the repository top level and are
installed inside the ``trtinfer`` namespace, so nothing lands under a generic import name.
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "trtinfer" / "_version.py").read_text()).group(1)

# One ONNX Runtime only: ModelOpt pulls onnxruntime-gpu (same module, runs on the CPU too), so the
# CPU extra names the plain package only for hosts that never build.
BUILD = [
    "torch>=2.4",
    "torchvision>=0.19",
    "onnx>=1.16",
    "onnxscript>=0.2",
    "nvidia-modelopt[onnx]>=0.27",
    "requests",  # modelopt.torch.quantization (QAT for TensorRT targets) imports it; nvidia-modelopt does not declare it
    "nncf>=2.14",  # INT8 for CPU targets (builders/precision/nncf_int8.py); its ONNX backend needs no OpenVINO
    "pillow>=10",
    "rich>=13",
    "matplotlib>=3.8",
]

# TensorRT and cuda-python of one CUDA major version each (TensorRT's prerequisites: CUDA 13 wheels need
# driver R580+, CUDA 12 wheels R535+). PyPI's `tensorrt` is TensorRT 11 for CUDA 13, so `[tensorrt]` is the
# newest pair. `[tensorrt-cu12]` is for older drivers; NVIDIA ships TensorRT 11 for CUDA 12 too, and the cap
# at 10.x is our choice (the long-tested pair), not a limit of the packages: trtinfer runs TensorRT 10 and
# 11 through one code path, so installing "tensorrt-cu12>=11" "cuda-python>=12,<13" instead works as well.
TENSORRT = {
    "tensorrt-cu12": ["tensorrt-cu12>=10,<11", "cuda-python>=12,<13"],
    "tensorrt-cu13": ["tensorrt-cu13>=11,<12", "cuda-python>=13,<14"],
}
TENSORRT["tensorrt"] = TENSORRT["tensorrt-cu13"]

# Checkpoints from the wider ecosystem (builders/source/huggingface.py, builders/source/timm_models.py): Hugging
# Face ResNetForImageClassification directories and .safetensors files; timm models (--arch timm:NAME).
HF = ["transformers>=4.40", "safetensors>=0.4"]
TIMM = ["timm>=0.9"]

setup(
    name="trtinfer",
    version=VERSION,
    description="Turn fine-tuned torchvision classifiers into fast TensorRT engines and serve them.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "trtinfer",
        "trtinfer.manifest",
        "trtinfer.runtime",
        "trtinfer.runtime.backends",
        "trtinfer.runtime.backends.onnxruntime",
        "trtinfer.runtime.backends.openvino",
        "trtinfer.runtime.backends.tensorrt",
        "trtinfer.commands",
        "trtinfer.serve",
        "trtinfer.builders",
        "trtinfer.builders.source",
        "trtinfer.builders.export",
        "trtinfer.builders.precision",
        "trtinfer.builders.checks",
        "trtinfer.builders.engine",
        "trtinfer.builders.qat",
        "trtinfer.calibration",
        "trtinfer.benchmarks",
        "trtinfer.exporters",
        "trtinfer.training",
    ],
    package_dir={
        "trtinfer": "trtinfer",
        "trtinfer.builders": "builders",
        "trtinfer.calibration": "calibration",
        "trtinfer.benchmarks": "benchmarks",
        "trtinfer.exporters": "exporters",
        "trtinfer.training": "training",
    },
    package_data={"trtinfer.serve": ["page.html"], "trtinfer.exporters": ["triton_preprocess/model.py", "triton_classifier/model.py"]},
    install_requires=["numpy>=1.24", "click>=8.1"],
    extras_require={
        "build": BUILD,
        "onnxruntime": ["onnxruntime>=1.17"],
        **TENSORRT,
        "openvino": ["openvino>=2024.0"],
        # `trtinfer bench`'s CPU peers: OpenVINO on an NNCF INT8 model, and PyTorch's own PT2E INT8
        "bench": ["openvino>=2024.0", "nncf>=2.14", "torchao>=0.10"],
        # `trtinfer serve`: the ASGI app and server, metrics, multipart uploads, the gRPC protocol definitions
        "serve": ["starlette>=0.37", "uvicorn>=0.29", "prometheus-client>=0.20", "python-multipart>=0.0.9",
                  "tritonclient[grpc]>=2.40", "grpcio-health-checking>=1.60", "pillow>=10"],
        # `trtinfer export triton`: Triton's ModelConfig protobuf (configs are checked as they are written),
        # OpenVINO's converter for CPU nodes' IR
        "triton": ["tritonclient[grpc]>=2.40", "openvino>=2024.0"],
        "hf": HF,
        "timm": TIMM,
        "dev": ["pytest>=8", "pytest-timeout>=2.2", "pillow>=10", "mypy>=1.10", "tritonclient[http,grpc]>=2.40",
                "kserve>=0.15",  # the KServe SDK's v2 REST and gRPC clients, spoken to trtinfer serve in the tests
                "playwright>=1.40",  # drives Debian's chromium in the page test (never downloads a browser)
                *HF, *TIMM],
    },
    entry_points={"console_scripts": ["trtinfer=trtinfer.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Operating System :: POSIX :: Linux"],
)
