"""Reading a manifest: every field of the wrong type, shape or range is refused with its name.

:class:`ManifestReader` checks one parsed manifest field by field and builds the typed
:class:`~.document.Manifest`; each error is one line naming the field, so nothing downstream meets a
KeyError, a string shape or a ``std`` of 0. The section records (:mod:`.records`, :mod:`.engine`)
are read by their field types: :meth:`ManifestReader.record`.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import TYPE_CHECKING, Any, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from ..errors import ArtifactError
from ..pixels import INTERPOLATIONS
from .engine import BatchProfile, EngineEvaluationRecord, EngineRecord, TimingCacheRecord
from .records import (AccuracyRecord, CalibrationRecord, ConversionRecord, FileRecord, PreprocessSpec, SourceRecord,
                      TensorSpec, ValidationRecord, VariantRecord)
from .schema import PLAN_NAME, PRECISIONS, REBUILD, SCHEMA_VERSION, TARGETS, JsonValue, Record

if TYPE_CHECKING:
    from .document import Manifest

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
R = TypeVar("R", bound=Record)


def check_file_name(name: Any, where: str) -> str:
    """A file listed in a manifest is a plain name inside the artifact directory: no separators,
    no ``..``, not absolute, no NUL; anything else could make a reader hash or load files elsewhere."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or len(name) > 255):
        raise ArtifactError(f"{where}: file name {name!r} is not a plain file name inside the artifact directory",
                            hint=REBUILD)
    return name


_FIELD_TYPES: dict[type, dict[str, object]] = {}


def _field_types(cls: type) -> dict[str, object]:
    if cls not in _FIELD_TYPES:  # JsonValue: JsonObject's recursive reference
        _FIELD_TYPES[cls] = get_type_hints(cls, localns={"JsonValue": JsonValue})
    return _FIELD_TYPES[cls]


class ManifestReader:
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
            raise self.fail(prefix + key, f"must be a non-empty string, not {show(value)}")
        if choices is not None and value not in choices:
            raise self.fail(prefix + key, f"is {value!r}, not one of {', '.join(choices)}")
        return value

    def integer(self, value: Any, field_name: str, minimum: int = 0, maximum: int = 1 << 62) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(field_name, f"must be an integer in {minimum}..{maximum}, not {show(value)}")
        return value

    def number(self, value: Any, field_name: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(field_name, f"must be a finite number, not {show(value)}")
        if positive and value <= 0:
            raise self.fail(field_name, f"must be positive, not {value!r}")
        return float(value)

    def section(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an object, not {show(value)}")
        return value

    # -- the section records, by their field types ---------------------------------------------
    def record(self, cls: type[R], body: Any, name: str) -> R:
        """``cls`` from the JSON object ``body`` (the field ``name``): every key it knows checked by
        its type, a field without a default required; keys it does not know are left out."""
        if not isinstance(body, dict):
            raise self.fail(name, f"must be an object, not {show(body)}")
        types_ = _field_types(cls)
        values = {}
        for f in fields(cast(Any, cls)):
            if f.name not in body:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise self.fail(f"{name}.{f.name}", "is missing")
                continue
            values[f.name] = self.value(types_[f.name], body[f.name], f"{name}.{f.name}")
        return cls(**values)

    def optional_record(self, cls: type[R], data: dict[str, Any], key: str) -> R:
        """A top-level section: absent or null reads as the record with nothing in it."""
        return self.record(cls, self.section(data, key), key)

    def value(self, hint: Any, value: Any, name: str) -> Any:
        origin, args = get_origin(hint), get_args(hint)
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            kinds = [a for a in args if a is not type(None)]
            if len(kinds) > 1:  # JsonValue: any JSON, as parsed (the open blocks, JsonObject's values)
                return value
            hint = kinds[0]
            origin, args = get_origin(hint), get_args(hint)
        if isinstance(hint, type) and issubclass(hint, Record):
            return self.record(hint, value, name)
        if hint is PreprocessSpec:
            return self.preprocess_body(value, name)
        if hint is bool:
            if not isinstance(value, bool):
                raise self.fail(name, f"must be true or false, not {show(value)}")
            return value
        if hint is int:
            return self.integer(value, name)
        if hint is float:
            self.number(value, name)
            return value  # as written (an integer stays one, so the file reads and writes the same)
        if hint is str:
            if not isinstance(value, str):
                raise self.fail(name, f"must be a string, not {show(value)}")
            return value
        if origin is tuple:
            if not isinstance(value, list):
                raise self.fail(name, f"must be a list, not {show(value)}")
            return tuple(self.value(args[0], v, f"{name}[{i}]") for i, v in enumerate(value))
        if origin in (dict, Mapping):
            if not isinstance(value, dict):
                raise self.fail(name, f"must be an object, not {show(value)}")
            return {k: self.value(args[1], v, f"{name}.{k}") for k, v in value.items()}
        raise TypeError(f"no manifest reader for {hint!r} ({name})")  # a record declared a type this lacks

    # -- the fixed parts ----------------------------------------------------------------------
    def tensor(self, data: dict[str, Any], key: str) -> TensorSpec:
        body = self.get(data, key)
        if not isinstance(body, dict):
            raise self.fail(key, f"must be an object with name, shape and dtype, not {show(body)}")
        shape = self.get(body, "shape", f"{key}.")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
            raise self.fail(f"{key}.shape", f"must be a list of 1 to 8 dimensions, not {show(shape)}")
        for i, d in enumerate(shape):
            if i == 0 and d == -1:
                continue
            self.integer(d, f"{key}.shape[{i}]", minimum=1, maximum=1 << 20)
        dtype = self.string(body, "dtype", f"{key}.", choices=("float32",), default="float32")
        return TensorSpec(name=self.string(body, "name", f"{key}."), shape=list(shape), dtype=dtype)

    def preprocess_body(self, body: Any, name: str) -> PreprocessSpec:
        if not isinstance(body, dict):
            raise self.fail(name, f"must be an object, not {show(body)}")
        p = name + "."
        size = self.integer(self.get(body, "input_size", p), p + "input_size", 1, 1 << 16)
        resize = self.integer(self.get(body, "resize", p), p + "resize", size, 1 << 16)
        values = {}
        for key in ("mean", "std"):
            v = self.get(body, key, p)
            if not isinstance(v, list) or len(v) != 3:
                raise self.fail(p + key, f"must be a list of 3 numbers (R, G, B), not {show(v)}")
            values[key] = [self.number(x, f"{p}{key}[{i}]", positive=key == "std") for i, x in enumerate(v)]
        scale = self.number(body.get("scale", 1.0 / 255.0), p + "scale", positive=True)
        return PreprocessSpec(
            input_size=size, resize=resize, mean=values["mean"], std=values["std"],
            normalize=self.string(body, "normalize", p, default="custom"),
            interpolation=self.string(body, "interpolation", p, choices=INTERPOLATIONS, default="bilinear"),
            scale=scale, layout=self.string(body, "layout", p, choices=("NCHW",), default="NCHW"),
            color=self.string(body, "color", p, choices=("RGB",), default="RGB"))

    def files(self, data: dict[str, Any]) -> dict[str, FileRecord]:
        files = {}
        for name, entry in self.section(data, "files").items():
            check_file_name(name, self.where)
            if not isinstance(entry, dict):
                raise self.fail(f"files.{name}", f"must be an object with sha256 and bytes, not {show(entry)}")
            digest = self.get(entry, "sha256", f"files.{name}.")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise self.fail(f"files.{name}.sha256", f"must be 64 lowercase hex digits, not {show(digest)}")
            size = self.integer(self.get(entry, "bytes", f"files.{name}."), f"files.{name}.bytes")
            files[name] = FileRecord(sha256=digest, bytes=size)
        return files

    def profiles(self, value: Any, field_name: str) -> list[BatchProfile]:
        if not isinstance(value, list) or not 1 <= len(value) <= 64:
            raise self.fail(field_name, f"must be a list of {{min, opt, max}} records, not {show(value)}")
        out = []
        for i, record in enumerate(value):
            name = f"{field_name}[{i}]"
            if not isinstance(record, dict):
                raise self.fail(name, f"must be a {{min, opt, max}} record, not {show(record)}")
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
            raise self.fail("engine", f"must be an object (or null), not {show(body)}")
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
        timing = self.section(body, "timing_cache")
        record.timing_cache = self.record(TimingCacheRecord, timing, p + "timing_cache") if timing else None
        record.evaluation = self.record(EngineEvaluationRecord, self.section(body, "evaluation"), p + "evaluation")
        if not isinstance(body.get("strongly_typed", True), bool):
            raise self.fail(p + "strongly_typed", f"must be true or false, not {show(body['strongly_typed'])}")
        record.strongly_typed = bool(body.get("strongly_typed", True))
        return record

    def read(self, cls: type[Manifest], data: dict[str, Any], version: int = SCHEMA_VERSION) -> Manifest:
        num_classes = self.integer(self.get(data, "num_classes"), "num_classes", 1, 1 << 20)
        labels = self.get(data, "labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise self.fail("labels", f"must be a list of class names (strings), not {show(labels)}")
        if len(labels) != num_classes:
            raise self.fail("labels", f"has {len(labels)} names but num_classes is {num_classes}")
        dupes = sorted({x for x in labels if labels.count(x) > 1}) if len(labels) < 5000 else []
        if dupes:
            raise self.fail("labels", f"names a class twice: {', '.join(dupes[:5])}")
        output = self.tensor(data, "output")
        if output.shape[-1] != num_classes:
            raise self.fail("output.shape", f"is {output.shape}, which does not end in num_classes {num_classes}")
        inp = self.tensor(data, "input")
        pre = self.preprocess_body(self.get(data, "preprocess"), "preprocess")
        if len(inp.shape) == 4 and inp.shape[2:] != [pre.input_size, pre.input_size]:
            raise self.fail("input.shape", f"is {inp.shape} but preprocess.input_size is {pre.input_size}")
        strings = {}
        for key in ("created", "trtinfer_version"):
            value = data.get(key, "")
            if not isinstance(value, str):
                raise self.fail(key, f"must be a string, not {show(value)}")
            strings[key] = value
        return cls(
            name=self.string(data, "name"), arch=self.string(data, "arch"), num_classes=num_classes,
            labels=list(labels), precision=self.string(data, "precision", choices=PRECISIONS),
            input=inp, output=output, preprocess=pre, files=self.files(data),
            source=self.optional_record(SourceRecord, data, "source"),
            versions=self.value(dict[str, str], self.section(data, "versions"), "versions"),
            validation=self.optional_record(ValidationRecord, data, "validation"),
            accuracy=self.optional_record(AccuracyRecord, data, "accuracy"),
            calibration=self.optional_record(CalibrationRecord, data, "calibration"),
            conversion=self.optional_record(ConversionRecord, data, "conversion"),
            engine=self.engine(data, version),
            variant=self.optional_record(VariantRecord, data, "variant"),
            target="" if version == 1 else self.string(data, "target", choices=TARGETS),
            created=strings["created"], trtinfer_version=strings["trtinfer_version"], schema_version=version)


def read_record(cls: type[R], data: Any, where: str = "manifest", name: str = "") -> R:
    """``cls`` read from ``data`` and checked as the manifest reader checks its section ``name``
    (a stage's own summary, such as a calibration set's, becomes its record this way)."""
    return ManifestReader(where).record(cls, data, name or cls.__name__)


def show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
