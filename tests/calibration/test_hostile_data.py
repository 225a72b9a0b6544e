"""Hostile inputs: crafted CIFAR pickles, malformed batches, decompression bombs, broken label files.

Every case must end in one DataError / TrtInferError line naming the file and the fix, never a
traceback, and never run code or decode gigabytes. Hostile files are written to tmp_path; the real
shared CIFAR rows are read in place (never copied into the repository).
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from trtinfer.calibration import sources
from trtinfer.calibration.cifar import _CifarUnpickler, load_cifar
from trtinfer.calibration.sources import MAX_IMAGE_PIXELS, decode_image, load_labeled
from trtinfer.cli import main
from trtinfer.errors import DataError, TrtInferError
from trtinfer.labels import CIFAR10, CIFAR100, MAX_LABEL_FILE_BYTES, resolve_labels

CIFAR_OPTS = ["--input-size", "32", "--normalize", "cifar10", "--no-progress"]


# -- helpers ----------------------------------------------------------------------------------

def _write_cifar10(root: Path, batches: dict[str, bytes], label_names: list[str] = CIFAR10) -> Path:
    """root/cifar-10-batches-py/ with a batches.meta and the given raw batch files; returns root."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": label_names, "num_vis": 3072}, protocol=2))
    for name, payload in batches.items():
        (folder / name).write_bytes(payload)
    return root


def _batch(data, labels, protocol: int = 2, label_key: str = "labels") -> bytes:
    return pickle.dumps({"batch_label": "testing batch 1 of 1", label_key: labels, "data": data,
                         "filenames": [f"img_{i}.png" for i in range(len(labels))]}, protocol=protocol)


def _rows(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3072), dtype=np.uint8)


def _calling(module: str, name: str, *args: str) -> bytes:
    """A protocol-0 pickle of {'data': module.name(*args)}: what a crafted batch would hold.

    Written opcode by opcode so the pickle names exactly ``module.name`` (``pickle.dumps`` would
    write ``posix.system`` for ``os.system``); ``V`` strings take any text without newlines.
    """
    call_args = b"".join(b"V" + a.encode() + b"\n" for a in args)
    return (b"(dVdata\nc" + module.encode() + b"\n" + name.encode() + b"\n(" + call_args + b"tRs.")


def _subprocess_call(argv: list[str]) -> bytes:
    """{'data': subprocess.call([argv...])} as a protocol-0 pickle."""
    items = b"".join(b"V" + a.encode() + b"\na" for a in argv)
    return b"(dVdata\ncsubprocess\ncall\n((l" + items + b"tRs."


def _payloads(marker: Path) -> dict[str, bytes]:
    return {
        "os.system": _calling("os", "system", f"touch {marker}"),
        "builtins.exec": _calling("builtins", "exec", f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": _subprocess_call(["touch", str(marker)]),
    }


def _one_error_line(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


# -- 1. CIFAR pickles cannot run code -----------------------------------------------------------

@pytest.mark.parametrize("refused", ["os.system", "builtins.exec", "subprocess.call"])
def test_crafted_cifar_batch_runs_nothing(tmp_path: Path, refused: str):
    marker = tmp_path / "pwned"
    root = _write_cifar10(tmp_path / "data", {"data_batch_1": _payloads(marker)[refused]})
    with pytest.raises(DataError) as caught:
        load_cifar(root, "train")
    message = str(caught.value)
    assert f"refers to {refused}, which a CIFAR batch never holds" in message
    assert "data_batch_1" in message and "download the official" in message
    assert not marker.exists()


@pytest.mark.parametrize("refused", ["os.system", "builtins.exec", "subprocess.call"])
def test_crafted_cifar_batch_through_calib_make(tmp_path: Path, capsys, refused: str):
    marker = tmp_path / "pwned"
    root = _write_cifar10(tmp_path / "data", {"data_batch_1": _payloads(marker)[refused]})
    out = tmp_path / "c.npz"
    code = main(["calib", "make", "--data", str(root), "--samples", "10", "-o", str(out), *CIFAR_OPTS])
    err = capsys.readouterr().err
    assert code == 1 and refused in err and "data_batch_1" in err
    _one_error_line(err)
    assert not marker.exists() and not out.exists()


def test_crafted_meta_file_runs_nothing(tmp_path: Path):
    marker = tmp_path / "pwned"
    root = _write_cifar10(tmp_path / "data", {"data_batch_1": _batch(_rows(2), [0, 1])})
    (root / "cifar-10-batches-py" / "batches.meta").write_bytes(_payloads(marker)["os.system"])
    with pytest.raises(DataError, match=r"batches\.meta refers to os\.system"):
        load_cifar(root, "train")
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("__builtin__", "eval"), ("builtins", "getattr"),
                                          ("copyreg", "_reconstructor"), ("numpy", "load")])
def test_other_globals_are_refused(tmp_path: Path, module: str, name: str):
    root = _write_cifar10(tmp_path / "data", {"test_batch": _calling(module, name, "1+1")})
    with pytest.raises(DataError, match=rf"test_batch refers to {module}\.{name}, which a CIFAR batch never holds"):
        load_cifar(root, "test")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_bare_numpy_array_and_bytes_are_allowed(tmp_path: Path, protocol: int):
    arr = _rows(4)
    value = {"a": arr, "b": b"\x00\xffbytes", "c": np.int64(7), "d": [1, "x"]}
    loaded = _CifarUnpickler(io.BytesIO(pickle.dumps(value, protocol=protocol)), tmp_path / "x").load()
    np.testing.assert_array_equal(loaded["a"], arr)
    assert loaded["b"] == b"\x00\xffbytes" and loaded["c"] == 7 and loaded["d"] == [1, "x"]
    bare = _CifarUnpickler(io.BytesIO(pickle.dumps(arr, protocol=protocol)), tmp_path / "x").load()
    np.testing.assert_array_equal(bare, arr)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_well_formed_batches_load_at_any_protocol(tmp_path: Path, cifar_dir: Path, protocol: int):
    real = load_cifar(cifar_dir, "test")  # the shared files go through the restricted unpickler too
    rows = real.images[:20].transpose(0, 3, 1, 2).reshape(20, 3072)
    root = _write_cifar10(tmp_path / "data", {"test_batch": _batch(rows, real.labels[:20].tolist(), protocol)})
    data = load_cifar(root, "test")
    np.testing.assert_array_equal(data.images, real.images[:20])
    np.testing.assert_array_equal(data.labels, real.labels[:20])


def test_real_shared_rows_still_load(cifar_dir: Path):
    train, test = load_cifar(cifar_dir, "train"), load_cifar(cifar_dir, "test")
    assert len(train) > 0 and len(test) > 0 and train.class_names == CIFAR10
    assert train.labels.min() >= 0 and train.labels.max() <= 9 and train.images.dtype == np.uint8


def test_protocol2_bytes_codec_is_latin1_only(tmp_path: Path):
    crafted = b"(dVdata\nc_codecs\nencode\n(Vabc\nVzlib\ntRs."
    root = _write_cifar10(tmp_path / "data", {"test_batch": crafted})
    with pytest.raises(DataError, match="test_batch is not a readable CIFAR batch"):
        load_cifar(root, "test")


# -- 2. CIFAR batches are checked --------------------------------------------------------------

@pytest.mark.parametrize("labels, data, match", [
    ([0, 10], _rows(2), r"'labels' holds 10, outside 0\.\.9"),
    ([99, 1], _rows(2), r"'labels' holds 99, outside 0\.\.9"),
    ([-1, 3], _rows(2), r"'labels' holds -1, outside 0\.\.9"),
    (["cat", "dog"], _rows(2), r"'labels' holds 'cat' \(str\); CIFAR labels are integer class indices"),
    ([1, 2.5], _rows(2), r"'labels' holds 2\.5 \(float\)"),
    ([True, False], _rows(2), r"'labels' holds True \(bool\)"),
    ("0123", _rows(4), r"'labels' is a str, expected a list of class indices"),
    ([0, 1, 2], _rows(2), r"2 images but 3 'labels'"),
    ([0], _rows(2), r"2 images but 1 'labels'"),
    ([0, 1], "not pixels", r"'data' is a str, expected a uint8 N x 3072 array"),
    ([0, 1], _rows(2).tolist(), r"'data' is a list, expected a uint8"),
    ([0, 1], _rows(2).astype(np.float32), r"'data' is a float32 array, expected a uint8"),
    ([0, 1], _rows(2)[:, :1024], r"expected N x 3072 uint8 rows, got shape \(2, 1024\)"),
])
def test_malformed_cifar10_batch(tmp_path: Path, labels, data, match: str):
    root = _write_cifar10(tmp_path / "data", {"data_batch_1": _batch(data, labels)})
    with pytest.raises(DataError, match=match) as caught:
        load_labeled(root, "train")
    assert "data_batch_1" in str(caught.value)


def test_missing_labels_key(tmp_path: Path):
    payload = pickle.dumps({"data": _rows(2), "filenames": ["a", "b"]}, protocol=2)
    root = _write_cifar10(tmp_path / "data", {"test_batch": payload})
    with pytest.raises(DataError, match=r"test_batch has no 'labels' entry \(keys: \['data', 'filenames'\]\)"):
        load_cifar(root, "test")


@pytest.mark.parametrize("payload, match", [
    (pickle.dumps([1, 2, 3]), "holds a list, not the dict of a CIFAR file"),
    (b"\x80\x02garbage", "is not a readable CIFAR batch"),
    (b"", "is not a readable CIFAR batch"),
])
def test_not_a_cifar_pickle(tmp_path: Path, payload: bytes, match: str):
    root = _write_cifar10(tmp_path / "data", {"test_batch": payload})
    with pytest.raises(DataError, match=match):
        load_cifar(root, "test")


def test_label_names_decide_the_range(tmp_path: Path):
    root = _write_cifar10(tmp_path / "data", {"test_batch": _batch(_rows(2), [0, 3])}, label_names=["a", "b", "c"])
    with pytest.raises(DataError, match=r"'labels' holds 3, outside 0\.\.2"):
        load_cifar(root, "test")
    bad_meta = _write_cifar10(tmp_path / "meta", {"test_batch": _batch(_rows(2), [0, 1])}, label_names="airplane")
    with pytest.raises(DataError, match=r"batches\.meta: 'label_names' is not a list of class names"):
        load_cifar(bad_meta, "test")


def _write_cifar100(root: Path, fine_labels) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": CIFAR100, "coarse_label_names": ["x"] * 20}, 2))
    (folder / "test").write_bytes(_batch(_rows(len(fine_labels)), fine_labels, label_key="fine_labels"))
    return root


def test_cifar100_fine_labels_range(tmp_path: Path):
    data = load_cifar(_write_cifar100(tmp_path / "ok", [0, 99]), "test")
    assert data.labels.tolist() == [0, 99] and len(data.class_names) == 100
    with pytest.raises(DataError, match=r"test: 'fine_labels' holds 100, outside 0\.\.99"):
        load_cifar(_write_cifar100(tmp_path / "bad", [0, 100]), "test")


def test_malformed_batch_through_calib_make(tmp_path: Path, capsys):
    root = _write_cifar10(tmp_path / "data", {"data_batch_1": _batch(_rows(2), [-1, 3])})
    code = main(["calib", "make", "--data", str(root), "--samples", "2", "-o", str(tmp_path / "c.npz"), *CIFAR_OPTS])
    err = capsys.readouterr().err
    assert code == 1 and "data_batch_1" in err and "holds -1, outside 0..9" in err and "has no labels" not in err
    _one_error_line(err)


# -- 3. image folders: decompression bombs and truncated files ----------------------------------

def _bilevel_png(path: Path, width: int, height: int) -> Path:
    """A huge 1-bit PNG: a few kilobytes on disk, width x height pixels once decoded."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (width, height)).save(path)
    return path


def test_decompression_bomb_is_refused(tmp_path: Path):
    from PIL import Image

    limit_before = Image.MAX_IMAGE_PIXELS
    bomb = _bilevel_png(tmp_path / "cat" / "bomb.png", 20000, 20000)  # 400 megapixels
    assert bomb.stat().st_size < 200_000
    data = load_labeled(tmp_path, "train")
    with pytest.raises(DataError, match=r"bomb\.png is 400,000,000 pixels, over the 64,000,000-pixel bound"):
        data.images[0]
    assert Image.MAX_IMAGE_PIXELS == limit_before  # PIL's global limit is left alone


@pytest.mark.parametrize("width, height", [(9000, 8000), (10000, 10000)])
def test_oversized_image_refused_from_its_header(tmp_path: Path, monkeypatch, width: int, height: int):
    """Below PIL's own error limit (even below its warning limit) but above ours: refused before decoding."""
    from PIL import Image

    path = _bilevel_png(tmp_path / "big.png", width, height)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(Image.Image, "convert", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
        with pytest.raises(DataError, match=rf"big\.png is {width}x{height} \({width * height:,} pixels\)"):
            decode_image(path)


def test_pixel_bound_is_a_named_constant(tmp_path: Path, monkeypatch):
    path = _bilevel_png(tmp_path / "small.png", 100, 100)
    assert decode_image(path).shape == (100, 100, 3)
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 99 * 100)
    with pytest.raises(DataError, match=r"small\.png is 100x100 \(10,000 pixels\), over the 9,900-pixel bound"):
        decode_image(path)
    assert MAX_IMAGE_PIXELS == 64_000_000


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_image_names_the_file(tmp_path: Path, cifar_dir: Path, fmt: str, suffix: str):
    from PIL import Image

    row = load_cifar(cifar_dir, "test").images[0]
    buffer = io.BytesIO()
    Image.fromarray(row).resize((256, 256)).save(buffer, fmt)
    path = tmp_path / "cat" / f"cut{suffix}"
    path.parent.mkdir()
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    data = load_labeled(tmp_path, "train")
    with pytest.raises(DataError, match=rf"cannot decode image .*cut{suffix}.*remove or replace the broken file"):
        data.images[0]


# -- 4. label files -----------------------------------------------------------------------------

def test_label_file_not_utf8(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_bytes("cat\ncafé\n".encode("latin-1"))
    with pytest.raises(TrtInferError, match=r"labels\.txt is not UTF-8 text: byte 0xe9 at offset 7 .*save the file "
                                            r"as UTF-8"):
        resolve_labels(str(path), 2)


def test_label_file_with_bom_and_windows_lines(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbfcat\r\ncaf\xc3\xa9\r\n\r\n")
    assert resolve_labels(str(path), 2) == ["cat", "café"]
    path.write_bytes(b"\xef\xbb\xbfcat\n\xff\n")
    with pytest.raises(TrtInferError, match="byte 0xff at offset 7"):  # offsets count the BOM
        resolve_labels(str(path), 2)


def test_label_file_duplicates(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n\ncat\n dog \nemu\n", encoding="utf-8")
    with pytest.raises(TrtInferError, match=r"repeats class names: 'cat' \(lines 1, 4\), 'dog' \(lines 2, 5\)"):
        resolve_labels(str(path), 5)


def test_label_file_too_large(tmp_path: Path):
    path = tmp_path / "labels.txt"
    with open(path, "wb") as f:
        f.truncate(MAX_LABEL_FILE_BYTES + 1)  # sparse: nothing is written, stat sees the size
    with pytest.raises(TrtInferError, match=rf"labels\.txt is {MAX_LABEL_FILE_BYTES + 1:,} bytes, over the "):
        resolve_labels(str(path), 3)


def test_good_label_file(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\n  dog  \n\nemu\n", encoding="utf-8")
    assert resolve_labels(str(path), 3) == ["cat", "dog", "emu"]
