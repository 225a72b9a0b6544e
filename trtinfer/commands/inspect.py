"""``trtinfer inspect``: an artifact's manifest, readable."""

from __future__ import annotations

from typing import Any

import json
from pathlib import Path

import click


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if not isinstance(v, (dict, list)))
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _diagnostics_lines(calibration: dict) -> list[str]:
    """The calibration diagnostics as sentences; an unreadable block is shown raw, never fatal."""
    diag = calibration.get("diagnostics") if isinstance(calibration, dict) else None
    if not isinstance(diag, dict):
        return []
    from trtinfer.calibration.diagnostics import describe_diagnostics

    try:
        return describe_diagnostics(diag)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):  # a block from another version
        return [json.dumps(diag, sort_keys=True)[:300]]


def _choice_lines(calibration: dict) -> list[str]:
    """The INT8 method choice and fallback (builders.int8_choice), one line each; [] when absent."""
    choice = calibration.get("choice") if isinstance(calibration, dict) else None
    if not isinstance(choice, dict):
        return []
    try:
        if not choice.get("ran"):
            return [f"method {choice.get('method')}: {choice.get('reason')}"]
        lines = [", ".join(f"{t['method']} agreement {t['top1_agreement']:.2%} drop {t['top1_drop_points']:.2f}"
                           for t in choice["methods"]) + f" on {choice['slice']['rows']} held-out train rows "
                 f"({choice['judged_on']}): kept {choice['method']}"]
        fb = choice.get("fallback") or {}
        if fb.get("ran"):
            lines.append(f"fallback kept {len(fb['excluded_nodes'])} layer(s) in float "
                         f"({fb.get('float_compute_share', 0):.1%} of the compute): drop {fb['drop_before_points']:.2f}"
                         f" -> {fb['drop_after_points']:.2f} points; {', '.join(fb['excluded_nodes'])}")
        elif fb:
            lines.append(f"fallback not run: {fb.get('reason')}")
        return lines
    except (KeyError, TypeError, ValueError):
        return [json.dumps(choice)[:300]]


def _execution_lines(accuracy: dict) -> list[str]:
    executions = accuracy.get("executions") if isinstance(accuracy, dict) else None
    if not isinstance(executions, dict):
        return []
    lines = []
    for name, r in executions.items():
        try:
            lines.append(f"{name}: not checked ({r['skipped']})" if "skipped" in r else
                         f"{name}: top-1 {r['top1']:.2%}, drop {r['top1_drop_points']:.2f} (limit "
                         f"{r['max_drop_points']:.2f}): {'passed' if r['passed'] else 'FAILED'}")
        except (KeyError, TypeError, ValueError):
            lines.append(f"{name}: {json.dumps(r)[:200]}")
    return lines


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
    source = m.source.get("checkpoint")
    ckpt: dict[str, Any] = source if isinstance(source, dict) else {}
    rows = [
        ("name", m.name), ("arch", f"{m.arch}" + (" (CIFAR stem)" if m.variant.get("cifar_stem") else "")),
        ("precision", m.precision + (f" (target {m.target})" if m.target else "")), ("classes", f"{m.num_classes}: {', '.join(m.labels[:10])}{' ...' if m.num_classes > 10 else ''}"),
        ("input", f"{m.input.name} {m.input.shape} {m.input.dtype}"), ("output", f"{m.output.name} {m.output.shape} {m.output.dtype}"),
        ("preprocess", f"resize {m.preprocess.resize}, crop {m.preprocess.input_size}, mean {m.preprocess.mean}, "
                       f"std {m.preprocess.std} ({m.preprocess.normalize})"),
        ("checkpoint", f"{ckpt.get('file')} sha256 {str(ckpt.get('sha256'))[:16]}..."),
    ]
    for fname, entry in m.files.items():
        rows.append((f"file {fname}", f"{entry['bytes']:,} bytes, sha256 {entry['sha256'][:16]}..."))
    for key in ("random", "eval"):
        r = m.validation.get(key)
        if isinstance(r, dict) and r:
            try:
                rows.append((f"validation {key}", f"{r['samples']} inputs, max |diff| {r['max_abs_diff']:.2e}, "
                                                  f"top-1 agreement {r['top1_agreement']:.2%}, passed {r['passed']}"))
            except (KeyError, TypeError, ValueError):  # an informational section: show it raw
                rows.append((f"validation {key}", _fmt(r)))
    for section in ("conversion", "accuracy", "calibration"):
        value = getattr(m, section)
        if value:
            rows.append((section, _fmt(value)))
        if section == "calibration":
            rows.extend(("calibration check", line) for line in _diagnostics_lines(value))
            rows.extend(("int8 choice", line) for line in _choice_lines(value))
        if section == "accuracy":
            rows.extend(("execution", line) for line in _execution_lines(value))
    if m.engine is not None:
        from trtinfer.builders.engine import describe_engine

        rows.extend(("engine", line) for line in describe_engine(m.engine))
    rows.append(("versions", _fmt(m.versions)))
    rows.append(("created", f"{m.created} by trtinfer {m.trtinfer_version}"))
    if verify:
        rows.append(("files verified", f"{len(m.files)} file(s): sizes and sha256 match the manifest"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
