"""``trtinfer build``: checkpoint -> validated artifact directories (ONNX, then a TensorRT engine on GPU hosts)."""

from __future__ import annotations

from pathlib import Path

import click

from trtinfer import defaults
from trtinfer.commands.build_options import (DATA_OPTION_NAMES, MODEL_OPTION_NAMES, data_options, model_options,
                                             pop_options)
from trtinfer.commands.engine_options import engine_options, pop_engine_options
from trtinfer.manifest import PRECISIONS


def _precisions(fp32: bool, fp16: bool, int8: bool, precision: str | None) -> tuple[str, ...]:
    chosen = [p for p, on in (("fp32", fp32), ("fp16", fp16), ("int8", int8)) if on]
    if precision:
        for p in precision.split(","):
            p = p.strip().lower()
            if p not in PRECISIONS:
                raise click.BadParameter(f"{p!r} is not one of {', '.join(PRECISIONS)}", param_hint="--precision")
            chosen.append(p)
    ordered = tuple(p for p in PRECISIONS if p in chosen)
    return ordered or ("fp32",)


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@click.option("--fp32", is_flag=True, help="Build an FP32 artifact (the default when no precision is given).")
@click.option("--fp16", is_flag=True, help="Build an FP16 artifact (ModelOpt AutoCast, float32 I/O kept).")
@click.option("--int8", is_flag=True, help="Build an INT8 artifact (NNCF or ModelOpt Q/DQ per --target; needs "
                                           "--calib-data or --calib-set).")
@click.option("--precision", metavar="LIST", help="Comma-separated precisions, e.g. fp32,fp16,int8 (shares one export).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path(defaults.OUT_DIR),
              show_default=True, help="Parent directory; each artifact goes to OUT/<name>-<precision>/.")
@click.option("--name", help="Artifact name (default: the checkpoint's file name without extension).")
@model_options
@data_options
@click.option("--calib-set", type=click.Path(path_type=Path), help="A calibration set made by `trtinfer calib make`.")
@click.option("--fp16-exclude", metavar="NODES", help="Comma-separated ONNX node names the FP16 build keeps in FP32.")
@click.option("--allow-accuracy-drop", is_flag=True, help="Write reduced-precision artifacts even when the accuracy guard fails.")
@click.option("--atol", type=float, default=defaults.ATOL, show_default=True,
              help="Absolute logit tolerance of the ONNX-vs-PyTorch check.")
@click.option("--rtol", type=float, default=defaults.RTOL, show_default=True,
              help="Tolerance relative to the largest logit.")
@click.option("--opset", type=click.IntRange(defaults.OPSET), default=defaults.OPSET, show_default=True,
              help="ONNX opset.")
@click.option("--from-onnx", "from_onnx", type=click.Path(path_type=Path),
              help="Finish an existing artifact directory: build its TensorRT engine (GPU host).")
@click.option("--force", is_flag=True, help="Replace existing artifact directories.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@engine_options
def build(checkpoint, fp32, fp16, int8, precision, out_dir, name, calib_set, fp16_exclude,
          allow_accuracy_drop, atol, rtol, opset, from_onnx, force, quiet, **kwargs):
    """Build CHECKPOINT (.pth/.pt) into validated artifact directories.

    Each artifact holds model.onnx (and model.plan where TensorRT and a GPU are present) plus
    manifest.json. Nothing is written unless every check passes.
    """
    from trtinfer.builders.progress import Reporter
    from trtinfer.errors import TrtInferError

    reporter = Reporter(quiet=quiet)
    engine_settings, require_engine = pop_engine_options(kwargs)
    eval_data, eval_samples = kwargs["eval_data"], kwargs["eval_samples"]
    max_accuracy_drop = kwargs["max_accuracy_drop"]
    if from_onnx is not None:
        if checkpoint is not None:
            raise TrtInferError("pass either CHECKPOINT or --from-onnx DIR, not both")
        from trtinfer.builders.engine.artifact import finish_from_onnx

        finish_from_onnx(from_onnx, engine_settings, eval_data=eval_data, eval_samples=eval_samples,
                         max_accuracy_drop=max_accuracy_drop, allow_accuracy_drop=allow_accuracy_drop,
                         progress=reporter)
        return
    if checkpoint is None:
        raise TrtInferError("missing CHECKPOINT", hint="trtinfer build model.pth, or --from-onnx DIR")
    from trtinfer.builders.options import BuildOptions
    from trtinfer.builders.pipeline import Builder

    precisions = _precisions(fp32, fp16, int8, precision)
    opts = BuildOptions(
        checkpoint=checkpoint, precisions=precisions, out_dir=out_dir, name=name,
        **pop_options(kwargs, MODEL_OPTION_NAMES + DATA_OPTION_NAMES), atol=atol, rtol=rtol, opset=opset,
        force=force, calib_set=calib_set,
        allow_accuracy_drop=allow_accuracy_drop, engine=engine_settings, require_engine=require_engine,
        fp16_exclude=tuple(n.strip() for n in (fp16_exclude or "").split(",") if n.strip()))
    for path in Builder(opts, reporter).run():
        click.echo(str(path))
