"""Calibration diagnostics: does the calibration set cover the classes, and is it large enough?

Two checks whose results go into an INT8 artifact's manifest and ``trtinfer inspect``:

* **class coverage**: how many images of each class the set holds. A class with no images is a
  class whose activations INT8 ranges never saw.
* **range spread**: the set is split into two disjoint halves (even and odd rows) and the FP32
  model runs on each, with the tensors a quantizer calibrates (outputs of Conv, Gemm, MatMul,
  Relu, Add, Clip) exposed. If the set is large enough, each half alone gives nearly the same
  activation ranges; a large difference between the halves says the ranges depend on which
  images happened to be drawn, so the set is too small.

Everything returned is plain JSON (no NaN or inf): ``Manifest.write`` refuses anything else.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.errors import BackendUnavailable, DataError, ValidationError

log = logging.getLogger(__name__)

# The ops whose outputs a quantizer calibrates (TensorRT's and ModelOpt's Q/DQ placement puts
# ranges on these); other ops (pooling, reshapes) pass ranges through without new ones.
ACTIVATION_OPS = frozenset({"Conv", "Gemm", "MatMul", "Relu", "Add", "Clip"})
DEFAULT_MAX_TENSORS = 200  # exposing every tensor of a big model costs memory for each batch
DEFAULT_BATCH = 64
# "max" calibration sets each range to the absolute maximum seen, so one unusual image moves it.
# A tensor whose two halves disagree by more than half of its range, or a typical tensor off by
# more than a fifth, means another draw of the same size would give clearly different INT8
# scales: the set is too small for stable ranges.
MAX_SPREAD_LIMIT = 0.5
MEDIAN_SPREAD_LIMIT = 0.2
PERCENTILE = 99.99  # what percentile calibration clips to; shown beside the absmax
WORST_SHOWN = 5
DIGITS = 4
VERDICT_OK = "ok"
VERDICT_TOO_FEW = "too few images"
# NaN or inf in an FP32 activation is a broken model or input, not a small set; saying "ok" or
# "too few images" about it would send the user the wrong way.
VERDICT_NONFINITE = "non-finite activations"


def calibration_diagnostics(fp32_onnx: str | Path, x: np.ndarray, labels: np.ndarray | None,
                            class_names: list[str], max_tensors: int = DEFAULT_MAX_TENSORS,
                            batch: int = DEFAULT_BATCH) -> dict[str, Any]:
    """Class coverage and range spread of a calibration set ``x`` (float32 NCHW) for a model.

    ``labels``: int, -1 for unknown (or None). ``fp32_onnx`` is only read; the instrumented copy
    of the model lives in memory. Returns ``{"images", "coverage", "range_spread"}``.
    """
    if max_tensors < 1 or batch < 1:
        raise DataError(f"max_tensors and batch must be at least 1, got {max_tensors} and {batch}")
    x = np.asarray(x)
    if labels is not None and len(labels) != len(x):
        raise DataError(f"{len(x)} calibration images but {len(labels)} labels")
    if len(x) < 2:
        spread: dict[str, Any] = {"skipped": "fewer than 2 calibration images"}
    else:
        spread = range_spread(fp32_onnx, x, max_tensors, batch)
    return {"images": int(len(x)), "coverage": class_coverage(labels, class_names), "range_spread": spread}


# -- class coverage -------------------------------------------------------------------------

def class_coverage(labels: np.ndarray | None, class_names: list[str]) -> dict[str, Any]:
    """Images per class; ``{"labelled": False}`` when no image has a label."""
    known = np.asarray(labels if labels is not None else [], dtype=np.int64)
    known = known[known >= 0]
    if len(known) == 0:
        return {"labelled": False}
    # Labels beyond the names (a set made for another model) still count, under placeholder names.
    classes = max(len(class_names), int(known.max()) + 1)
    names = list(class_names) + [f"class_{i}" for i in range(len(class_names), classes)]
    counts = np.bincount(known, minlength=classes)
    lo, hi = int(counts.min()), int(counts.max())
    return {
        "labelled": True,
        "classes": int(classes),
        "covered": int((counts > 0).sum()),
        "missing": [names[i] for i in np.flatnonzero(counts == 0)],
        "min_per_class": lo,
        "max_per_class": hi,
        "balanced": hi - lo <= 1,
    }


# -- range spread ---------------------------------------------------------------------------

@dataclass
class _Range:
    """Streaming statistics of |activation| for one tensor over one half."""

    absmax: float = 0.0
    count: int = 0
    keep: int = 0  # how many of the largest values the percentile needs (0: not known yet)
    finite: bool = True  # False once a NaN or inf was seen (max() would silently skip a NaN)
    top: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))

    def add(self, values: np.ndarray, half_rows: int, batch_rows: int) -> None:
        mag = np.abs(values.astype(np.float32, copy=False)).ravel()
        if mag.size == 0:
            return
        if not self.keep:  # the half's size follows from the first batch: rows are alike in shape
            expected = mag.size * half_rows // max(batch_rows, 1)
            self.keep = _top_needed(expected)
        peak = float(mag.max())  # NaN if any value is NaN
        if not math.isfinite(peak):
            self.finite = False
            return
        self.absmax = max(self.absmax, peak)
        self.count += mag.size
        pool = np.concatenate([self.top, mag]) if self.top.size else mag
        k = min(self.keep, pool.size)
        self.top = np.partition(pool, pool.size - k)[pool.size - k:] if k < pool.size else pool.copy()

    def percentile(self) -> float | None:
        """The exact ``PERCENTILE`` of |x| (numpy's linear interpolation), from the largest values."""
        if self.count == 0 or self.top.size < min(_top_needed(self.count), self.count):
            return None
        desc = np.sort(self.top)[::-1]
        rank = (1 - PERCENTILE / 100) * (self.count - 1)  # position counted from the largest
        lo = int(math.floor(rank))
        frac = rank - lo
        hi = min(lo + 1, desc.size - 1)
        return float(desc[lo] * (1 - frac) + desc[hi] * frac)


def _top_needed(count: int) -> int:
    """Largest values to keep so that the percentile of ``count`` values can be interpolated."""
    return int(math.floor((1 - PERCENTILE / 100) * max(count - 1, 0))) + 2


def _spread(a: float, b: float) -> float:
    return abs(a - b) / max(a, b, 1e-12)


def range_spread(fp32_onnx: str | Path, x: np.ndarray, max_tensors: int = DEFAULT_MAX_TENSORS,
                 batch: int = DEFAULT_BATCH) -> dict[str, Any]:
    """How much activation ranges of the even rows and of the odd rows of ``x`` differ."""
    halves = (x[0::2], x[1::2])
    model_bytes, tensors, skipped = _instrumented_model(fp32_onnx, max_tensors)
    if not tensors:
        return {"skipped": f"the model has no float outputs of {'/'.join(sorted(ACTIVATION_OPS))} nodes"}
    session = _session(model_bytes, fp32_onnx)
    stats = [_run_half(session, half, tensors, batch, fp32_onnx) for half in halves]
    rows, nonfinite = [], []
    for name in tensors:
        a, b = stats[0][name], stats[1][name]
        if not (a.finite and b.finite):
            nonfinite.append(name)
            continue
        pa, pb = a.percentile(), b.percentile()
        rows.append((name, _spread(a.absmax, b.absmax), a.absmax, b.absmax,
                     None if pa is None or pb is None else _spread(pa, pb)))
    if nonfinite:
        log.warning("%d activation tensors hold NaN or inf on the calibration set (first: %s)",
                    len(nonfinite), nonfinite[0])
    spreads = [r[1] for r in rows]
    pct = [r[4] for r in rows if r[4] is not None]
    median = float(np.median(spreads)) if spreads else 0.0
    worst = max(spreads, default=0.0)
    too_few = worst > MAX_SPREAD_LIMIT or median > MEDIAN_SPREAD_LIMIT
    verdict = VERDICT_NONFINITE if nonfinite else VERDICT_TOO_FEW if too_few else VERDICT_OK
    ranked = sorted(rows, key=lambda r: r[1], reverse=True)[:WORST_SHOWN]
    return {
        "halves": [int(len(h)) for h in halves],
        "tensors": len(rows),
        "skipped_tensors": skipped,
        "nonfinite_tensors": len(nonfinite),
        "median_spread": _round(median),
        "max_spread": _round(worst),
        "percentile": PERCENTILE,
        "median_spread_percentile": _round(float(np.median(pct))) if pct else None,
        "worst": [{"tensor": name, "spread": _round(s), "absmax": [_round(a), _round(b)]}
                  for name, s, a, b, _ in ranked],
        "verdict": verdict,
    }


def _round(value: float) -> float:
    return round(float(value), DIGITS)


def _instrumented_model(path: str | Path, max_tensors: int) -> tuple[bytes, list[str], int]:
    """The model with activation tensors as extra outputs, serialized in memory (the file is only
    read); (bytes, exposed tensor names in graph order, eligible tensors left out by the cap)."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailable("calibration diagnostics read the model with onnx",
                                 hint="pip install 'trtinfer[build]'") from exc
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...
        raise ValidationError(f"cannot read {path} with onnx: {exc}", hint="rebuild the model") from exc
    try:
        typed = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # types are only needed to pick float tensors; without them, none qualify
        log.info("shape inference failed on %s (%s); exposing Conv outputs only", path, exc)
        typed = model
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*typed.graph.value_info, *typed.graph.output, *typed.graph.input]}
    present = {o.name for o in model.graph.output}
    eligible = []
    for node in model.graph.node:
        if node.op_type not in ACTIVATION_OPS or not node.output or not node.output[0]:
            continue
        name = node.output[0]
        elem = types.get(name)
        # A wrongly typed extra output fails the session: only tensors known to be float32 (or the
        # outputs of Conv, which computes in floats only when the model's types are unknown).
        if elem == onnx.TensorProto.FLOAT or (elem is None and node.op_type == "Conv"):
            eligible.append(name)
    tensors = eligible[:max_tensors]
    for name in tensors:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    try:
        data = model.SerializeToString()
    except ValueError as exc:  # protobuf's 2 GiB limit
        raise ValidationError(f"{path} is too large to instrument in memory ({exc})",
                              hint="build without calibration diagnostics") from exc
    return data, tensors, len(eligible) - len(tensors)


def _session(model_bytes: bytes, path: str | Path):
    from trtinfer.runtime.backends.onnxruntime import loader

    loader.import_onnxruntime("calibration diagnostics run ONNX Runtime", hint="pip install 'trtinfer[build]'")
    try:
        return loader.session(model_bytes)
    except Exception as exc:  # ORT raises its own exception types
        raise ValidationError(f"ONNX Runtime cannot load {path} with its activations exposed: {exc}",
                              hint="rebuild the model") from exc


def _run_half(session, x: np.ndarray, tensors: list[str], batch: int, path: str | Path) -> dict[str, _Range]:
    """Stream ``x`` through the session in batches; range statistics per tensor."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValidationError(f"{path} has {len(inputs)} inputs; calibration diagnostics run single-input models")
    fixed = inputs[0].shape[0] if inputs[0].shape else None
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    stats = {name: _Range() for name in tensors}
    for start in range(0, len(x), step):
        chunk = np.ascontiguousarray(x[start:start + step], dtype=np.float32)
        rows = len(chunk)
        if rows < step and step != batch:  # a fixed batch: pad with a repeated row, cut it off after
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - rows, axis=0)])
        try:
            outs = session.run(tensors, {inputs[0].name: chunk})
        except Exception as exc:  # ORT raises its own exception types
            raise ValidationError(f"ONNX Runtime failed on the calibration set with {path}: {exc}",
                                  hint="check that the calibration set fits the model's input") from exc
        for name, out in zip(tensors, outs):
            if out.ndim and out.shape[0] == len(chunk) and rows < len(chunk):
                out = out[:rows]
            stats[name].add(out, len(x), rows)
    return stats


# -- for people -----------------------------------------------------------------------------

def describe_diagnostics(diag: dict[str, Any]) -> list[str]:
    """Short lines for ``trtinfer inspect`` and the build log."""
    lines = []
    cov = diag.get("coverage")
    if isinstance(cov, dict):
        if not cov.get("labelled", True):
            lines.append("calibration images have no labels: class coverage unknown")
        elif "classes" in cov:
            lo, hi = cov.get("min_per_class"), cov.get("max_per_class")
            each = f"{lo} images each" if lo == hi else f"{lo}-{hi} images each"
            line = f"calibration covers {cov.get('covered')}/{cov.get('classes')} classes, {each}"
            missing = list(cov.get("missing") or [])
            if missing:
                line += f"; missing: {', '.join(map(str, missing[:10]))}{' ...' if len(missing) > 10 else ''}"
            lines.append(line)
    rs = diag.get("range_spread")
    if isinstance(rs, dict):
        if "skipped" in rs:
            lines.append(f"activation range spread not measured: {rs['skipped']}")
        elif "median_spread" in rs:
            halves = rs.get("halves") or ["?", "?"]
            worst = rs.get("worst") or []
            where = f" (tensor {worst[0].get('tensor')})" if worst and isinstance(worst[0], dict) else ""
            line = (f"activation ranges of 2 disjoint halves ({halves[0]} + {halves[-1]} images) differ by "
                    f"median {float(rs['median_spread']):.1%}, at most {float(rs.get('max_spread', 0)):.1%}{where}: "
                    f"{rs.get('verdict')}")
            if rs.get("verdict") == VERDICT_TOO_FEW:
                line += " (use more calibration images: --calib-samples)"
            lines.append(line)
            notes = []
            if rs.get("skipped_tensors"):
                notes.append(f"{rs['tensors']} tensors compared, {rs['skipped_tensors']} more left out")
            if rs.get("nonfinite_tensors"):
                notes.append(f"{rs['nonfinite_tensors']} tensors hold NaN or inf")
            if notes:
                lines.append("activation ranges: " + "; ".join(notes))
    return lines
