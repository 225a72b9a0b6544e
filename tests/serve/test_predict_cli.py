"""`trtinfer predict ARTIFACT IMAGE...`: real image files of every mode a user may have, through the runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import trtinfer
from trtinfer.cli import main
from trtinfer.preprocess import decode_image_bytes


@pytest.fixture
def image_files(tmp_path, cifar_images):
    """One real CIFAR row saved as RGB PNG, L PNG, RGBA PNG, palette PNG, CMYK JPEG, WebP, and a 16-bit PNG."""
    base = Image.fromarray(np.kron(cifar_images[0], np.ones((2, 2, 1), np.uint8)))  # 64x64: a resize too
    files = []
    for mode, fmt in [("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("RGB", "WEBP")]:
        path = tmp_path / f"cifar-{mode}.{fmt.lower()}"
        base.convert(mode).save(path, fmt)
        files.append(path)
    path = tmp_path / "cifar-16bit.png"
    Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257).save(path)
    files.append(path)
    return files


def test_predict_every_mode_as_the_runtime_does(tiny_served, image_files, capsys):
    assert main(["predict", str(tiny_served), *map(str, image_files), "--json", "--top-k", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["model"] == "tiny" and len(document["images"]) == len(image_files)
    with trtinfer.load(tiny_served) as model:
        expected = model.predict([decode_image_bytes(p.read_bytes()) for p in image_files], top_k=2)
    for entry, want in zip(document["images"], expected):
        assert [p["label"] for p in entry["predictions"]] == [label for label, _ in want]
        np.testing.assert_allclose([p["probability"] for p in entry["predictions"]], [p for _, p in want], atol=1e-5)
    # 16-bit is scaled to 8 bits, not clipped: it classifies like its 8-bit twin
    assert document["images"][-1]["predictions"][0]["label"] == document["images"][1]["predictions"][0]["label"]
    assert main(["predict", str(tiny_served), str(image_files[0])]) == 0
    assert capsys.readouterr().out.startswith(f"{image_files[0]}: ")


def test_predict_refuses_what_is_not_an_image(tiny_served, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["predict", str(tiny_served), str(text)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {text}: ") and "JPEG, PNG or WebP" in err and err.count("\n") == 1
    assert main(["predict", str(tiny_served), str(tmp_path / "missing.png")]) == 1
    assert "cannot read" in capsys.readouterr().err
