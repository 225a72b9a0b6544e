"""The artifact contract: ``manifest.json`` describes one model at one precision.

Every later stage (runtime, bench, serve, engine build) reads only this file and the model files
it lists, so nothing about preprocessing, labels or shapes is ever guessed downstream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .hashing import sha256_file

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
PLAN_NAME = "model.plan"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class TensorSpec:
    name: str
    shape: list[int]  # -1 marks the dynamic batch dimension
    dtype: str = "float32"


@dataclass
class PreprocessSpec:
    """How raw RGB uint8 images become the model's input; shared by calibration, eval and serving."""

    input_size: int
    resize: int  # shorter side is resized to this, then a centre crop of input_size
    mean: list[float]
    std: list[float]
    normalize: str = "custom"  # preset name, for display
    interpolation: str = "bilinear"
    scale: float = 1.0 / 255.0
    layout: str = "NCHW"
    color: str = "RGB"


@dataclass
class Manifest:
    name: str
    arch: str
    num_classes: int
    labels: list[str]
    precision: str
    input: TensorSpec
    output: TensorSpec
    preprocess: PreprocessSpec
    source: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    conversion: dict[str, Any] = field(default_factory=dict)  # FP16/INT8 tool facts
    engine: dict[str, Any] = field(default_factory=dict)
    variant: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    trtinfer_version: str = ""
    schema_version: int = SCHEMA_VERSION

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        order = ["schema_version", "name", "arch", "num_classes", "precision", "input", "output",
                 "preprocess", "labels"]
        return {**{k: data[k] for k in order}, **{k: v for k, v in data.items() if k not in order}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest") -> Manifest:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"{where} has schema_version {version!r}; this trtinfer reads {SCHEMA_VERSION}",
                hint="rebuild the artifact with this trtinfer version (trtinfer build)",
            )
        try:
            body = dict(data)
            body["input"] = TensorSpec(**body["input"])
            body["output"] = TensorSpec(**body["output"])
            body["preprocess"] = PreprocessSpec(**body["preprocess"])
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in body.items() if k in known})
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{where} is malformed: {exc}", hint="rebuild the artifact") from exc

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not directory.is_dir():
            raise ArtifactError(f"artifact directory not found: {directory}",
                                hint="pass a directory written by `trtinfer build`")
        if not path.is_file():
            raise ArtifactError(f"{directory} has no {MANIFEST_NAME}",
                                hint="pass a directory written by `trtinfer build`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"cannot read {path}: {exc}", hint="rebuild the artifact") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} is not a JSON object", hint="rebuild the artifact")
        return cls.from_dict(data, where=str(path))

    # -- files -----------------------------------------------------------------------------
    def record_file(self, directory: str | Path, name: str, **extra: Any) -> None:
        path = Path(directory) / name
        self.files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}

    def verify_files(self, directory: str | Path, names: list[str] | None = None) -> None:
        """Refuse tampered or truncated files before any backend parses them."""
        directory = Path(directory)
        for name in names if names is not None else list(self.files):
            entry = self.files.get(name)
            if entry is None:
                raise ArtifactError(f"{directory / name} is not listed in the manifest",
                                    hint="rebuild the artifact")
            path = directory / name
            if not path.is_file():
                raise ArtifactError(f"{path} is missing", hint="rebuild the artifact")
            size = path.stat().st_size
            if size != entry.get("bytes", size):
                raise ArtifactError(
                    f"{path} has {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)",
                    hint="rebuild the artifact or copy it again")
            if sha256_file(path) != entry["sha256"]:
                raise ArtifactError(f"{path} does not match its sha256 in the manifest (modified after the build)",
                                    hint="rebuild the artifact or copy it again")

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Input shape without the batch dimension."""
        return tuple(self.input.shape[1:])
