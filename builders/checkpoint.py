"""Read the many shapes fine-tuning scripts save checkpoints in, safely.

Plain tensors load with ``torch.load(weights_only=True)``, ``.safetensors`` files and Hugging Face
``save_pretrained`` directories without pickle (:mod:`.hub_models`); anything that would run code from the
file (a pickled ``nn.Module``, a TorchScript archive) needs an explicit ``trust=True``.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import torch

from trtinfer.errors import CheckpointError
from trtinfer.files import check_regular
from trtinfer.hashing import sha256_file

log = logging.getLogger(__name__)

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
TRUST_HINT = "loading it runs code stored in the file; if you trust its source, pass --trust-checkpoint"


@dataclass
class Checkpoint:
    """A loaded checkpoint: always a clean ``state_dict``, plus the module when the file held one."""

    path: Path
    sha256: str
    format: str  # state_dict | dict[<key>] | module | torchscript | safetensors | hf[<weights file>]
    state_dict: dict[str, torch.Tensor]
    module: torch.nn.Module | None = None
    extra_keys: list[str] = field(default_factory=list)
    stripped_prefixes: list[str] = field(default_factory=list)
    labels: list[str] | None = None  # class names the checkpoint itself names (e.g. a Hugging Face id2label)
    hf_config: dict[str, Any] | None = None  # config.json of a Hugging Face directory, parsed as JSON

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "file": self.path.name, "sha256": self.sha256, "format": self.format,
                "stripped_prefixes": self.stripped_prefixes, "other_keys": self.extra_keys}


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


def _is_tensor_dict(obj: Any) -> TypeGuard[Mapping[str, torch.Tensor]]:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


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


def _torch_load(path: Path, trust: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path} holds pickled Python objects beyond tensors{what}, e.g. a whole model saved with "
                f"torch.save(model)", hint=TRUST_HINT) from None
        detail = text.strip().splitlines()[-1][:120] if "Weights only" not in text.splitlines()[0] else "unreadable pickle"
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({detail})",
                              hint="pass a file written by torch.save") from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__})",
                              hint="copy or save the checkpoint again") from None
    except RuntimeError as exc:
        text = str(exc).splitlines()[0][:160]
        if "zip" in text.lower() or "archive" in text.lower() or "stream" in text.lower():
            raise CheckpointError(f"{path} is truncated or corrupt ({text})",
                                  hint="copy or save the checkpoint again") from None
        raise CheckpointError(f"{path} could not be loaded: {text}", hint="pass a file written by torch.save") from None
    except (ModuleNotFoundError, ImportError, AttributeError) as exc:
        raise CheckpointError(f"{path} refers to code that is not importable here ({str(exc)[:160]})",
                              hint="save model.state_dict() instead of the whole model") from None
    except Exception as exc:  # torch's unpicklers raise IndexError, KeyError... on arbitrary bytes
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]})",
                              hint="pass a file written by torch.save") from None


def checkpoint_sha256(path: str | Path) -> str:
    """The checkpoint's identity: a file's sha256, or a Hugging Face directory's (config and weights)."""
    path = Path(path)
    if path.is_dir():
        from .hub_models import files_sha256, hf_files

        return files_sha256(path, hf_files(path))
    return sha256_file(path)


def load_checkpoint(path: str | Path, trust: bool = False) -> Checkpoint:
    """Load ``path`` into a :class:`Checkpoint`, refusing code execution unless ``trust``."""
    from . import hub_models

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}", hint="check the path")
    if path.is_dir():
        if hub_models.is_hf_directory(path):
            return hub_models.load_hf_directory(path)
        raise CheckpointError(f"{path} is a directory, not a checkpoint file (no {hub_models.HF_CONFIG})",
                              hint="pass the .pth/.pt/.safetensors file, or a Hugging Face save_pretrained directory")
    if check_regular(path, "checkpoint", CheckpointError) == 0:  # a FIFO or device is one line, never a read
        raise CheckpointError(f"{path} is empty", hint="save the checkpoint again")
    sha = sha256_file(path)
    if hub_models.is_safetensors(path):
        sd, prefixes = strip_wrapper_prefixes(hub_models.load_safetensors(path))
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
    obj = _torch_load(path, trust)

    module: torch.nn.Module | None = None
    raw: Mapping[str, Any]
    extra: list[str] = []
    if isinstance(obj, torch.nn.Module):
        module, fmt, raw = obj.eval(), "module", obj.state_dict()
    elif _is_tensor_dict(obj):
        fmt, raw = "state_dict", obj
    elif isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            value = obj.get(key)
            if isinstance(value, torch.nn.Module):
                module, raw = value.eval(), value.state_dict()
            elif _is_tensor_dict(value):
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
