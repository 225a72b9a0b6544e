"""The artifact contract: ``manifest.json`` describes one model at one precision.

Every later stage (runtime, bench, serve, engine build) reads only this file and the model files
it lists, so nothing about preprocessing, labels or shapes is ever guessed downstream.

:mod:`.schema` holds the fixed names and versions, :mod:`.records` and :mod:`.engine` the typed
sections, :mod:`.reader` the field-by-field check, :mod:`.document` the :class:`Manifest` itself.
"""

from .document import Manifest
from .engine import BatchProfile, EngineEvaluationRecord, EngineRecord, TimingCacheRecord
from .reader import check_file_name, read_record
from .records import (AccuracyRecord, CalibrationRecord, CheckpointRecord, ConversionRecord, EvalDataRecord,
                      ExecutionRecord, ExportComparison, ExportRecord, FallbackRecord, FallbackStepRecord, FileRecord,
                      Int8ChoiceRecord, IoTypesRecord, LayerRankRecord, MethodTrialRecord, PreprocessSpec, QatEpochRecord,
                      QatRecord,
                      SelectionSliceRecord, SourceRecord, TensorSpec, ValidationRecord, VariantRecord)
from .schema import (MANIFEST_NAME, MAX_MANIFEST_BYTES, ONNX_NAME, PLAN_NAME, PRECISIONS, READABLE_SCHEMA_VERSIONS,
                     REBUILD, SCHEMA_VERSION, TARGETS, JsonObject, JsonValue)

__all__ = [
    "Manifest", "BatchProfile", "EngineEvaluationRecord", "EngineRecord", "TimingCacheRecord", "check_file_name",
    "read_record",
    "AccuracyRecord", "CalibrationRecord", "CheckpointRecord", "ConversionRecord", "EvalDataRecord", "ExecutionRecord",
    "ExportComparison", "ExportRecord", "FallbackRecord", "FallbackStepRecord", "FileRecord", "Int8ChoiceRecord",
    "IoTypesRecord", "LayerRankRecord", "MethodTrialRecord", "PreprocessSpec", "QatEpochRecord", "QatRecord",
    "SelectionSliceRecord", "SourceRecord",
    "TensorSpec", "ValidationRecord", "VariantRecord", "MANIFEST_NAME", "MAX_MANIFEST_BYTES", "ONNX_NAME", "PLAN_NAME",
    "PRECISIONS", "READABLE_SCHEMA_VERSIONS", "REBUILD", "SCHEMA_VERSION", "TARGETS", "JsonObject", "JsonValue",
]
