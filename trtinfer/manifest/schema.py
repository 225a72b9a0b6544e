"""The manifest's fixed names and versions, and the base of its section records.

A section record writes itself as JSON with :meth:`Record.to_dict`: its fields in declaration
order, a field that is None left out (the section never had it, so older manifests read back and
write back the keys they had), and a record with nothing in it written as ``{}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, is_dataclass
from typing import TYPE_CHECKING, ClassVar, TypeAlias, Union, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SCHEMA_VERSION = 4
#: Versions this trtinfer reads. 2 (issue 16) added ``target`` (cpu|gpu: which deployment the
#: artifact's INT8 graph and accuracy checks were made for) and ``accuracy.executions`` (each CPU
#: execution's measured accuracy, which ``load(backend="auto")`` may choose from); a version-1
#: manifest reads with ``target`` "" (made before the choice existed) and no recorded executions.
#: 3 (issue 17) made ``engine`` a typed record (:class:`EngineRecord`): ``null`` without a plan,
#: else every field present and checked; a version-1 or -2 ``engine`` object reads into the same
#: record (``{}`` as no engine), with the fields those versions could lack left at their defaults.
#: Issue 29 typed every other section (:mod:`.records`) without changing the file: the same keys,
#: in the same order, so the version stays 3. 4 (issue 31) added ``calibration.qat`` (quantization-aware
#: fine-tuning: :class:`QatRecord`) and ``calibration.choice.refused`` (INT8 methods passed over because the
#: target's runtime could not run their model); a version 1-3 manifest reads with neither (never ran).
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4)
TARGETS = ("cpu", "gpu")
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few kB; refuse anything absurd before parsing it
REBUILD = "rebuild the artifact (trtinfer build)"
ONNX_NAME = "model.onnx"
PLAN_NAME = "model.plan"
PRECISIONS = ("fp32", "fp16", "int8")

#: A JSON value as ``json.loads`` gives it: the type of the few blocks kept open (see :mod:`.records`).
JsonValue: TypeAlias = Union[None, bool, int, float, str, Sequence["JsonValue"], Mapping[str, "JsonValue"]]
JsonObject: TypeAlias = Mapping[str, JsonValue]


class Record:
    """Base of the section records (frozen dataclasses); ``NULLS`` names the fields written as
    ``null`` rather than left out when None (in a record that holds anything)."""

    NULLS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, JsonValue]:
        values = [(f.name, getattr(self, f.name)) for f in fields(cast("DataclassInstance", self))]
        if all(v is None for _, v in values):
            return {}
        return {k: plain(v) for k, v in values if v is not None or k in self.NULLS}


def plain(value: object) -> JsonValue:
    """``value`` as JSON data: records as their ``to_dict``, other dataclasses field by field, tuples as
    lists, mappings copied."""
    if isinstance(value, Record):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):  # a spec such as PreprocessSpec
        return plain(asdict(value))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return cast(JsonValue, value)
