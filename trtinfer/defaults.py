"""Build defaults, said once.

``trtinfer build``, ``trtinfer calib make`` and ``trtinfer bench`` show these in ``--help``, and
the Python API (``BuildOptions``, ``make_calibration_set``, ``make_spec``) falls back to them.
Constants only: the CLI imports this module without torch, NumPy or ONNX.
"""

from __future__ import annotations

#: Calibration images drawn from the train split for INT8 (class-balanced).
CALIB_SAMPLES = 512
#: Seed of the calibration draw, the evaluation subset and the selection slice.
SEED = 0
#: Bounds of every --seed: what numpy's generators (no negatives) and torch.manual_seed (64 bits) both take.
SEED_RANGE = (0, 2**32 - 1)
#: INT8 quantizers: auto follows the target (NNCF for CPU targets, ModelOpt for TensorRT).
QUANTIZERS = ("auto", "modelopt", "nncf")
QUANTIZER = "auto"
#: Quantization-aware fine-tuning (trtinfer build --int8 --qat): off, on, or auto (only when post-training INT8
#: and the fallback miss the allowance on the selection slice); its epochs, learning rate and batch size.
QAT_MODES = ("off", "on", "auto")
QAT = "off"
QAT_EPOCHS = 2
QAT_LR = 0.005
QAT_BATCH_SIZE = 64
#: Square input size of ImageNet-style torchvision models, and of a CIFAR-stem ResNet.
INPUT_SIZE = 224
CIFAR_INPUT_SIZE = 32
#: Bounds of --input-size and --resize (a typo such as 22400 is refused before any work).
INPUT_SIZE_RANGE = (8, 4096)
RESIZE_RANGE = (8, 8192)
#: Normalization presets (trtinfer.preprocess.NORMALIZATIONS holds their values; a test holds the names equal).
NORMALIZE_PRESETS = ("imagenet", "cifar10", "cifar100", "none")
NORMALIZE = "imagenet"
#: How far ONNX Runtime's logits may be from PyTorch's before an export fails validation.
ATOL = 1e-3
RTOL = 1e-4
#: ONNX opset of the export, and the lowest one accepted (TensorRT 10/11 and ModelOpt all read it).
OPSET = 17
#: Largest top-1 drop vs FP32, in percentage points, the accuracy guard allows a reduced precision.
FP16_MAX_DROP = 0.5
INT8_MAX_DROP = 0.5  # was 1.0; method choice and the sensitivity fallback make 0.5 affordable
#: Where `trtinfer build` writes its artifact directories.
OUT_DIR = "artifacts"
