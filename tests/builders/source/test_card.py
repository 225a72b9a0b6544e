"""The checkpoint card (``ckpt.trtinfer.json``): a card whose values could not describe a real training is
refused in one line when ``trtinfer build`` reads it, before the checkpoint is loaded, not left to fail later
(duplicate labels refused by ``load``, an absurd mean/std turning every input non-finite)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from trtinfer.builders.source.card import CheckpointCard
from trtinfer.cli import main
from trtinfer.hashing import sha256_file


def _card(checkpoint: Path, **changes) -> CheckpointCard:
    """A well-formed card for ``checkpoint`` (any bytes: the card is read before the weights), then ``changes``."""
    card = CheckpointCard(arch="resnet18", num_classes=3, labels=["cat", "dog", "bird"], input_size=32, resize=32,
                          normalize="custom", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], cifar_stem=True,
                          checkpoint_sha256=sha256_file(checkpoint))
    return dataclasses.replace(card, **changes)


def _build_fails(tmp_path: Path, capsys, **changes) -> str:
    """``trtinfer build`` of a checkpoint with a card carrying ``changes``: its one error line."""
    checkpoint = tmp_path / "ckpt.pth"
    checkpoint.write_bytes(b"not read: the card is refused first")
    _card(checkpoint, **changes).write(checkpoint)
    code = main(["build", str(checkpoint), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "ckpt.trtinfer.json is malformed" in lines[0] and "hint: delete ckpt.trtinfer.json" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    return lines[0]


def test_a_card_naming_a_class_twice_is_refused_with_the_names(tmp_path, capsys):
    line = _build_fails(tmp_path, capsys, labels=["cat", "dog", "cat"])
    assert "labels name a class twice: 'cat'" in line


@pytest.mark.parametrize("field, values, shown", [
    ("mean", [1e308] * 3, "mean 1e+308,1e+308,1e+308 must lie within -255..255"),
    ("mean", [0.5, -300.0, 0.5], "mean 0.5,-300,0.5 must lie within -255..255"),
    ("std", [1e-50, 1.0, 1.0], "std 1e-50,1,1 must lie within 0.001..1000"),
    ("std", [1e6, 1.0, 1.0], "std 1e+06,1,1 must lie within 0.001..1000"),
    ("std", [0.0, 1.0, 1.0], "std 0,1,1 must be positive and lie within 0.001..1000"),
    ("std", [1.0, 1.0], "std 1,1 must be three numbers"),
])
def test_a_card_with_an_absurd_mean_or_std_is_refused(tmp_path, capsys, field, values, shown):
    line = _build_fails(tmp_path, capsys, **{field: values})
    assert shown in line, line


def test_a_sane_card_round_trips(tmp_path):
    checkpoint = tmp_path / "ckpt.pth"
    checkpoint.write_bytes(b"weights")
    # means and stds in 0..255 pixel units (as some recipes write them) are within the bounds
    card = _card(checkpoint, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
    card.write(checkpoint)
    assert CheckpointCard.read(checkpoint) == card


@pytest.mark.parametrize("flags, shown", [
    (["--mean", "1e39,0,0", "--std", "1,1,1"], "--mean 1e+39,0,0 must lie within -255..255"),
    (["--mean", "0.5,0.5,0.5", "--std", "1e-50,1,1"], "--std 1e-50,1,1 must lie within 0.001..1000"),
])
def test_mean_and_std_flags_are_held_to_the_same_bounds_up_front(tmp_path, capsys, flags, shown):
    """--mean 1e39 (finite in float64, infinite in float32) once built a whole artifact to fail validation with
    "max |diff| nan"; now it is refused before the checkpoint or --eval-data is read."""
    checkpoint = tmp_path / "ckpt.pth"
    checkpoint.write_bytes(b"not read: the flags are refused first")
    code = main(["build", str(checkpoint), *flags, "--eval-data", str(tmp_path / "none"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [f"error: {shown} (hint: means lie within -255..255 and stds within "
                                        "0.001..1000, e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 (ImageNet))"]


def test_a_card_that_is_a_fifo_or_too_large_is_one_line(tmp_path):
    """A FIFO as the card was silently skipped (is_file() is false for it); now it is named, never read."""
    import os

    from trtinfer.builders.source.card import MAX_CARD_BYTES, card_path
    from trtinfer.errors import CheckpointError

    checkpoint = tmp_path / "model.pth"
    os.mkfifo(card_path(checkpoint))
    with pytest.raises(CheckpointError, match="checkpoint card .* is a FIFO"):
        CheckpointCard.read(checkpoint)
    card_path(checkpoint).unlink()
    card_path(checkpoint).write_bytes(b" " * (MAX_CARD_BYTES + 1))
    with pytest.raises(CheckpointError, match="over the .*-byte bound"):
        CheckpointCard.read(checkpoint)
    card_path(checkpoint).unlink()
    assert CheckpointCard.read(checkpoint) is None
