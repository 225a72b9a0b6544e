"""trtinfer/pixels.py is the one preprocessing: the training reader, the calibration and evaluation readers and
serving give identical tensors for the same file, whatever its mode (16-bit grayscale, palette with and without
transparency, RGBA, LA, CMYK, and an 8-bit RGB control)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trtinfer.calibration.calibset import make_calibration_set, make_eval_set
from trtinfer.calibration.sources import decode_image, load_labeled
from trtinfer.preprocess import decode_image_bytes, make_spec, preprocess

torch = pytest.importorskip("torch")

SPEC = make_spec(16, "imagenet", resize=18)  # every image is resized and cropped too


def _files(root: Path) -> list[Path]:
    """One 28x20 picture saved in each mode, in two class folders."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    gray16 = rng.integers(0, 65536, (20, 28), dtype=np.uint16)
    gray16[0, 0] = 40000  # 40000 / 257 -> 156, not 255
    alpha = rng.integers(0, 256, (20, 28), dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    saved = [("a/rgb.png", base, {}), ("a/gray16.png", Image.fromarray(gray16), {}),
             ("a/palette.png", base.convert("P"), {}), ("b/palette-transparent.png", base.convert("P"),
                                                         {"transparency": 3}),
             ("b/rgba.png", rgba, {}), ("b/la.png", rgba.convert("LA"), {}), ("b/cmyk.jpg", base.convert("CMYK"), {})]
    paths = []
    for name, image, options in saved:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **options)
        paths.append(path)
    return paths


def test_every_reader_gives_the_tensors_serving_gives(tmp_path: Path):
    from trtinfer.training.data import batches

    paths = _files(tmp_path / "data")
    modes = {p.name: Image.open(p).mode for p in paths}
    assert modes == {"rgb.png": "RGB", "gray16.png": "I;16", "palette.png": "P", "palette-transparent.png": "P",
                     "rgba.png": "RGBA", "la.png": "LA", "cmyk.jpg": "CMYK"}
    assert "transparency" in Image.open(paths[3]).info
    served = {p: preprocess([decode_image_bytes(p.read_bytes())], SPEC)[0] for p in paths}

    data = load_labeled(tmp_path / "data", "train")
    files = list(data.images.paths)
    assert sorted(files) == sorted(paths)
    [(x, _)] = list(batches(data, SPEC, 64, None))
    readers = {"training": dict(zip(files, x.numpy()))}
    calib = make_calibration_set(tmp_path / "data", SPEC, samples=len(paths), seed=0)
    readers["calibration"] = {files[i]: row for i, row in zip(calib.indices, calib.x)}
    evaluation = make_eval_set(tmp_path / "data", SPEC)
    readers["evaluation"] = {files[i]: row for i, row in zip(evaluation.indices, evaluation.x)}
    for reader, tensors in readers.items():
        assert sorted(tensors) == sorted(paths), reader
        differ = [p.name for p in paths if not np.array_equal(tensors[p], served[p])]
        assert differ == [], f"the {reader} reader and serving preprocess {differ} differently"
    assert decode_image(paths[1])[0, 0].tolist() == [156, 156, 156]  # 16-bit is scaled, as served, not clipped
