"""What one ``trtinfer build`` is asked to do: :class:`BuildOptions`, with the defaults of
:mod:`trtinfer.defaults`, and the artifact names it writes.

Its own module so the build stages (``pipeline``, ``precision.conversion``) take the options they read without
naming each other's classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtinfer import defaults


@dataclass
class BuildOptions:
    checkpoint: Path
    precisions: tuple[str, ...] = ("fp32",)
    out_dir: Path = Path(defaults.OUT_DIR)
    name: str | None = None
    arch: str | None = None
    trust_checkpoint: bool = False
    input_size: int | None = None
    resize: int | None = None
    normalize: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: str | None = None
    eval_data: Path | None = None
    eval_samples: int | None = None
    atol: float = defaults.ATOL
    rtol: float = defaults.RTOL
    opset: int = defaults.OPSET
    force: bool = False
    # reduced precision (issue 3)
    calib_data: Path | None = None
    calib_set: Path | None = None
    calib_samples: int = defaults.CALIB_SAMPLES
    calib_method: str | None = None  # None: every method of the quantizer, the best kept (int8_choice)
    quantizer: str = defaults.QUANTIZER  # auto | modelopt | nncf (precision.quantizer_for_target.int8_tool)
    target: str | None = None  # cpu | gpu; None: gpu where TensorRT and a GPU are present
    fallback: bool = True  # keep sensitive layers in float when INT8 misses the allowance
    qat: str = defaults.QAT  # off | on | auto: quantization-aware fine-tuning (builders.qat.run)
    qat_epochs: int = defaults.QAT_EPOCHS
    qat_lr: float = defaults.QAT_LR
    fp16_exclude: tuple[str, ...] = ()  # ONNX node names AutoCast keeps in FP32
    seed: int = defaults.SEED
    max_accuracy_drop: float | None = None
    allow_accuracy_drop: bool = False
    # engine stage (issue 4)
    engine: Any = None  # EngineBuildSettings or None
    require_engine: bool = False
    extra: dict = field(default_factory=dict)


def artifact_name(opts: BuildOptions, precision: str) -> str:
    base = opts.name or opts.checkpoint.stem
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "model"
    return f"{base}-{precision}"
