"""calibration/sources.py and calibration/calibset.py on the real CIFAR rows, image folders and arrays."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from trtinfer.calibration.calibset import (CalibrationSet, check_matches, draw_indices, load_calibration_set,
                                           make_calibration_set, make_eval_set, spec_differences)
from trtinfer.calibration.cifar import LabeledImages
from trtinfer.calibration.sources import ImageFiles, empty_classes, load_labeled
from trtinfer.errors import DataError
from trtinfer.manifest import Manifest, TensorSpec
from trtinfer.preprocess import make_spec, preprocess

SPEC = make_spec(32, "cifar10")


@pytest.fixture(scope="module")
def cifar_train(cifar_dir: Path) -> LabeledImages:
    return load_labeled(cifar_dir, "train")


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str]) -> Path:
    from PIL import Image

    for i, (img, y) in enumerate(zip(images, labels)):
        folder = root / names[int(y)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


# -- sources ----------------------------------------------------------------------------------

def test_cifar_folder_or_parent(cifar_root: Path, cifar_dir: Path):
    a, b = load_labeled(cifar_root, "train"), load_labeled(cifar_dir, "train")
    assert len(a) == len(b) == 4660
    assert a.images.shape == (4660, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.source == b.source and a.split == "train"
    test = load_labeled(cifar_root, "test")
    assert len(test) == 846 and test.split == "test" and test.class_names[0] == "airplane"


def test_image_folder_with_splits(tmp_path: Path, cifar_train: LabeledImages):
    names = cifar_train.class_names
    rows = np.concatenate([np.flatnonzero(cifar_train.labels == c)[:3] for c in range(3)])
    write_image_folder(tmp_path / "train", cifar_train.images[rows], cifar_train.labels[rows], names)
    write_image_folder(tmp_path / "val", cifar_train.images[rows[:4]], cifar_train.labels[rows[:4]], names)
    train = load_labeled(tmp_path, "train")
    assert isinstance(train.images, ImageFiles) and len(train) == 9 and train.split == "train"
    assert train.class_names == sorted(names[:3])
    decoded = train.images[np.arange(len(train))]
    np.testing.assert_array_equal(np.stack(decoded), cifar_train.images[rows])  # classes 0-2 sort alphabetically
    test = load_labeled(tmp_path, "test")  # val/ stands in for test/
    assert len(test) == 4 and test.split == "test"
    assert empty_classes(test) == ["bird"]  # val/ holds 3 airplanes and 1 automobile


def test_image_folder_converts_grayscale_and_odd_sizes(tmp_path: Path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.full((40, 50), 128, np.uint8), mode="L").save(tmp_path / "a" / "gray.png")
    Image.fromarray(np.zeros((20, 30, 4), np.uint8), mode="RGBA").save(tmp_path / "b" / "rgba.png")
    data = load_labeled(tmp_path, "train")
    assert data.split == "all"
    images = data.images[np.array([0, 1])]
    assert images[0].shape == (40, 50, 3) and images[1].shape == (20, 30, 3)
    x = preprocess(images, SPEC)
    assert x.shape == (2, 3, 32, 32)


def test_bad_sources(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_labeled(tmp_path / "missing", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_labeled(tmp_path / "empty", "train")
    loose = tmp_path / "loose"
    loose.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(loose / "x.png")
    with pytest.raises(DataError, match="no class subfolders"):
        load_labeled(loose, "train")
    nofiles = tmp_path / "nofiles"
    (nofiles / "cat").mkdir(parents=True)
    (nofiles / "cat" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="no images"):
        load_labeled(nofiles, "train")
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(DataError, match="not .npy or .npz"):
        load_labeled(tmp_path / "data.csv", "train")


def test_corrupt_image_names_the_file(tmp_path: Path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = load_labeled(tmp_path, "train")  # decoding is lazy
    with pytest.raises(DataError, match="broken.png"):
        make_calibration_set(data, SPEC, samples=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(DataError, match="permission"):
            load_labeled(locked, "train")
    finally:
        locked.chmod(0o755)


def test_arrays(tmp_path: Path, cifar_train: LabeledImages):
    images = cifar_train.images[:20]
    np.save(tmp_path / "ok.npy", images)
    data = load_labeled(tmp_path / "ok.npy", "train")
    assert len(data) == 20 and (data.labels == -1).all()
    np.savez(tmp_path / "ok.npz", x=images, y=cifar_train.labels[:20])
    data = load_labeled(tmp_path / "ok.npz", "test")
    np.testing.assert_array_equal(data.labels, cifar_train.labels[:20])
    np.savez(tmp_path / "named.npz", images=images, labels=np.zeros(20, np.int64), class_names=np.array(["cat", "dog"]))
    assert load_labeled(tmp_path / "named.npz", "train").class_names == ["cat", "dog"]


@pytest.mark.parametrize("array, match", [
    (np.zeros((4, 32, 32, 3), np.float32), "raw uint8"),
    (np.zeros((4, 3, 32, 32), np.uint8), "channels-first"),
    (np.zeros((4, 32, 32, 1), np.uint8), "1 channels"),
    (np.zeros((4, 32, 32, 4), np.uint8), "4 channels"),
    (np.zeros((32, 32, 3), np.uint8), "N x H x W x 3"),
    (np.zeros((0, 32, 32, 3), np.uint8), "no images"),
])
def test_bad_arrays(tmp_path: Path, array: np.ndarray, match: str):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=match):
        load_labeled(tmp_path / "bad.npy", "train")


def test_bad_npz(tmp_path: Path):
    np.savez(tmp_path / "nokeys.npz", pixels=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="no 'images'"):
        load_labeled(tmp_path / "nokeys.npz", "train")
    np.savez(tmp_path / "badlabels.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        load_labeled(tmp_path / "badlabels.npz", "train")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="cannot read"):
        load_labeled(tmp_path / "garbage.npz", "train")


# -- calibration sets -------------------------------------------------------------------------

def test_balanced_deterministic_draw(cifar_root: Path, cifar_train: LabeledImages):
    calib = make_calibration_set(cifar_root, SPEC, samples=512, seed=0)
    assert len(calib) == 512 and calib.x.shape == (512, 3, 32, 32) and calib.x.dtype == np.float32
    counts = np.bincount(calib.labels, minlength=10)
    assert counts.min() >= 51 and counts.max() <= 52 and calib.balanced
    assert np.all(np.diff(calib.indices) > 0) and calib.split == "train"
    # one preprocessing implementation: identical to what serving computes for the same images
    np.testing.assert_array_equal(calib.x, preprocess(cifar_train.images[calib.indices], SPEC))
    np.testing.assert_array_equal(calib.labels, cifar_train.labels[calib.indices])
    again = make_calibration_set(cifar_root / "cifar-10-batches-py", SPEC, samples=512, seed=0)
    np.testing.assert_array_equal(again.indices, calib.indices)
    other = make_calibration_set(cifar_root, SPEC, samples=512, seed=1)
    assert not np.array_equal(other.indices, calib.indices)


def test_quota_fills_from_other_classes():
    labels = np.array([0] * 2 + [1] * 50 + [2] * 50)
    idx, balanced = draw_indices(labels, 30, seed=3)
    counts = np.bincount(labels[idx], minlength=3)
    assert balanced and counts[0] == 2 and counts.sum() == 30 and abs(int(counts[1]) - int(counts[2])) <= 1


def test_saved_bytes_are_reproducible(tmp_path: Path, cifar_root: Path):
    a = make_calibration_set(cifar_root, SPEC, samples=64, seed=7).save(tmp_path / "a.npz")
    b = make_calibration_set(cifar_root, SPEC, samples=64, seed=7).save(tmp_path / "b.npz")
    assert a.read_bytes() == b.read_bytes()
    loaded = load_calibration_set(a)
    assert len(loaded) == 64 and loaded.seed == 7 and loaded.spec == SPEC
    meta = loaded.manifest()
    assert meta["count"] == 64 and len(meta["indices"]) == 64 and meta["transform"]["mean"] == SPEC.mean
    assert meta["source"].endswith("cifar-10-batches-py") and meta["sha256"] == loaded.sha256
    with np.load(a) as npz:  # a plain npz any numpy reads
        assert set(npz.files) == {"x", "labels", "indices", "manifest"}


def test_tampered_set_is_refused(tmp_path: Path, cifar_root: Path):
    path = make_calibration_set(cifar_root, SPEC, samples=16).save(tmp_path / "c.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["x"][0, 0, 0, 0] += 1.0
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(DataError, match="sha256"):
        load_calibration_set(tmp_path / "tampered.npz")
    np.savez(tmp_path / "images.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="not a trtinfer calibration set"):
        load_calibration_set(tmp_path / "images.npz")
    with pytest.raises(DataError, match="calibration set"):  # and the reverse mix-up
        load_labeled(path, "train")


def test_fewer_images_than_asked(cifar_root: Path):
    with pytest.raises(DataError, match="4660 images .* fewer than the 5000"):
        make_calibration_set(cifar_root, SPEC, samples=5000)
    with pytest.raises(DataError, match="at least 1"):
        make_calibration_set(cifar_root, SPEC, samples=0)


def test_class_without_images_warns(tmp_path: Path, cifar_train: LabeledImages, caplog):
    keep = cifar_train.labels != 3
    np.savez(tmp_path / "no_cats.npz", images=cifar_train.images[keep][:200], labels=cifar_train.labels[keep][:200],
             class_names=np.array(cifar_train.class_names))
    with caplog.at_level(logging.WARNING):
        calib = make_calibration_set(tmp_path / "no_cats.npz", SPEC, samples=90)
    assert any("cat" in w and "no images" in w for w in calib.warnings)
    assert "cat" in caplog.text
    assert 3 not in set(calib.labels.tolist()) and len(calib) == 90
    assert calib.manifest()["warnings"] == calib.warnings


def test_unlabeled_and_small_sets_warn(tmp_path: Path, cifar_train: LabeledImages):
    np.save(tmp_path / "raw.npy", cifar_train.images[:100])
    calib = make_calibration_set(tmp_path / "raw.npy", SPEC, samples=10, seed=0)
    assert not calib.balanced
    assert any("not class-balanced" in w for w in calib.warnings)
    assert any("only 10 calibration images" in w for w in calib.warnings)


def test_upscaling_warns(cifar_root: Path):
    calib = make_calibration_set(cifar_root, make_spec(224, "imagenet"), samples=4)
    assert calib.x.shape == (4, 3, 224, 224)
    assert any("upscaled" in w for w in calib.warnings)


# -- matching the model ---------------------------------------------------------------------

def _manifest(spec, shape=(-1, 3, 32, 32)) -> Manifest:
    return Manifest(name="m", arch="resnet18", num_classes=10, labels=[str(i) for i in range(10)], precision="int8",
                    input=TensorSpec("input", list(shape)), output=TensorSpec("logits", [-1, 10]), preprocess=spec)


def test_check_matches(cifar_root: Path):
    calib = make_calibration_set(cifar_root, SPEC, samples=64)
    assert check_matches(calib, _manifest(SPEC)) == []
    assert check_matches(calib, make_spec(32, "cifar10"), (-1, 3, 32, 32)) == []
    with pytest.raises(DataError, match="preprocessed differently.*mean"):
        check_matches(calib, _manifest(make_spec(32, "imagenet")))
    with pytest.raises(DataError, match="input_size"):
        check_matches(calib, _manifest(make_spec(64, "cifar10"), (-1, 3, 64, 64)))
    with pytest.raises(DataError, match="1 channels"):
        check_matches(calib, _manifest(SPEC, (-1, 1, 32, 32)))
    with pytest.raises(DataError, match="model's input is 28x28"):
        check_matches(calib, _manifest(SPEC, (-1, 3, 28, 28)))
    small = CalibrationSet(x=calib.x[:8], labels=calib.labels[:8], indices=calib.indices[:8], spec=SPEC,
                           source=calib.source, source_kind="cifar10", split="train", seed=0,
                           class_names=calib.class_names, balanced=True)
    assert any("only 8" in w for w in check_matches(small, _manifest(SPEC)))


def test_make_calibration_set_checks_input_shape(cifar_root: Path):
    with pytest.raises(DataError, match="channels"):
        make_calibration_set(cifar_root, SPEC, samples=4, input_shape=(-1, 1, 32, 32))
    with pytest.raises(DataError, match="--input-size 64"):
        make_calibration_set(cifar_root, SPEC, samples=4, input_shape=(1, 3, 64, 64))


def test_spec_differences_ignores_display_name():
    a = make_spec(32, "cifar10")
    b = make_spec(32, None, mean=a.mean, std=a.std)
    assert b.normalize == "custom" and spec_differences(a, b) == {}
    assert set(spec_differences(a, make_spec(32, "cifar10", resize=36))) == {"resize"}


# -- evaluation sets ------------------------------------------------------------------------

def test_eval_set_from_test_split(cifar_root: Path):
    calib = make_calibration_set(cifar_root, SPEC, samples=64)
    ev = make_eval_set(cifar_root, SPEC, exclude=calib)
    assert len(ev) == 846 and ev.split == "test" and ev.x.shape == (846, 3, 32, 32)
    test = load_labeled(cifar_root, "test")
    np.testing.assert_array_equal(ev.labels, test.labels)
    np.testing.assert_array_equal(ev.x, preprocess(test.images, SPEC))
    limited = make_eval_set(cifar_root, SPEC, limit=100)
    assert len(limited) == 100 and np.bincount(limited.labels).min() == 10


def test_eval_never_reuses_calibration_rows(tmp_path: Path, cifar_train: LabeledImages):
    np.savez(tmp_path / "rows.npz", images=cifar_train.images[:300], labels=cifar_train.labels[:300])
    calib = make_calibration_set(tmp_path / "rows.npz", SPEC, samples=100)
    ev = make_eval_set(tmp_path / "rows.npz", SPEC, exclude=calib)
    assert len(ev) == 200 and not set(ev.indices.tolist()) & set(calib.indices.tolist())
    assert any("no test/" in w for w in ev.warnings)


def test_eval_needs_labels(tmp_path: Path):
    np.save(tmp_path / "raw.npy", np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="no labels"):
        make_eval_set(tmp_path / "raw.npy", SPEC)


def test_eval_labels_matched_by_name(tmp_path: Path, cifar_train: LabeledImages):
    names = cifar_train.class_names
    rows = np.concatenate([np.flatnonzero(cifar_train.labels == c)[:2] for c in (1, 9)])  # automobile, truck
    write_image_folder(tmp_path / "test", cifar_train.images[rows], cifar_train.labels[rows], names)
    (tmp_path / "train").mkdir()
    ev = make_eval_set(tmp_path, SPEC, labels=names)  # folder classes: automobile=0, truck=1
    assert sorted(ev.labels.tolist()) == [1, 1, 9, 9]
    with pytest.raises(DataError, match="labels up to 9 but the model has 5"):
        make_eval_set(cifar_train, SPEC, labels=names[:5])
