"""Dump TensorRT's real engine-inspector JSON of a small FP16 network, without and with an execution
context attached, and what trtinfer's layer-precision reader makes of each.

    python scripts/gpu_inspector_dump.py OUT_DIR

The inspector phase of ``scripts/gpu_check.sh``. Writes into OUT_DIR:

- ``inspector-no-context.json``: ``IEngineInspector.get_engine_information(JSON)`` as TensorRT
  returned it, no execution context attached (a dynamic-shape engine's tensor types then read
  "N/A due to dynamic shapes");
- ``inspector-with-context.json``: the text ``builders.engine.tensorrt_build._inspect`` itself reads, with its
  execution context at profile 0's OPT shape attached (``IEngineInspector.set_execution_context``);
- ``inspector-reading.json``: for each, the keys and type spellings found, the layer-precision
  counts of ``builders.engine.layer_precisions.summarize_layers`` and the verdict of its FP16 check, so a later
  session can hold our parser against real output (TensorRT 11's key spelling, say).

Exit 0 when, with the context attached, our reader reads tensor types from the layers' tensors and
finds the FP16 compute layers (the build's own precision check passes); 1 otherwise (the dumps are
still written when TensorRT produced them). Offline: a seeded tiny CNN is exported and cast to
FP16 by the project's own FP16 step (ModelOpt AutoCast); the engine is built with builders/engine/'s
own steps, so this script adds no TensorRT call of its own beyond reading the inspector.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any
from unittest import mock

NO_CONTEXT = "inspector-no-context.json"
WITH_CONTEXT = "inspector-with-context.json"
READING = "inspector-reading.json"
INPUT_SIZE = 32
NUM_CLASSES = 10
PROFILE = (1, 8, 32)  # MIN:OPT:MAX batch of the engine; the context is attached at OPT
PRECISION = "fp16"


# -- the network (CPU only: torch, onnx, ModelOpt) -----------------------------------------------------------------
def tiny_cnn() -> Any:
    """Seeded, untrained: the inspector needs layers, not accuracy. Channel counts suit tensor cores."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, NUM_CLASSES),
    ).eval()


def make_fp16_artifact(directory: Path) -> tuple[Any, dict[str, Any]]:
    """An FP16 artifact (model.onnx + manifest) of :func:`tiny_cnn` made the way ``trtinfer build`` makes
    one: the TorchScript-based export, then ModelOpt AutoCast with float32 inputs and outputs kept."""
    from trtinfer.builders.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
    from trtinfer.builders.precision.modelopt import convert_fp16
    from trtinfer.manifest import ONNX_NAME, ConversionRecord, Manifest, TensorSpec, read_record
    from trtinfer.preprocess import make_spec

    fp32 = directory / "fp32" / ONNX_NAME
    fp32.parent.mkdir(parents=True)
    export = export_onnx(tiny_cnn(), fp32, INPUT_SIZE)
    conversion = convert_fp16(fp32, directory / ONNX_NAME)
    manifest = Manifest(name="gpu-check-tiny-fp16", arch="tiny-cnn", num_classes=NUM_CLASSES,
                        labels=[f"c{i}" for i in range(NUM_CLASSES)], precision=PRECISION,
                        input=TensorSpec(INPUT_NAME, [-1, 3, INPUT_SIZE, INPUT_SIZE]),
                        output=TensorSpec(OUTPUT_NAME, [-1, NUM_CLASSES]), preprocess=make_spec(INPUT_SIZE, "cifar10"),
                        conversion=read_record(ConversionRecord, conversion, name="conversion"), target="gpu")
    manifest.record_file(directory, ONNX_NAME)
    manifest.write(directory)
    facts = {"exporter": export.exporter, "opset": export.opset,
             **{k: conversion.get(k) for k in ("nodes_fp16", "nodes_fp32", "cast_nodes", "fp32_op_types")}}
    return manifest, facts


# -- the engine and its inspector (TensorRT) ---------------------------------------------------------------------
def build_plan(trt: Any, directory: Path, manifest: Any, settings: Any) -> Any:
    """builders/engine/'s build steps, without its precision check: the plan must come out even where
    our reader would reject it, since then the dump matters most."""
    from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader
    from trtinfer.builders.engine.network import check_network_input, configure, create_network, parse_onnx
    from trtinfer.builders.engine.settings import EngineBuildError
    from trtinfer.manifest import ONNX_NAME

    logger = tensorrt_loader.trt_logger()
    logger.drain_errors()
    builder = trt.Builder(logger)
    network = create_network(trt, builder)
    parser = parse_onnx(trt, network, directory / ONNX_NAME)
    check_network_input(network, manifest)
    config = configure(trt, builder, manifest, settings)
    plan = builder.build_serialized_network(network, config)
    del parser
    if plan is None:
        raise EngineBuildError("TensorRT could not build the engine: "
                                   + ("; ".join(logger.drain_errors()) or "TensorRT gave no reason"))
    return plan


def inspect_without_context(trt: Any, plan: Any) -> str:
    from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader

    runtime = trt.Runtime(tensorrt_loader.trt_logger())
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError("TensorRT cannot load back the plan it built: "
                           + ("; ".join(tensorrt_loader.trt_logger().drain_errors()) or "no reason given"))
    inspector = engine.create_engine_inspector()
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def inspect_with_context(trt: Any, plan: Any, manifest: Any, batch: Any) -> tuple[str, list[str]]:
    """The JSON ``builders.engine.tensorrt_build._inspect`` reads (its context attached at the profile's OPT shape),
    taken from its call of ``summarize_layers``; and the warnings it logged (a context it could not attach)."""
    from trtinfer.builders.engine import layer_precisions, tensorrt_build

    caught = _Warnings()
    tensorrt_build.log.addHandler(caught)
    try:
        with mock.patch.object(tensorrt_build, "summarize_layers", wraps=layer_precisions.summarize_layers) as spy:
            tensorrt_build._inspect(trt, plan, manifest, batch)
    finally:
        tensorrt_build.log.removeHandler(caught)
    return str(spy.call_args.args[0]), caught.messages


# -- what our reader makes of it (pure: tested on any host) -----------------------------------------------------
def _layers(data: Any) -> list[Any]:
    layers = data.get("Layers", []) if isinstance(data, dict) else data
    return layers if isinstance(layers, list) else []


def read_inspector_json(text: str, requested: str = PRECISION) -> dict[str, Any]:
    """The shape of one inspector JSON (keys, type spellings) and our reader's verdict on it."""
    from trtinfer.builders.engine import layer_precisions
    from trtinfer.builders.engine.layer_precisions import check_engine_precision, is_compute_layer, summarize_layers
    from trtinfer.builders.engine.settings import EngineBuildError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"error": f"not JSON: {exc}", "layers": 0}
    layers = _layers(data)
    layer_keys: collections.Counter[str] = collections.Counter()
    tensor_keys: collections.Counter[str] = collections.Counter()
    type_values: collections.Counter[str] = collections.Counter()
    with_types = 0
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        layer_keys.update(layer.keys())
        records = [t for key in ("Inputs", "Outputs") for t in (layer.get(key) or []) if isinstance(t, dict)]
        for record in records:
            tensor_keys.update(record.keys())
            type_values.update(str(record[k]) for k in record if layer_precisions._type_key(k))
        with_types += any(layer_precisions._tensor_type(t) for t in records)
    reading: dict[str, Any] = {
        "top_level_keys": sorted(data) if isinstance(data, dict) else [],
        "layers": len(layers),
        "layer_keys": dict(layer_keys.most_common()),
        "tensor_keys": dict(tensor_keys.most_common()),
        "type_keys": sorted(k for k in tensor_keys if layer_precisions._type_key(k)),
        "type_values": dict(type_values.most_common(20)),
        "layers_with_tensor_types": with_types,
    }
    try:
        summary = summarize_layers(data)
    except EngineBuildError as exc:
        reading["summary_error"] = exc.one_line()
        return reading
    reading["summary"] = {"total": summary.total, "precisions": summary.precisions,
                          "compute_precisions": summary.compute_precisions}
    try:
        check_engine_precision(requested, summary)
        reading[f"{requested}_check"] = "ok"
    except EngineBuildError as exc:
        reading[f"{requested}_check"] = exc.one_line()
    compute = [layer for layer in layers if is_compute_layer(layer)]
    reading["example_layer"] = (compute or layers or [None])[0]
    return reading


def problems_with(with_context: dict[str, Any], requested: str = PRECISION) -> list[str]:
    """Why the with-context dump does not prove our reader right (empty: it does)."""
    if with_context.get("error") or not with_context.get("layers"):
        return [f"the inspector JSON with a context has no layers ({with_context.get('error') or 'empty layer list'})"]
    out = []
    if not with_context.get("layers_with_tensor_types"):
        out.append("our reader found no tensor type in any layer's Inputs/Outputs (tensor keys seen: "
                   f"{sorted(with_context.get('tensor_keys', {})) or 'none'}; layer keys: "
                   f"{sorted(with_context.get('layer_keys', {}))})")
    verdict = with_context.get(f"{requested}_check", with_context.get("summary_error", "not run"))
    if verdict != "ok":
        out.append(f"our {requested.upper()} check rejects the real engine: {verdict}")
    return out


# -- the whole dump -------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(text)} characters)", flush=True)


def dump(out_dir: Path) -> dict[str, Any]:
    from trtinfer.runtime.backends.tensorrt import loader as tensorrt_loader
    from trtinfer.builders.engine.settings import EngineBuildSettings
    from trtinfer.manifest import BatchProfile
    from trtinfer.runtime.backends.tensorrt import devices

    result: dict[str, Any] = {"ok": False, "precision": PRECISION, "profile": "%d:%d:%d" % PROFILE}
    trt = tensorrt_loader.import_tensorrt()
    result["tensorrt"] = str(trt.__version__)
    result["gpu"] = devices.gpu_info(0)
    devices.set_device(0)
    batch = BatchProfile(*PROFILE)
    settings = EngineBuildSettings(profiles=[batch])
    with tempfile.TemporaryDirectory(prefix="trtinfer-gpu-check-") as tmp:
        directory = Path(tmp)
        manifest, result["network"] = make_fp16_artifact(directory)
        result["opt_shape"] = list(batch.shapes(manifest.batch_shape)[1])
        started = time.perf_counter()
        plan = build_plan(trt, directory, manifest, settings)
        result["build_seconds"] = round(time.perf_counter() - started, 2)
        texts = {"no_context": inspect_without_context(trt, plan)}
        _write(out_dir / NO_CONTEXT, texts["no_context"])
        texts["with_context"], result["inspect_warnings"] = inspect_with_context(trt, plan, manifest, batch)
        _write(out_dir / WITH_CONTEXT, texts["with_context"])
    result["files"] = {"no_context": NO_CONTEXT, "with_context": WITH_CONTEXT}
    result["context_changed_the_json"] = texts["no_context"] != texts["with_context"]
    for key, text in texts.items():
        result[key] = read_inspector_json(text)
    result["problems"] = problems_with(result["with_context"])
    result["ok"] = not result["problems"]
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = dump(out_dir)
    except Exception as exc:  # a crash is this phase's finding: record it, keep the traceback in the log
        traceback.print_exc()
        result = {"ok": False, "problems": [f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"]}
    (out_dir / READING).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out_dir / READING}: " + ("ok" if result["ok"] else "; ".join(result["problems"])), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
