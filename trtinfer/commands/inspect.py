"""``trtinfer inspect``: an artifact's manifest, readable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from trtinfer.manifest import AccuracyRecord, CalibrationRecord, Int8ChoiceRecord, Manifest


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if not isinstance(v, (dict, list)))
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _diagnostics_lines(calibration: CalibrationRecord) -> list[str]:
    """The calibration diagnostics as sentences; an unreadable block is shown raw, never fatal."""
    diag = calibration.diagnostics
    if diag is None:
        return []
    from trtinfer.calibration.diagnostics import describe_diagnostics

    try:
        return describe_diagnostics(dict(diag))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):  # a block from another version
        return [json.dumps(diag, sort_keys=True)[:300]]


def _choice_lines(choice: Int8ChoiceRecord | None) -> list[str]:
    """The INT8 method choice and fallback (builders.precision.int8_choice), one line each; [] when absent."""
    if choice is None:
        return []
    try:
        if not choice.ran:
            return [f"method {choice.method}: {choice.reason}"]
        if choice.methods is None or choice.slice is None:
            raise ValueError("an incomplete choice")
        lines = [", ".join(f"{t.method} agreement {t.top1_agreement:.2%} drop {t.top1_drop_points:.2f}"
                           for t in choice.methods) + f" on {choice.slice.rows} held-out train rows "
                 f"({choice.judged_on}): kept {choice.method}"]
        fb = choice.fallback
        if fb is not None and fb.ran:
            excluded = fb.excluded_nodes
            if excluded is None:
                raise ValueError("an incomplete fallback")
            lines.append(f"fallback kept {len(excluded)} layer(s) in float "
                         f"({fb.float_compute_share or 0:.1%} of the compute): drop {fb.drop_before_points:.2f}"
                         f" -> {fb.drop_after_points:.2f} points; {', '.join(excluded)}")
        elif fb is not None:
            lines.append(f"fallback not run: {fb.reason}")
        return lines
    except (TypeError, ValueError):
        return [json.dumps(choice.to_dict())[:300]]


def _execution_lines(accuracy: AccuracyRecord) -> list[str]:
    lines = []
    for name, r in (accuracy.executions or {}).items():
        try:
            lines.append(f"{name}: not checked ({r.skipped})" if r.skipped is not None else
                         f"{name}: top-1 {r.top1:.2%}, drop {r.top1_drop_points:.2f} (limit "
                         f"{r.max_drop_points:.2f}): {'passed' if r.passed else 'FAILED'}")
        except (TypeError, ValueError):
            lines.append(f"{name}: {json.dumps(r.to_dict())[:200]}")
    return lines


def _rows(m: Manifest) -> list[tuple[str, str]]:
    ckpt = m.source.checkpoint
    rows = [
        ("name", m.name), ("arch", f"{m.arch}" + (" (CIFAR stem)" if m.variant.cifar_stem else "")),
        ("precision", m.precision + (f" (target {m.target})" if m.target else "")), ("classes", f"{m.num_classes}: {', '.join(m.labels[:10])}{' ...' if m.num_classes > 10 else ''}"),
        ("input", f"{m.input.name} {m.input.shape} {m.input.dtype}"), ("output", f"{m.output.name} {m.output.shape} {m.output.dtype}"),
        ("preprocess", f"resize {m.preprocess.resize}, crop {m.preprocess.input_size}, mean {m.preprocess.mean}, "
                       f"std {m.preprocess.std} ({m.preprocess.normalize})"),
        ("checkpoint", f"{ckpt.file if ckpt else None} sha256 {str(ckpt.sha256 if ckpt else None)[:16]}..."),
    ]
    for fname, entry in m.files.items():
        rows.append((f"file {fname}", f"{entry.bytes:,} bytes, sha256 {entry.sha256[:16]}..."))
    for key, r in (("random", m.validation.random), ("eval", m.validation.eval)):
        if r is not None and r.to_dict():
            try:
                rows.append((f"validation {key}", f"{r.samples} inputs, max |diff| {r.max_abs_diff:.2e}, "
                                                  f"top-1 agreement {r.top1_agreement:.2%}, passed {r.passed}"))
            except (TypeError, ValueError):  # an informational section: show it raw
                rows.append((f"validation {key}", _fmt(r.to_dict())))
    if m.conversion.to_dict():
        rows.append(("conversion", _fmt(m.conversion.to_dict())))
    if m.accuracy.to_dict():
        rows.append(("accuracy", _fmt(m.accuracy.to_dict())))
    rows.extend(("execution", line) for line in _execution_lines(m.accuracy))
    if m.calibration.to_dict():
        rows.append(("calibration", _fmt(m.calibration.to_dict())))
    rows.extend(("calibration check", line) for line in _diagnostics_lines(m.calibration))
    rows.extend(("int8 choice", line) for line in _choice_lines(m.calibration.choice))
    return rows


@click.command("inspect")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest JSON.")
@click.option("--verify", is_flag=True, help="Also check every file's sha256 against the manifest.")
def inspect_cmd(artifact: Path, as_json: bool, verify: bool) -> None:
    """Show what an artifact directory holds: model, shapes, preprocessing, precision, checks."""
    from trtinfer.manifest import Manifest

    manifest = Manifest.read(artifact)
    if verify:
        manifest.verify_files(artifact)
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2))
        return
    m = manifest
    rows = _rows(m)
    if m.engine is not None:
        from trtinfer.builders.engine.artifact import describe_engine

        rows.extend(("engine", line) for line in describe_engine(m.engine))
    rows.append(("versions", _fmt(m.versions)))
    rows.append(("created", f"{m.created} by trtinfer {m.trtinfer_version}"))
    if verify:
        rows.append(("files verified", f"{len(m.files)} file(s): sizes and sha256 match the manifest"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
