"""Calibration sets (train split, class-balanced, seeded) and evaluation sets (test split).

Both are preprocessed with :func:`trtinfer.preprocess.preprocess`, the implementation serving uses,
so calibration, evaluation and serving see identical tensors for identical images.

A calibration set saves as a ``.npz`` whose bytes depend only on its inputs and seed: arrays ``x``
(float32 NCHW), ``labels``, ``indices`` and ``manifest`` (a JSON string: source, split, indices'
count, transform, seed, sha256 of ``x``). Zip timestamps are fixed, so two runs give the same file.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer.atomic import atomic_file
from trtinfer.errors import DataError
from trtinfer.files import check_regular
from trtinfer.hashing import sha256_bytes
from trtinfer.manifest import Manifest, PreprocessSpec
from trtinfer.preprocess import preprocess
from trtinfer.defaults import CALIB_SAMPLES, SEED

from .cifar import LabeledImages
from .sources import UNSPLIT, class_counts, load_labeled, source_kind, take

log = logging.getLogger(__name__)

CALIB_FORMAT = "trtinfer-calibration-set"
CALIB_FORMAT_VERSION = 1
MIN_RECOMMENDED_SAMPLES = 64  # fewer images than this: a warning (INT8 ranges get noisy)
MAX_UPSCALE = 2.0  # source images smaller than resize / MAX_UPSCALE: a warning
PREPROCESS_CHUNK = 256
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same arrays give the same bytes
# PreprocessSpec fields that change the tensors (``normalize`` is only a display name).
_TENSOR_FIELDS = ("input_size", "resize", "mean", "std", "interpolation", "scale", "layout", "color")

Progress = Callable[[int, int], None]  # progress(done, total)


# -- shared helpers -------------------------------------------------------------------------

def _as_source(data: str | Path | LabeledImages, split: str) -> LabeledImages:
    return data if isinstance(data, LabeledImages) else load_labeled(data, split)


def _min_side(images) -> int:
    """Smallest image side of an array source; 0 for image files (checked as they are decoded)."""
    return int(min(images.shape[1:3])) if isinstance(images, np.ndarray) else 0


def _preprocess_rows(data: LabeledImages, rows: np.ndarray, spec: PreprocessSpec,
                     progress: Progress | None, warnings: list[str]) -> np.ndarray:
    """Preprocess ``rows`` of ``data`` in chunks (bounded memory for image folders), with progress."""
    x = np.empty((len(rows), 3, spec.input_size, spec.input_size), dtype=np.float32)
    smallest = _min_side(data.images) or None
    for start in range(0, len(rows), PREPROCESS_CHUNK):
        chunk = take(data.images, rows[start:start + PREPROCESS_CHUNK])
        if isinstance(chunk, np.ndarray):
            x[start:start + len(chunk)] = preprocess(chunk, spec)
        else:  # image files: one decoded at its native size at a time, then resized
            for offset in range(len(chunk)):
                image = chunk[offset]
                smallest = min(smallest or image.shape[0], *image.shape[:2])
                x[start + offset] = preprocess([image], spec)[0]
        if progress is not None:
            progress(min(start + PREPROCESS_CHUNK, len(rows)), len(rows))
    if smallest and smallest * MAX_UPSCALE < spec.resize:
        _warn(warnings, f"images in {data.source} are as small as {smallest}px and are upscaled to {spec.resize}px "
                        f"for this model's input; check that these are the images the model was trained on")
    return x


def _warn(warnings: list[str], message: str) -> None:
    log.warning(message)
    warnings.append(message)


def spec_to_dict(spec: PreprocessSpec) -> dict[str, Any]:
    return asdict(spec)


def spec_differences(a: PreprocessSpec | dict[str, Any], b: PreprocessSpec | dict[str, Any]) -> dict[str, tuple]:
    """Fields whose values would give different tensors: {field: (a value, b value)}."""
    da = a if isinstance(a, dict) else asdict(a)
    db = b if isinstance(b, dict) else asdict(b)
    diffs = {}
    for key in _TENSOR_FIELDS:
        va, vb = da.get(key), db.get(key)
        if isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)) and len(va) == len(vb):
            if all(math.isclose(float(p), float(q), rel_tol=0, abs_tol=1e-6) for p, q in zip(va, vb)):
                continue
        elif isinstance(va, float) and isinstance(vb, float) and math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-12):
            continue
        elif va == vb:
            continue
        diffs[key] = (va, vb)
    return diffs


# -- the class-balanced draw ----------------------------------------------------------------

def _balanced_quotas(counts: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Images to take per class: as equal as possible, capped by what each class has."""
    quotas = np.zeros(len(counts), dtype=np.int64)
    remaining = samples
    open_classes = [int(c) for c in rng.permutation(np.flatnonzero(counts > 0))]
    while remaining > 0 and open_classes:
        share, extra = divmod(remaining, len(open_classes))
        still_open = []
        for rank, c in enumerate(open_classes):
            want = share + (1 if rank < extra else 0)
            got = min(want, int(counts[c] - quotas[c]))
            quotas[c] += got
            remaining -= got
            if quotas[c] < counts[c]:
                still_open.append(c)
        open_classes = still_open
    return quotas


def draw_indices(labels: np.ndarray, samples: int, seed: int) -> tuple[np.ndarray, bool]:
    """Deterministic, class-balanced choice of ``samples`` rows (sorted); (indices, balanced)."""
    rng = np.random.default_rng(seed)
    if len(labels) == 0 or labels.max() < 0:  # unlabeled: a plain seeded draw
        return np.sort(rng.permutation(len(labels))[:samples]), False
    counts = np.bincount(labels[labels >= 0])
    quotas = _balanced_quotas(counts, samples, rng)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in enumerate(quotas) if q]
    return np.sort(np.concatenate(chosen)).astype(np.int64), True


# -- calibration sets -----------------------------------------------------------------------

@dataclass
class CalibrationSet:
    """Preprocessed calibration tensors plus where they came from."""

    x: np.ndarray  # float32 NCHW, preprocessed with ``spec``
    labels: np.ndarray  # int64, -1 where the source had no labels
    indices: np.ndarray  # rows of the source split
    spec: PreprocessSpec
    source: str
    source_kind: str
    split: str
    seed: int
    class_names: list[str]
    balanced: bool
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    path: str | None = None  # where it was loaded from / saved to

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = tensor_sha256(self.x)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def manifest(self) -> dict[str, Any]:
        """The small manifest embedded in the .npz (JSON)."""
        present = sorted({int(v) for v in self.labels if v >= 0})
        return {
            "format": CALIB_FORMAT,
            "format_version": CALIB_FORMAT_VERSION,
            "count": len(self),
            "shape": list(self.x.shape),
            "dtype": str(self.x.dtype),
            "sha256": self.sha256,
            "source": self.source,
            "source_kind": self.source_kind,
            "split": self.split,
            "seed": self.seed,
            "balanced": self.balanced,
            "class_names": self.class_names,
            "per_class": {self.class_names[c]: int((self.labels == c).sum()) for c in present}
            if self.class_names else {},
            "transform": spec_to_dict(self.spec),
            "indices": [int(i) for i in self.indices],
            "warnings": list(self.warnings),
        }

    def summary(self) -> dict[str, Any]:
        """What an artifact's manifest records about its calibration (everything but the indices)."""
        info = {k: v for k, v in self.manifest().items() if k not in ("indices", "class_names", "format")}
        if self.path:
            info["file"] = self.path
        return info

    def save(self, path: str | Path) -> Path:
        """Write atomically; the same set always gives the same bytes."""
        path = Path(path)
        if path.suffix != ".npz":
            raise DataError(f"calibration sets are .npz files, not {path.name}", hint="use -o calib.npz")
        arrays: dict[str, np.ndarray] = {
            "x": np.ascontiguousarray(self.x, dtype=np.float32),
            "labels": np.asarray(self.labels, dtype=np.int64),
            "indices": np.asarray(self.indices, dtype=np.int64),
            "manifest": np.array(json.dumps(self.manifest(), sort_keys=True, separators=(",", ":"))),
        }
        with atomic_file(path, "wb") as f:
            _write_npz(f, arrays)
        self.path = str(path)
        return path


def _write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """np.savez without its wall-clock zip timestamps."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.create_system = 3
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, buf.getvalue())


def tensor_sha256(x: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(x, dtype=np.float32).tobytes())


def make_calibration_set(data: str | Path | LabeledImages, spec: PreprocessSpec, samples: int = CALIB_SAMPLES,
                         seed: int = SEED, progress: Progress | None = None,
                         input_shape: list[int] | tuple[int, ...] | None = None) -> CalibrationSet:
    """Draw ``samples`` images from the *train* split, class-balanced, deterministic for ``seed``.

    Raises DataError for fewer images than asked; warns (and records) when a class has no images,
    when the set is small, or when images are upscaled a lot. With ``input_shape`` (the model's
    input, batch first), the set must fit it.
    """
    if samples < 1:
        raise DataError(f"--samples must be at least 1, got {samples}", hint=f"the default is {CALIB_SAMPLES}")
    if input_shape is not None:
        _check_model_input(spec, input_shape)
    src = _as_source(data, "train")
    warnings: list[str] = []
    if src.split == UNSPLIT:
        log.info("%s has no train/test split: drawing from all its rows", src.source)
    if len(src) < samples:
        raise DataError(f"{src.source} has {len(src)} images in its {src.split} split, fewer than the {samples} asked for",
                        hint=f"pass --samples {len(src)} or fewer, or add images")
    counts = class_counts(src)
    missing = [src.class_names[i] for i in np.flatnonzero(counts == 0)] if len(counts) else []
    if missing:
        _warn(warnings, f"{len(missing)} of {len(counts)} classes have no images in {src.source} "
                        f"({src.split} split): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; "
                        "the calibration set is balanced over the others")
    indices, balanced = draw_indices(src.labels, samples, seed)
    if not balanced:
        _warn(warnings, f"{src.source} has no labels: calibration rows are a seeded random draw, not class-balanced")
    if samples < MIN_RECOMMENDED_SAMPLES:
        _warn(warnings, f"only {samples} calibration images; INT8 ranges from fewer than "
                        f"{MIN_RECOMMENDED_SAMPLES} are often poor (default {CALIB_SAMPLES})")
    x = _preprocess_rows(src, indices, spec, progress, warnings)
    calib = CalibrationSet(x=x, labels=src.labels[indices].astype(np.int64), indices=indices, spec=spec,
                           source=src.source, source_kind=_kind(src), split=src.split, seed=seed,
                           class_names=list(src.class_names), balanced=balanced, warnings=warnings)
    if input_shape is not None:
        check_matches(calib, spec, input_shape)
    return calib


def _kind(src: LabeledImages) -> str:
    try:
        return source_kind(src.source)
    except OSError:
        return "arrays"


def load_calibration_set(path: str | Path) -> CalibrationSet:
    """Read a calibration .npz and verify its tensors against the sha256 in its manifest."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"calibration set not found: {path}", hint="make one with `trtinfer calib make`")
    check_regular(path, "calibration set", DataError)  # a FIFO or device: one line, not "not found"
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            if not {"x", "labels", "indices", "manifest"} <= files:
                raise DataError(f"{path} is not a trtinfer calibration set (it holds {sorted(files)})",
                                hint="make one with `trtinfer calib make`, or pass raw images with --calib-data")
            x, labels, indices = npz["x"], npz["labels"], npz["indices"]
            meta = json.loads(str(npz["manifest"]))
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read calibration set {path}: {exc}", hint="make it again with `trtinfer calib make`") from exc
    if meta.get("format") != CALIB_FORMAT or meta.get("format_version") != CALIB_FORMAT_VERSION:
        raise DataError(f"{path} has calibration format {meta.get('format')!r} v{meta.get('format_version')!r}; "
                        f"this trtinfer reads {CALIB_FORMAT} v{CALIB_FORMAT_VERSION}",
                        hint="make it again with this trtinfer (`trtinfer calib make`)")
    digest = tensor_sha256(x)
    if x.dtype != np.float32 or list(x.shape) != meta.get("shape") or digest != meta.get("sha256"):
        raise DataError(f"{path}: its tensors do not match the sha256 in its manifest (modified or truncated)",
                        hint="make it again with `trtinfer calib make`")
    if len(labels) != len(x) or len(indices) != len(x):
        raise DataError(f"{path}: {len(x)} tensors but {len(labels)} labels and {len(indices)} indices")
    try:
        spec = PreprocessSpec(**meta["transform"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed transform in its manifest ({exc})") from exc
    return CalibrationSet(x=x, labels=labels, indices=indices, spec=spec, source=meta.get("source", ""),
                          source_kind=meta.get("source_kind", ""), split=meta.get("split", ""),
                          seed=int(meta.get("seed", 0)), class_names=list(meta.get("class_names", [])),
                          balanced=bool(meta.get("balanced", False)), sha256=digest,
                          warnings=list(meta.get("warnings", [])), path=str(path))


def _check_model_input(spec: PreprocessSpec, input_shape) -> None:
    shape = list(input_shape)
    if len(shape) != 4:
        raise DataError(f"the model takes a {len(shape)}-D input {shape}; calibration data is images (N, 3, H, W)")
    if shape[1] not in (-1, None) and shape[1] != 3:
        raise DataError(f"the model's input has {shape[1]} channels (shape {shape}); image data is RGB (3 channels)",
                        hint="trtinfer calibrates 3-channel RGB classifiers")
    hw = [d for d in shape[2:] if d not in (-1, None)]
    if hw and any(d != spec.input_size for d in hw):
        raise DataError(f"the model's input is {shape[2]}x{shape[3]} but the preprocessing makes "
                        f"{spec.input_size}x{spec.input_size}",
                        hint=f"use --input-size {hw[0]}")


def check_matches(calib: CalibrationSet, model: Manifest | PreprocessSpec,
                  input_shape: list[int] | tuple[int, ...] | None = None) -> list[str]:
    """Refuse a calibration set the model would see differently; return warnings worth recording.

    ``model`` is the artifact's Manifest (its preprocessing and input shape) or a PreprocessSpec
    with ``input_shape`` (batch first; -1 for dynamic dimensions).
    """
    if isinstance(model, Manifest):
        spec, input_shape = model.preprocess, (input_shape or model.input.shape)
    else:
        spec = model
    diffs = spec_differences(calib.spec, spec)
    if diffs:
        listed = "; ".join(f"{k}: calibration set {a!r}, model {b!r}" for k, (a, b) in diffs.items())
        where = f" {calib.path}" if calib.path else ""
        raise DataError(f"calibration set{where} was preprocessed differently from the model ({listed})",
                        hint="make it again with the model's --input-size/--normalize (or --mean/--std), "
                             "or pass the images with --calib-data")
    if input_shape is not None:
        _check_model_input(spec, input_shape)
        want = [d for d in list(input_shape)[1:]]
        got = list(calib.x.shape[1:])
        if any(w not in (-1, None) and w != g for w, g in zip(want, got)) or len(want) != len(got):
            raise DataError(f"calibration tensors are {got} but the model takes {want}",
                            hint="make the calibration set with the model's input size")
    warnings: list[str] = []
    if len(calib) < MIN_RECOMMENDED_SAMPLES:
        _warn(warnings, f"the calibration set has only {len(calib)} images (fewer than {MIN_RECOMMENDED_SAMPLES}); "
                        "INT8 ranges may be poor")
    return warnings


# -- evaluation sets ------------------------------------------------------------------------

@dataclass
class EvalSet:
    """Preprocessed labeled test images for the accuracy guard."""

    x: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str
    split: str
    indices: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "split": self.split, "count": len(self),
                "sha256": tensor_sha256(self.x), "warnings": list(self.warnings)}


def make_eval_set(data: str | Path | LabeledImages, spec: PreprocessSpec, exclude: CalibrationSet | None = None,
                  labels: list[str] | None = None, limit: int | None = None, seed: int = SEED,
                  progress: Progress | None = None, split: str = "test") -> EvalSet:
    """Labeled rows of the *test* split (``test/`` or ``val/``), preprocessed like serving.

    ``split="train"`` gives the INT8 build's selection slice instead: train rows minus ``exclude``.

    ``exclude``: the calibration set; its rows are dropped when both come from the same rows (a
    source without a split). ``labels``: the model's class names; eval labels are matched to them
    by name when both have real names. ``limit``: a class-balanced subset of at most this many.
    """
    src = _as_source(data, split)
    warnings: list[str] = []
    if len(src) == 0 or src.labels.max() < 0:
        raise DataError(f"{src.source} has no labels; the accuracy check needs labeled images",
                        hint="pass a CIFAR folder, an image folder with class subfolders, or a .npz with 'labels'")
    rows = np.arange(len(src), dtype=np.int64)
    if src.split == UNSPLIT:
        _warn(warnings, f"{src.source} has no test/ (or val/) split: evaluating on all its rows")
    if exclude is not None and exclude.source == src.source and exclude.split == src.split:
        rows = np.setdiff1d(rows, exclude.indices)
        log.info("dropped %d calibration rows from the evaluation set", len(src) - len(rows))
        if len(rows) == 0:
            raise DataError(f"every row of {src.source} is in the calibration set; nothing is left to evaluate on",
                            hint="pass separate evaluation data with --eval-data, or a source with a test/ split")
    counts = class_counts(src)
    missing = [src.class_names[i] for i in np.flatnonzero(counts == 0)]
    if missing:
        _warn(warnings, f"{len(missing)} classes have no images in {src.source} ({src.split} split): "
                        f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; accuracy covers the others")
    if limit is not None and limit < len(rows):
        picked, _ = draw_indices(src.labels[rows], limit, seed)
        rows = rows[picked]
    y = src.labels[rows].astype(np.int64)
    y = _align_labels(y, list(src.class_names), labels, src.source, warnings)
    x = _preprocess_rows(src, rows, spec, progress, warnings)
    return EvalSet(x=x, labels=y, class_names=list(labels or src.class_names), source=src.source,
                   split=src.split, indices=rows, warnings=warnings)


def _is_placeholder(names: list[str]) -> bool:
    return all(n == f"class_{i}" for i, n in enumerate(names))


def _align_labels(y: np.ndarray, data_names: list[str], model_names: list[str] | None, source: str,
                  warnings: list[str]) -> np.ndarray:
    """Map data label indices onto the model's, by class name where both sides have names."""
    if model_names is None:
        return y
    if int(y.max()) >= len(model_names):
        raise DataError(f"{source} has labels up to {int(y.max())} but the model has {len(model_names)} classes",
                        hint="pass evaluation data for this model's classes")
    if data_names == model_names or _is_placeholder(data_names) or _is_placeholder(model_names):
        return y
    index = {name: i for i, name in enumerate(model_names)}
    present = sorted({int(v) for v in y})
    unknown = [data_names[c] for c in present if data_names[c] not in index]
    if not unknown:
        mapping = np.array([index.get(n, -1) for n in data_names], dtype=np.int64)
        if not np.array_equal(mapping[present], np.asarray(present)):
            log.info("evaluation labels of %s matched to the model's classes by name", source)
        return mapping[y]
    _warn(warnings, f"class names of {source} ({', '.join(unknown[:5])}...) are not the model's; "
                    "labels are matched by index")
    return y
