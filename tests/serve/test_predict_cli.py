"""`trtinfer predict ARTIFACT IMAGE...`: real image files of every mode a user may have, through the runtime."""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import trtinfer
from trtinfer.cli import main
from trtinfer.commands import predict as predict_command
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
    assert capsys.readouterr().err == f"error: image not found: {tmp_path / 'missing.png'} (hint: check the path)\n"


# -- every input bounded by what it costs to read (issue 26) --------------------------------------------------

def _run_predict(artifact, *images, timeout: float = 10) -> subprocess.CompletedProcess:
    """``trtinfer predict`` in its own process, held to 2 GiB of address space (an unbounded read dies
    there instead of filling the host) and to ``timeout`` seconds (a hang fails the test, not the suite)."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "trtinfer.cli", "predict", str(artifact), *map(str, images)],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit_memory,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_predict_refuses_fifos_and_devices_in_one_line(tiny_served, tmp_path, kind):
    """A FIFO hung predict; /dev/zero grew it without bound (19 GB when the OOM killer stopped it)."""
    if kind == "fifo":
        path = tmp_path / "pipe.png"
        os.mkfifo(path)
        expected = "a FIFO (named pipe), not a regular file"
    else:
        path, expected = Path(kind), "a character device, not a regular file"
    result = _run_predict(tiny_served, path)
    assert result.returncode == 1 and result.stdout == "", result.stderr[-2000:]
    assert result.stderr.startswith(f"error: image {path} is {expected}") and result.stderr.count("\n") == 1, \
        result.stderr[-2000:]


def test_predict_refuses_an_oversized_file_before_reading_it(tiny_served, tmp_path, capsys):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:  # sparse: nothing is written, and nothing may be read
        f.truncate(predict_command.MAX_IMAGE_BYTES + 1)
    assert main(["predict", str(tiny_served), str(huge)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: image {huge} is {predict_command.MAX_IMAGE_BYTES + 1:,} bytes, over the "
                          f"{predict_command.MAX_IMAGE_BYTES:,}-byte bound") and err.count("\n") == 1, err


def _stdin(monkeypatch, data: bytes, tty: bool = False) -> None:
    buffer = io.BytesIO(data)
    buffer.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(buffer))


def test_predict_reads_an_image_from_standard_input(tiny_served, image_files, monkeypatch, capsys):
    """`cat img.png | trtinfer predict ART -` classifies as the file does; stdin is bounded like a file."""
    assert main(["predict", "--help"]) == 0  # the help names `-` and the bound it states is the code's
    help_text = " ".join(capsys.readouterr().out.split())
    assert "cat cat.png | trtinfer predict ARTIFACT -" in help_text
    assert f"at most {predict_command.MAX_IMAGE_BYTES // 10**6} MB" in help_text

    assert main(["predict", str(tiny_served), str(image_files[0])]) == 0
    from_file = capsys.readouterr().out
    _stdin(monkeypatch, image_files[0].read_bytes())
    assert main(["predict", str(tiny_served), "-"]) == 0
    assert capsys.readouterr().out == from_file.replace(f"{image_files[0]}: ", "-: ")

    monkeypatch.setattr(predict_command, "MAX_IMAGE_BYTES", 100)
    _stdin(monkeypatch, image_files[0].read_bytes())
    assert main(["predict", str(tiny_served), "-"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: standard input holds more than 100 bytes") and err.count("\n") == 1, err

    assert main(["predict", str(tiny_served), "-", str(image_files[0]), "-"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: - (standard input) is named 2 times") and err.count("\n") == 1, err
    _stdin(monkeypatch, b"", tty=True)
    assert main(["predict", str(tiny_served), "-"]) == 1
    assert capsys.readouterr().err.startswith("error: standard input is a terminal")


def test_predict_decodes_a_chunk_at_a_time_in_input_order(tiny_served, tmp_path, cifar_images, monkeypatch, capsys):
    """Eight 7000x7000 PNGs were all decoded before the first inference (2 GB): now each image is
    decoded, preprocessed and closed before the next is decoded, and inference runs every chunk."""
    from trtinfer import preprocess as preprocess_module
    from trtinfer.runtime.model import Model

    files = []
    for i in range(40):  # more than one chunk: 8 rows in 5 rotations
        path = tmp_path / f"row{i}.png"
        Image.fromarray(np.ascontiguousarray(np.rot90(cifar_images[i % 8], i // 8))).save(path)
        files.append(path)
    with trtinfer.load(tiny_served) as model:
        expected = [model.predict([decode_image_bytes(p.read_bytes())], top_k=1)[0] for p in files]

    events, decoded = [], []
    real_decode, real_infer = preprocess_module.decode_image_bytes, Model.infer

    def decode(data, *args, **kwargs):
        open_images = [image for image in decoded if not _closed(image)]
        events.append(("decode", len(open_images)))
        decoded.append(real_decode(data, *args, **kwargs))
        return decoded[-1]

    def infer(self, x, **kwargs):
        events.append(("infer", len(x)))
        return real_infer(self, x, **kwargs)

    monkeypatch.setattr(preprocess_module, "decode_image_bytes", decode)
    monkeypatch.setattr(Model, "infer", infer)
    assert main(["predict", str(tiny_served), *map(str, files), "--json", "--top-k", "1"]) == 0
    document = json.loads(capsys.readouterr().out)

    assert [count for kind, count in events if kind == "decode"] == [0] * len(files), \
        "an image was still decoded when the next one was"
    assert all(_closed(image) for image in decoded)
    runs = [rows for kind, rows in events if kind == "infer"]
    assert len(runs) >= 2 and sum(runs) == len(files) and max(runs) <= predict_command.CHUNK_IMAGES, events
    since = 0
    for kind, count in events:  # each inference takes exactly the images decoded since the last one
        if kind == "decode":
            since += 1
        else:
            assert count == since, events
            since = 0
    assert [entry["image"] for entry in document["images"]] == list(map(str, files))
    for entry, want in zip(document["images"], expected):
        assert entry["predictions"][0]["label"] == want[0][0]
        assert entry["predictions"][0]["probability"] == pytest.approx(want[0][1], abs=1e-5)


def _closed(image) -> bool:
    try:
        image.im  # noqa: B018 -- Pillow raises on a closed image
    except ValueError:
        return True
    return False
