"""Checkpoint formats and their errors, on real files written by torch.save / torch.jit."""

from __future__ import annotations

import pytest
import torch

from builders_util import make_model, save
from trtinfer.builders.source.checkpoint import load_checkpoint
from trtinfer.errors import CheckpointError


@pytest.fixture(scope="module")
def model():
    return make_model("resnet18", num_classes=10, cifar_stem=True)


@pytest.mark.parametrize("fmt", ["state_dict", "state_dict_key", "model_state_dict", "model", "net", "ddp",
                                 "compiled", "compiled_ddp"])
def test_weights_only_formats(tmp_path, model, fmt):
    ckpt = load_checkpoint(save(model, tmp_path / "m.pth", fmt))
    ref = model.state_dict()
    assert set(ckpt.state_dict) == set(ref)
    assert all(torch.equal(ckpt.state_dict[k], ref[k]) for k in ref)
    assert ckpt.module is None
    assert len(ckpt.sha256) == 64
    if fmt in ("ddp", "compiled_ddp"):
        assert "module." in ckpt.stripped_prefixes
    if fmt in ("state_dict_key", "model_state_dict", "model", "net"):
        assert "epoch" in ckpt.extra_keys


@pytest.mark.parametrize("fmt", ["module", "torchscript"])
def test_code_carrying_formats_need_trust(tmp_path, model, fmt):
    path = save(model, tmp_path / "m.pt", fmt)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, trust=True)
    assert ckpt.module is not None
    assert ckpt.format == fmt
    assert set(ckpt.state_dict) == set(model.state_dict())


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)
    empty = tmp_path / "e.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint|could not be loaded"):
        load_checkpoint(path)


def test_truncated(tmp_path, model):
    path = save(model, tmp_path / "m.pth")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_dict_without_weights(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="without model weights"):
        load_checkpoint(path)
