"""Manifest contract, atomic writes, shared preprocessing and labels: plain code, no GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trtinfer.atomic import StagedDirectories, atomic_file
from trtinfer.errors import ArtifactError, DataError, TrtInferError
from trtinfer.labels import CIFAR10, resolve_labels
from trtinfer.manifest import Manifest, PreprocessSpec, TensorSpec
from trtinfer.preprocess import make_spec, preprocess


def _manifest() -> Manifest:
    return Manifest(name="m", arch="resnet18", num_classes=10, labels=list(CIFAR10), precision="fp32",
                    input=TensorSpec("input", [-1, 3, 32, 32]), output=TensorSpec("logits", [-1, 10]),
                    preprocess=make_spec(32, "cifar10"))


def test_manifest_round_trip_and_file_checks(tmp_path):
    m = _manifest()
    (tmp_path / "model.onnx").write_bytes(b"x" * 100)
    m.record_file(tmp_path, "model.onnx")
    m.write(tmp_path)
    back = Manifest.read(tmp_path)
    assert back.to_dict() == m.to_dict()
    assert back.batch_shape == (3, 32, 32)
    back.verify_files(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"x" * 99)
    with pytest.raises(ArtifactError, match="truncated"):
        back.verify_files(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"y" * 100)
    with pytest.raises(ArtifactError, match="sha256"):
        back.verify_files(tmp_path)
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        back.verify_files(tmp_path)


def test_manifest_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        Manifest.read(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read"):
        Manifest.read(tmp_path)
    data = _manifest().to_dict()
    data["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="schema_version 99"):
        Manifest.read(tmp_path)


def test_staged_directories_all_or_nothing(tmp_path):
    with StagedDirectories() as staged:
        a = staged.stage(tmp_path / "a")
        (a / "f").write_text("1")
        staged.stage(tmp_path / "b")
        # leaving without commit discards everything
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with StagedDirectories() as staged:
        (staged.stage(tmp_path / "a") / "f").write_text("2")
        staged.commit()
    assert (tmp_path / "a" / "f").read_text() == "2"
    with pytest.raises(ArtifactError, match="already exists"):
        StagedDirectories().stage(tmp_path / "a")
    with StagedDirectories(overwrite=True) as staged:
        (staged.stage(tmp_path / "a") / "g").write_text("3")
        staged.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["g"]


def test_atomic_file_leaves_old_content_on_error(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as f:
            f.write(b"new")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_preprocess_matches_hand_computation():
    spec = make_spec(32, "cifar10")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    x = preprocess(imgs, spec)
    want = ((imgs / 255.0 - np.array(spec.mean)) / np.array(spec.std)).transpose(0, 3, 1, 2)
    assert x.dtype == np.float32 and x.shape == (4, 3, 32, 32) and x.flags.c_contiguous
    np.testing.assert_allclose(x, want, atol=1e-5)
    # a list of HWC arrays, grayscale and RGBA are converted the same way
    assert np.array_equal(preprocess(list(imgs), spec), x)
    gray = preprocess(imgs[0, :, :, 0], spec)
    assert gray.shape == (1, 3, 32, 32)
    rgba = np.concatenate([imgs[:1], np.full((1, 32, 32, 1), 255, np.uint8)], axis=3)[0]
    np.testing.assert_array_equal(preprocess(rgba, spec), x[:1])
    assert preprocess([], spec).shape == (0, 3, 32, 32)


def test_preprocess_resizes_with_pil():
    from PIL import Image

    spec = make_spec(64, "imagenet", resize=72)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert preprocess(img, spec).shape == (1, 3, 64, 64)
    assert preprocess(img.convert("L"), spec).shape == (1, 3, 64, 64)


def test_preprocess_rejects_bad_images():
    spec = make_spec(32, "none")
    with pytest.raises(DataError, match="uint8"):
        preprocess(np.zeros((32, 32, 3), np.float32), spec)
    with pytest.raises(DataError, match="HWC"):
        preprocess(np.zeros((3, 32, 32, 2), np.uint8)[0], spec)


def test_make_spec_errors():
    with pytest.raises(TrtInferError, match="go together"):
        make_spec(32, None, mean=(0.5, 0.5, 0.5))
    with pytest.raises(TrtInferError, match="unknown normalization"):
        make_spec(32, "bogus")
    with pytest.raises(TrtInferError, match="positive"):
        make_spec(32, None, mean=(0, 0, 0), std=(1, 0, 1))
    spec = make_spec(224, None, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert spec.normalize == "custom" and spec.resize == 224 and isinstance(spec, PreprocessSpec)


def test_labels(tmp_path):
    assert resolve_labels(None, 10) == CIFAR10
    assert len(resolve_labels("cifar100", 100)) == 100
    assert resolve_labels(None, 3) == ["class_0", "class_1", "class_2"]
    with pytest.raises(TrtInferError, match="has 10 names but the model has 5"):
        resolve_labels("cifar10", 5)
    with pytest.raises(TrtInferError, match="not cifar10"):
        resolve_labels(str(tmp_path / "missing.txt"), 3)
