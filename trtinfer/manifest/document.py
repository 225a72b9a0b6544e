"""The manifest itself: one typed :class:`Manifest`, written to and read from ``manifest.json``, and
the check of the files it lists."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..hashing import sha256_file
from .engine import EngineRecord
from .reader import ManifestReader, check_file_name
from .records import (AccuracyRecord, CalibrationRecord, ConversionRecord, FileRecord, PreprocessSpec, SourceRecord,
                      TensorSpec, ValidationRecord, VariantRecord)
from .schema import (MANIFEST_NAME, MAX_MANIFEST_BYTES, ONNX_NAME, READABLE_SCHEMA_VERSIONS, REBUILD, SCHEMA_VERSION,
                     JsonValue)


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
    source: SourceRecord = field(default_factory=SourceRecord)
    files: dict[str, FileRecord] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    validation: ValidationRecord = field(default_factory=ValidationRecord)
    accuracy: AccuracyRecord = field(default_factory=AccuracyRecord)
    calibration: CalibrationRecord = field(default_factory=CalibrationRecord)
    conversion: ConversionRecord = field(default_factory=ConversionRecord)  # FP16/INT8 tool facts
    engine: EngineRecord | None = None  # set by the engine stage (TensorRT hosts)
    variant: VariantRecord = field(default_factory=VariantRecord)
    target: str = "cpu"  # "cpu" | "gpu" (the build sets it); "" when read from a schema-1 manifest
    created: str = ""
    trtinfer_version: str = ""
    schema_version: int = SCHEMA_VERSION

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, JsonValue]:
        return {
            "schema_version": self.schema_version, "name": self.name, "arch": self.arch,
            "num_classes": self.num_classes, "precision": self.precision, "target": self.target,
            "input": asdict(self.input), "output": asdict(self.output), "preprocess": asdict(self.preprocess),
            "labels": list(self.labels), "source": self.source.to_dict(),
            "files": {name: entry.to_dict() for name, entry in self.files.items()},
            "versions": dict(self.versions), "validation": self.validation.to_dict(),
            "accuracy": self.accuracy.to_dict(), "calibration": self.calibration.to_dict(),
            "conversion": self.conversion.to_dict(),
            "engine": self.engine.to_dict() if self.engine is not None else None,
            "variant": self.variant.to_dict(), "created": self.created, "trtinfer_version": self.trtinfer_version,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        """A typed, checked manifest: every field of the wrong type, shape or range is refused with
        its name, so nothing downstream meets a KeyError, a string shape or a ``std`` of 0."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{where} is not a JSON object", hint=REBUILD)
        version = data.get("schema_version")
        if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
            raise ArtifactError(
                f"{where} has schema_version {version!r}; this trtinfer reads "
                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}",
                hint="rebuild the artifact with this trtinfer version (trtinfer build)",
            )
        return ManifestReader(where).read(cls, data, version)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        # Strict JSON: a NaN or an infinity in a manifest is a bug, never something to write.
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
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
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise ArtifactError(f"{path} is {size:,} bytes; a manifest is a few kB (at most "
                                    f"{MAX_MANIFEST_BYTES:,} accepted)", hint=REBUILD)
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            raise ArtifactError(f"cannot read {path}: {exc}", hint=REBUILD) from exc
        except RecursionError:
            raise ArtifactError(f"cannot read {path}: its JSON is nested too deeply", hint=REBUILD) from None
        return cls.from_dict(data, where=str(path))

    # -- files -----------------------------------------------------------------------------
    def record_file(self, directory: str | Path, name: str) -> FileRecord:
        """List ``directory / name`` with its sha256 and size; the entry is returned too."""
        path = Path(directory) / name
        entry = self.files[name] = FileRecord(sha256=sha256_file(path), bytes=path.stat().st_size)
        return entry

    def verify_files(self, directory: str | Path, names: list[str] | None = None) -> None:
        """Refuse tampered or truncated files before any backend parses them.

        Without ``names``: every listed file, and the listing itself must name the ONNX model (an
        artifact always has one). Sizes are compared before anything is read, so a replaced
        multi-GB file is refused at once.
        """
        directory = Path(directory)
        if names is None:
            if ONNX_NAME not in self.files:
                listed = ", ".join(self.files) or "no files at all"
                raise ArtifactError(f"{directory / MANIFEST_NAME} lists {listed}; an artifact's manifest lists "
                                    f"{ONNX_NAME} with its sha256", hint=REBUILD)
            names = list(self.files)
        for name in names:
            entry = self.files.get(name)
            if entry is None:
                raise ArtifactError(f"{directory / name} is not listed in the manifest", hint=REBUILD)
            path = self.file_path(directory, name)
            if not path.is_file():
                raise ArtifactError(f"{path} is missing", hint=REBUILD)
            size = path.stat().st_size
            if size != entry.bytes:
                raise ArtifactError(
                    f"{path} has {size} bytes, the manifest says {entry.bytes} (truncated or replaced)",
                    hint="rebuild the artifact or copy it again")
            if sha256_file(path) != entry.sha256:
                raise ArtifactError(f"{path} does not match its sha256 in the manifest (modified after the build)",
                                    hint="rebuild the artifact or copy it again")

    @staticmethod
    def file_path(directory: str | Path, name: str) -> Path:
        """``directory / name`` for a listed file name, which never leaves the directory."""
        check_file_name(name, f"{Path(directory) / MANIFEST_NAME}")
        return Path(directory) / name

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Input shape without the batch dimension."""
        return tuple(self.input.shape[1:])


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name} (NaN and infinities have no place in a manifest)")
