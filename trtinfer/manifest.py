"""The artifact contract: ``manifest.json`` describes one model at one precision.

Every later stage (runtime, bench, serve, engine build) reads only this file and the model files
it lists, so nothing about preprocessing, labels or shapes is ever guessed downstream.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .hashing import sha256_file
from .pixels import INTERPOLATIONS

SCHEMA_VERSION = 3
#: Versions this trtinfer reads. 2 (issue 16) added ``target`` (cpu|gpu: which deployment the
#: artifact's INT8 graph and accuracy checks were made for) and ``accuracy.executions`` (each CPU
#: execution's measured accuracy, which ``load(backend="auto")`` may choose from); a version-1
#: manifest reads with ``target`` "" (made before the choice existed) and no recorded executions.
#: 3 (issue 17) made ``engine`` a typed record (:class:`EngineRecord`): ``null`` without a plan,
#: else every field present and checked; a version-1 or -2 ``engine`` object reads into the same
#: record (``{}`` as no engine), with the fields those versions could lack left at their defaults.
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
TARGETS = ("cpu", "gpu")
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few kB; refuse anything absurd before parsing it
REBUILD = "rebuild the artifact (trtinfer build)"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
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


@dataclass(frozen=True, order=True)
class BatchProfile:
    """One optimization profile's batch range; ``opt`` is the size TensorRT tunes its kernels for.

    The one profile type of the build (``--batch MIN:OPT:MAX``), the manifest's engine record and
    the runtime's chunk planning. An invalid range raises ValueError; each caller words it for
    its user (a CLI option, a manifest field, an engine).
    """

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"batch profile {values} must hold integers")
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile {self} needs 1 <= MIN <= OPT <= MAX")

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    def covers(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def shapes(self, sample_shape: Any) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) full input shapes for a per-sample shape such as (3, 224, 224)."""
        rest = tuple(int(d) for d in sample_shape)
        if any(d < 1 for d in rest):
            raise ValueError(f"input shape {list(rest)} after the batch dimension must be static and positive")
        return (self.min, *rest), (self.opt, *rest), (self.max, *rest)

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def from_dict(cls, data: Any) -> BatchProfile:
        """The inverse of :meth:`to_dict`; a record without integer min, opt and max raises ValueError."""
        if not isinstance(data, dict) or not {"min", "opt", "max"} <= data.keys():
            raise ValueError(f"batch profile {data!r} must be a {{min, opt, max}} record")
        return cls(data["min"], data["opt"], data["max"])


@dataclass
class EngineRecord:
    """What the engine stage recorded about ``model.plan``: where it was built and how.

    A TensorRT engine runs only on the TensorRT version and compute capability it was built
    with; the runtime checks both before deserialising (``check_plan_compatible``).
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profiles: list[BatchProfile]  # in engine order: index i is TensorRT's profile i
    plan_sha256: str = ""
    plan_bytes: int = 0
    plan: str = PLAN_NAME
    driver: str | None = None
    device: int = 0
    build_seconds: float = 0.0
    layer_precisions: dict[str, int] = field(default_factory=dict)
    compute_layer_precisions: dict[str, int] = field(default_factory=dict)
    timing_cache: dict[str, Any] = field(default_factory=dict)  # {"path", "reused"}
    opt_level: int | None = None
    workspace_mib: int | None = None
    strongly_typed: bool = True
    built: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)  # engine vs ONNX Runtime, when evaluated

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = [p.to_dict() for p in self.profiles]
        return data


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
    engine: EngineRecord | None = None  # set by the engine stage (TensorRT hosts)
    variant: dict[str, Any] = field(default_factory=dict)
    target: str = "cpu"  # "cpu" | "gpu" (the build sets it); "" when read from a schema-1 manifest
    created: str = ""
    trtinfer_version: str = ""
    schema_version: int = SCHEMA_VERSION

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["engine"] = self.engine.to_dict() if self.engine is not None else None
        order = ["schema_version", "name", "arch", "num_classes", "precision", "target", "input", "output",
                 "preprocess", "labels"]
        return {**{k: data[k] for k in order}, **{k: v for k, v in data.items() if k not in order}}

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
        return _ManifestReader(where).read(cls, data, version)

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
    def record_file(self, directory: str | Path, name: str, **extra: Any) -> None:
        path = Path(directory) / name
        self.files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}

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
            if size != entry["bytes"]:
                raise ArtifactError(
                    f"{path} has {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)",
                    hint="rebuild the artifact or copy it again")
            if sha256_file(path) != entry["sha256"]:
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


# -- the typed reader -------------------------------------------------------------------------

def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name} (NaN and infinities have no place in a manifest)")


def check_file_name(name: Any, where: str) -> str:
    """A file listed in a manifest is a plain name inside the artifact directory: no separators,
    no ``..``, not absolute, no NUL; anything else could make a reader hash or load files elsewhere."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or len(name) > 255):
        raise ArtifactError(f"{where}: file name {name!r} is not a plain file name inside the artifact directory",
                            hint=REBUILD)
    return name


class _ManifestReader:
    """Checks one manifest dict field by field; each error names the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field_name: str, problem: str) -> ArtifactError:
        return ArtifactError(f"{self.where}: field '{field_name}' {problem}", hint=REBUILD)

    def get(self, data: dict[str, Any], key: str, prefix: str = "") -> Any:
        if key not in data:
            raise self.fail(prefix + key, "is missing")
        return data[key]

    def string(self, data: dict[str, Any], key: str, prefix: str = "", choices: tuple[str, ...] | None = None,
               default: str | None = None) -> str:
        value = data.get(key, default) if default is not None else self.get(data, key, prefix)
        if not isinstance(value, str) or not value or len(value) > 4096:
            raise self.fail(prefix + key, f"must be a non-empty string, not {_show(value)}")
        if choices is not None and value not in choices:
            raise self.fail(prefix + key, f"is {value!r}, not one of {', '.join(choices)}")
        return value

    def integer(self, value: Any, field_name: str, minimum: int = 0, maximum: int = 1 << 62) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(field_name, f"must be an integer in {minimum}..{maximum}, not {_show(value)}")
        return value

    def number(self, value: Any, field_name: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(field_name, f"must be a finite number, not {_show(value)}")
        if positive and value <= 0:
            raise self.fail(field_name, f"must be positive, not {value!r}")
        return float(value)

    def section(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an object, not {_show(value)}")
        return value

    def tensor(self, data: dict[str, Any], key: str) -> TensorSpec:
        body = self.get(data, key)
        if not isinstance(body, dict):
            raise self.fail(key, f"must be an object with name, shape and dtype, not {_show(body)}")
        shape = self.get(body, "shape", f"{key}.")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
            raise self.fail(f"{key}.shape", f"must be a list of 1 to 8 dimensions, not {_show(shape)}")
        for i, d in enumerate(shape):
            if i == 0 and d == -1:
                continue
            self.integer(d, f"{key}.shape[{i}]", minimum=1, maximum=1 << 20)
        dtype = self.string(body, "dtype", f"{key}.", choices=("float32",), default="float32")
        return TensorSpec(name=self.string(body, "name", f"{key}."), shape=list(shape), dtype=dtype)

    def preprocess(self, data: dict[str, Any]) -> PreprocessSpec:
        body = self.get(data, "preprocess")
        if not isinstance(body, dict):
            raise self.fail("preprocess", f"must be an object, not {_show(body)}")
        p = "preprocess."
        size = self.integer(self.get(body, "input_size", p), p + "input_size", 1, 1 << 16)
        resize = self.integer(self.get(body, "resize", p), p + "resize", size, 1 << 16)
        values = {}
        for key in ("mean", "std"):
            v = self.get(body, key, p)
            if not isinstance(v, list) or len(v) != 3:
                raise self.fail(p + key, f"must be a list of 3 numbers (R, G, B), not {_show(v)}")
            values[key] = [self.number(x, f"{p}{key}[{i}]", positive=key == "std") for i, x in enumerate(v)]
        scale = self.number(body.get("scale", 1.0 / 255.0), p + "scale", positive=True)
        return PreprocessSpec(
            input_size=size, resize=resize, mean=values["mean"], std=values["std"],
            normalize=self.string(body, "normalize", p, default="custom"),
            interpolation=self.string(body, "interpolation", p, choices=INTERPOLATIONS, default="bilinear"),
            scale=scale, layout=self.string(body, "layout", p, choices=("NCHW",), default="NCHW"),
            color=self.string(body, "color", p, choices=("RGB",), default="RGB"))

    def files(self, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
        files = self.section(data, "files")
        for name, entry in files.items():
            check_file_name(name, self.where)
            if not isinstance(entry, dict):
                raise self.fail(f"files.{name}", f"must be an object with sha256 and bytes, not {_show(entry)}")
            digest = self.get(entry, "sha256", f"files.{name}.")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise self.fail(f"files.{name}.sha256", f"must be 64 lowercase hex digits, not {_show(digest)}")
            self.integer(self.get(entry, "bytes", f"files.{name}."), f"files.{name}.bytes")
        return files

    def profiles(self, value: Any, field_name: str) -> list[BatchProfile]:
        if not isinstance(value, list) or not 1 <= len(value) <= 64:
            raise self.fail(field_name, f"must be a list of {{min, opt, max}} records, not {_show(value)}")
        out = []
        for i, record in enumerate(value):
            name = f"{field_name}[{i}]"
            if not isinstance(record, dict):
                raise self.fail(name, f"must be a {{min, opt, max}} record, not {_show(record)}")
            for k in ("min", "opt", "max"):
                self.integer(self.get(record, k, name + "."), f"{name}.{k}", 1, 1 << 20)
            try:
                out.append(BatchProfile.from_dict(record))
            except ValueError as exc:
                raise self.fail(name, str(exc)) from None
        if any(b.min <= a.max for a, b in zip(out, out[1:])):
            raise self.fail(field_name, "must list non-overlapping ranges in ascending order")
        return out

    def engine(self, data: dict[str, Any], version: int) -> EngineRecord | None:
        """Schema 3: ``null`` or a complete record. Schemas 1-2: a free object, ``{}`` for none."""
        body = data.get("engine")
        if body is None or (version < 3 and body == {}):
            return None
        if not isinstance(body, dict):
            raise self.fail("engine", f"must be an object (or null), not {_show(body)}")
        p = "engine."
        required = version >= 3
        optional_string = (lambda key, default="": self.string(body, key, p) if required or key in body else default)
        record = EngineRecord(
            tensorrt_version=self.string(body, "tensorrt_version", p),
            gpu_name=self.string(body, "gpu_name", p),
            compute_capability=self.string(body, "compute_capability", p),
            profiles=self.profiles(self.get(body, "profiles", p), p + "profiles"),
            plan_sha256=optional_string("plan_sha256"),
            plan=optional_string("plan", PLAN_NAME),
            built=optional_string("built"),
        )
        if record.plan != PLAN_NAME:
            raise self.fail(p + "plan", f"is {record.plan!r}, not {PLAN_NAME!r}")
        if required or "plan_bytes" in body:
            record.plan_bytes = self.integer(self.get(body, "plan_bytes", p), p + "plan_bytes")
        for key in ("device", "opt_level", "workspace_mib"):
            if body.get(key) is not None:
                setattr(record, key, self.integer(body[key], p + key))
        if body.get("build_seconds") is not None:
            record.build_seconds = self.number(body["build_seconds"], p + "build_seconds")
        if body.get("driver") is not None:
            record.driver = self.string(body, "driver", p)
        for key in ("layer_precisions", "compute_layer_precisions"):
            counts = self.section(body, key)
            for name, count in counts.items():
                self.integer(count, f"{p}{key}.{name}")
            setattr(record, key, dict(counts))
        record.timing_cache = self.section(body, "timing_cache")
        record.evaluation = self.section(body, "evaluation")
        if not isinstance(body.get("strongly_typed", True), bool):
            raise self.fail(p + "strongly_typed", f"must be true or false, not {_show(body['strongly_typed'])}")
        record.strongly_typed = bool(body.get("strongly_typed", True))
        return record

    def read(self, cls: type[Manifest], data: dict[str, Any], version: int = SCHEMA_VERSION) -> Manifest:
        num_classes = self.integer(self.get(data, "num_classes"), "num_classes", 1, 1 << 20)
        labels = self.get(data, "labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise self.fail("labels", f"must be a list of class names (strings), not {_show(labels)}")
        if len(labels) != num_classes:
            raise self.fail("labels", f"has {len(labels)} names but num_classes is {num_classes}")
        dupes = sorted({x for x in labels if labels.count(x) > 1}) if len(labels) < 5000 else []
        if dupes:
            raise self.fail("labels", f"names a class twice: {', '.join(dupes[:5])}")
        output = self.tensor(data, "output")
        if output.shape[-1] != num_classes:
            raise self.fail("output.shape", f"is {output.shape}, which does not end in num_classes {num_classes}")
        inp = self.tensor(data, "input")
        pre = self.preprocess(data)
        if len(inp.shape) == 4 and inp.shape[2:] != [pre.input_size, pre.input_size]:
            raise self.fail("input.shape", f"is {inp.shape} but preprocess.input_size is {pre.input_size}")
        fields: dict[str, Any] = {
            "name": self.string(data, "name"), "arch": self.string(data, "arch"), "num_classes": num_classes,
            "labels": list(labels), "precision": self.string(data, "precision", choices=PRECISIONS),
            "input": inp, "output": output, "preprocess": pre, "files": self.files(data),
        }
        for key in ("source", "versions", "validation", "accuracy", "calibration", "conversion", "variant"):
            fields[key] = self.section(data, key)
        fields["engine"] = self.engine(data, version)
        fields["target"] = "" if version == 1 else self.string(data, "target", choices=TARGETS)
        executions = fields["accuracy"].get("executions", {})
        if not isinstance(executions, dict) or not all(isinstance(v, dict) for v in executions.values()):
            raise self.fail("accuracy.executions", f"must be an object of objects, not {_show(executions)}")
        for key in ("created", "trtinfer_version"):
            value = data.get(key, "")
            if not isinstance(value, str):
                raise self.fail(key, f"must be a string, not {_show(value)}")
            fields[key] = value
        return cls(**fields, schema_version=version)


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
