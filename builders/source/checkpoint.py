"""Read the many shapes fine-tuning scripts save checkpoints in, safely.

Plain tensors load with ``torch.load(weights_only=True)``, ``.safetensors`` files and Hugging Face
``save_pretrained`` directories without pickle (:mod:`.huggingface`); anything that would run code from the
file (a pickled ``nn.Module``, a TorchScript archive) needs an explicit ``trust=True``.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trtinfer.errors import CheckpointError
from trtinfer.files import check_regular
from trtinfer.hashing import sha256_file

from . import huggingface
from .torch_files import TRUST_HINT, torch_load
from .types import Checkpoint, is_tensor_dict

log = logging.getLogger(__name__)

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _looks_truncated(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":  # zip container (torch >= 1.6 format)
        try:
            with zipfile.ZipFile(path) as zf:
                return zf.testzip() is not None
        except (zipfile.BadZipFile, OSError, EOFError):
            return True
    return False


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove DataParallel/DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes, in any nesting."""
    stripped: list[str] = []
    sd = dict(state_dict)
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped.append(prefix)
                changed = True
    return sd, stripped


def checkpoint_sha256(path: str | Path) -> str:
    """The checkpoint's identity: a file's sha256, or a Hugging Face directory's (config and weights)."""
    path = Path(path)
    if path.is_dir():
        return huggingface.files_sha256(path, huggingface.hf_files(path))
    return sha256_file(path)


def load_checkpoint(path: str | Path, trust: bool = False) -> Checkpoint:
    """Load ``path`` into a :class:`Checkpoint`, refusing code execution unless ``trust``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}", hint="check the path")
    if path.is_dir():
        if huggingface.is_hf_directory(path):
            return huggingface.load_hf_directory(path)
        raise CheckpointError(f"{path} is a directory, not a checkpoint file (no {huggingface.HF_CONFIG})",
                              hint="pass the .pth/.pt/.safetensors file, or a Hugging Face save_pretrained directory")
    if check_regular(path, "checkpoint", CheckpointError) == 0:  # a FIFO or device is one line, never a read
        raise CheckpointError(f"{path} is empty", hint="save the checkpoint again")
    sha = sha256_file(path)
    if huggingface.is_safetensors(path):
        sd, prefixes = strip_wrapper_prefixes(huggingface.load_safetensors(path))
        return Checkpoint(path, sha, "safetensors", sd, stripped_prefixes=prefixes)

    if _is_torchscript(path):
        if not trust:
            raise CheckpointError(f"{path} is a TorchScript archive", hint=TRUST_HINT)
        try:
            scripted = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # torch.jit raises plain RuntimeErrors with C++ traces
            raise CheckpointError(f"{path}: TorchScript archive could not be loaded ({str(exc).splitlines()[0][:160]})",
                                  hint="save the checkpoint again") from None
        sd, prefixes = strip_wrapper_prefixes(scripted.state_dict())
        return Checkpoint(path, sha, "torchscript", sd, module=scripted, stripped_prefixes=prefixes)

    if _looks_truncated(path):
        raise CheckpointError(f"{path} is truncated or corrupt (its zip container does not read back)",
                              hint="copy or save the checkpoint again")
    obj = torch_load(path, trust)

    module: torch.nn.Module | None = None
    raw: Mapping[str, Any]
    extra: list[str] = []
    if isinstance(obj, torch.nn.Module):
        module, fmt, raw = obj.eval(), "module", obj.state_dict()
    elif is_tensor_dict(obj):
        fmt, raw = "state_dict", obj
    elif isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            value = obj.get(key)
            if isinstance(value, torch.nn.Module):
                module, raw = value.eval(), value.state_dict()
            elif is_tensor_dict(value):
                raw = value
            else:
                continue
            fmt = f"dict[{key}]"
            extra = sorted(str(k) for k in obj if k != key)
            break
        else:
            keys = ", ".join(sorted(str(k) for k in obj)[:8])
            raise CheckpointError(
                f"{path} is a dict without model weights (keys: {keys})",
                hint=f"save model.state_dict(), or a dict holding it under one of {', '.join(STATE_DICT_KEYS)}")
    else:
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not model weights",
                              hint="save model.state_dict() with torch.save")
    sd, prefixes = strip_wrapper_prefixes({k: v for k, v in raw.items() if isinstance(v, torch.Tensor)})
    if not sd:
        raise CheckpointError(f"{path} holds no tensors", hint="save model.state_dict() with torch.save")
    if prefixes:
        log.info("stripped wrapper prefixes %s from %s", prefixes, path)
    return Checkpoint(path, sha, fmt, sd, module=module, extra_keys=extra, stripped_prefixes=prefixes)


def non_finite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity (a diverged or damaged model)."""
    return [name for name, t in state_dict.items()
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())]
