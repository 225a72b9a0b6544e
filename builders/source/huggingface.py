"""Checkpoints from the Hugging Face ecosystem: safetensors files and ``save_pretrained`` directories
(``ResNetForImageClassification``); timm models are :mod:`.timm_models`.

Nothing here runs code from a checkpoint: a safetensors file holds tensors only, a ``pytorch_model.bin``
is read with ``torch.load(weights_only=True)``, and a Hugging Face ``config.json`` is parsed as JSON and
handed to ``ResNetConfig`` (no ``trust_remote_code``, no Auto classes). transformers is an optional
extra (``trtinfer[hf]``), imported only when such a checkpoint is met.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trtinfer.errors import CheckpointError
from trtinfer.files import read_bounded
from trtinfer.hashing import sha256_file

from .extras import require
from .torch_files import torch_load
from .types import ArchMatch, Checkpoint, is_tensor_dict
from .weights import ParamsOnMeta, build_loaded, mismatches, signature_of

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_HINT = "copy or save the checkpoint again (safetensors.torch.save_file(model.state_dict(), path))"

HF_PREFIX = "hf:"
HF_CLASS = "ResNetForImageClassification"
HF_ARCH = HF_PREFIX + HF_CLASS
HF_MODEL_TYPE = "resnet"
HF_CONFIG = "config.json"
#: save_pretrained's weight files, preferred first; a sharded save has an index instead
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_OTHER_WEIGHTS = ("tf_model.h5", "flax_model.msgpack")
HF_DEFAULT_LABEL = re.compile(r"LABEL_\d+")
#: config.json and shard indexes: a few kB (an ImageNet-21k id2label is about 1 MB); refused above this unread
MAX_JSON_BYTES = 16 << 20
SAVE_PRETRAINED_HINT = "save the model again with model.save_pretrained(directory)"

# -- safetensors ------------------------------------------------------------------------------

def is_safetensors(path: Path) -> bool:
    """By name, or by content: an 8-byte little-endian header length, then a JSON header."""
    if path.suffix == SAFETENSORS_SUFFIX:
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < size <= path.stat().st_size - 8


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (no pickle); a damaged file is a CheckpointError."""
    st = require("safetensors.torch", "hf", f"reading {path.name}")
    try:
        tensors = st.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ValueError...
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path} is not a readable safetensors file ({detail}); it may be truncated or corrupt",
                              hint=SAFETENSORS_HINT) from None
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors", hint=SAFETENSORS_HINT)
    return dict(tensors)


# -- Hugging Face save_pretrained directories --------------------------------------------------------

def is_hf_directory(path: Path) -> bool:
    return path.is_dir() and (path / HF_CONFIG).exists()  # a config.json that is no regular file: refused on reading


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / HF_CONFIG
    data = read_bounded(path, MAX_JSON_BYTES, HF_CONFIG, CheckpointError, hint=SAVE_PRETRAINED_HINT)
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({str(exc)[:120]})",
                              hint=SAVE_PRETRAINED_HINT) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a {type(config).__name__}, not a model config",
                              hint=SAVE_PRETRAINED_HINT)
    model_type = config.get("model_type")
    if model_type is None and isinstance(config.get("architecture"), str):  # timm's push_to_hub layout
        weights = next((w for w in HF_WEIGHTS if (directory / w).is_file()), HF_WEIGHTS[0])
        raise CheckpointError(f"{directory} is a timm directory ({config['architecture']}), not a Hugging Face "
                              "transformers one", hint=f"pass {directory / weights} --arch timm:{config['architecture']}")
    architectures = config.get("architectures") or [HF_CLASS]
    if model_type != HF_MODEL_TYPE or HF_CLASS not in architectures:
        what = f"model_type {model_type!r}" + (f", {', '.join(map(str, architectures))}"
                                               if config.get("architectures") else "")
        raise CheckpointError(f"{path} describes a Hugging Face model of another kind ({what}); trtinfer reads "
                              f"{HF_CLASS} directories (model_type {HF_MODEL_TYPE!r})",
                              hint="export that model to ONNX yourself, or fine-tune a torchvision or timm model")
    return config


def hf_weight_files(directory: Path) -> list[Path]:
    """The weight file save_pretrained wrote (or a shard index and its shards), without reading them."""
    for name in HF_WEIGHTS:
        if (directory / name).is_file():
            return [directory / name]
    for name in HF_INDEXES:
        index = directory / name
        if index.is_file():
            data = read_bounded(index, MAX_JSON_BYTES, "shard index", CheckpointError, hint=SAVE_PRETRAINED_HINT)
            try:
                weight_map = json.loads(data.decode("utf-8"))["weight_map"]
                shards = sorted({str(f) for f in weight_map.values()})
            except (UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(f"{index} is not a readable shard index ({type(exc).__name__})",
                                      hint="save the model with model.save_pretrained(directory)") from None
            for shard in shards:
                if Path(shard).name != shard or not (directory / shard).is_file():
                    raise CheckpointError(f"{index} names a shard that is not in {directory}: {shard}",
                                          hint="copy every file of the save_pretrained directory")
            return [index, *(directory / shard for shard in shards)]
    other = [n for n in HF_OTHER_WEIGHTS if (directory / n).is_file()]
    found = f" (only {', '.join(other)}, which trtinfer does not read)" if other else ""
    raise CheckpointError(f"{directory} holds {HF_CONFIG} but no PyTorch weights{found}: expected "
                          f"{' or '.join(HF_WEIGHTS)}", hint="save the model with model.save_pretrained(directory)")


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == SAFETENSORS_SUFFIX:
        return load_safetensors(path)
    obj = torch_load(path, trust=False)  # weights_only: a .bin never runs code
    if not is_tensor_dict(obj):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors",
                              hint="save the model with model.save_pretrained(directory)")
    return dict(obj)


def hf_labels(config: Mapping[str, Any]) -> list[str] | None:
    """``id2label`` ordered by class index; None when absent, malformed, or transformers' LABEL_i defaults."""
    raw = config.get("id2label")
    if not isinstance(raw, Mapping) or not raw:
        return None
    try:
        by_index = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        log.warning("config.json id2label has non-integer keys; its class names are not used")
        return None
    if sorted(by_index) != list(range(len(by_index))):
        log.warning("config.json id2label does not number its classes 0..%d; its class names are not used",
                    len(by_index) - 1)
        return None
    labels = [by_index[i] for i in range(len(by_index))]
    return None if all(HF_DEFAULT_LABEL.fullmatch(label) for label in labels) else labels


def files_sha256(directory: Path, files: list[Path]) -> str:
    """One digest for a directory checkpoint: each file's name and sha256, in name order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(f"{path.relative_to(directory)}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def hf_files(directory: Path) -> list[Path]:
    """config.json and the weight files a directory's checkpoint is read from (what its sha256 covers)."""
    return [directory / HF_CONFIG, *hf_weight_files(directory)]


def load_hf_directory(directory: Path) -> Checkpoint:
    """A ``save_pretrained`` directory of a ResNetForImageClassification, as a Checkpoint (no transformers needed)."""
    config = _read_config(directory)
    files = hf_files(directory)
    state_dict: dict[str, torch.Tensor] = {}
    for path in files[1:]:
        if not path.name.endswith(".index.json"):
            state_dict.update(_read_weight_file(path))
    fmt = f"hf[{files[1].name}]"
    return Checkpoint(directory, files_sha256(directory, files), fmt, state_dict, labels=hf_labels(config),
                      hf_config=config)


class LogitsOnly(nn.Module):
    """A transformers image classifier as a plain ``x -> logits`` module (what export and validation run)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


_HF_STAGE_KEY = re.compile(r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.weight")
_HF_EMBEDDER = "resnet.embedder.embedder.convolution.weight"
_HF_CLASSIFIER = "classifier.1.weight"


def _hf_weight_sizes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The sizes a ResNetForImageClassification's weights fix, in ResNetConfig's terms (absent: not in them)."""
    layers: dict[int, int] = {}
    widths: dict[int, tuple[int, int]] = {}  # stage -> (last conv index of its first layer, its output channels)
    for key, tensor in state_dict.items():
        m = _HF_STAGE_KEY.fullmatch(key)
        if m is None or tensor.ndim != 4:
            continue
        stage, layer, conv = (int(g) for g in m.groups())
        layers[stage] = max(layers.get(stage, 0), layer + 1)
        if layer == 0 and conv >= widths.get(stage, (-1, 0))[0]:
            widths[stage] = (conv, int(tensor.shape[0]))
    sizes: dict[str, Any] = {}
    if layers and sorted(layers) == list(range(len(layers))):
        sizes["depths"] = [layers[i] for i in range(len(layers))]
        sizes["hidden_sizes"] = [widths.get(i, (0, 0))[1] for i in range(len(layers))]
    for key, names in ((_HF_EMBEDDER, ("embedding_size", "num_channels")), (_HF_CLASSIFIER, ("num_labels",))):
        weight = state_dict.get(key)
        if weight is not None and weight.ndim >= len(names):
            sizes.update({name: int(weight.shape[i]) for i, name in enumerate(names)})
    return sizes


def check_hf_sizes(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse a config.json whose sizes the weights do not have, before transformers builds anything from it.

    transformers spends memory and time in proportion to the config's numbers: a 98-byte config with
    ``"num_labels": 20000000`` builds a 20-million-entry label table (past 8 GiB), ``"depths": [20000]``
    20,000 layers (2 GiB, 83 s). Each size is compared with what the weights fix (stages, layers per stage,
    widths, stem, classes), and ``id2label``/``label2id`` must name as many classes as the classifier has.
    """
    hint = "save config.json and the weights together with model.save_pretrained(directory)"
    have = _hf_weight_sizes(state_dict)
    for name in ("num_labels", "depths", "hidden_sizes", "embedding_size", "num_channels"):
        if name not in config:
            continue
        if name not in have:
            raise CheckpointError(f"{HF_CONFIG} sets {name} but the weights hold no {HF_CLASS} layers it sizes",
                                  hint=hint)
        value, want = config[name], have[name]
        if value != want or isinstance(value, bool):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise CheckpointError(f"{HF_CONFIG} sets {name} {shown}, but the weights have {want}", hint=hint)
    for name in ("id2label", "label2id"):
        table = config.get(name)
        classes = have.get("num_labels")
        if table is not None and (not isinstance(table, Mapping) or (classes is not None and len(table) != classes)):
            size = len(table) if isinstance(table, Mapping) else type(table).__name__
            raise CheckpointError(f"{HF_CONFIG} {name} names {size} classes, but the classifier has {classes} outputs",
                                  hint=hint)


def _hf_model(config: Mapping[str, Any], on_meta: bool = True) -> tuple[nn.Module, int]:
    """ResNetForImageClassification built from ``config`` (on ``meta``: key names and shapes only; else for
    real), and the number of labels it names. The config's sizes must have passed :func:`check_hf_sizes`."""
    transformers = require("transformers", "hf", f"reading a Hugging Face {HF_CLASS} directory")
    try:
        resnet_config = transformers.ResNetConfig.from_dict(dict(config))
    except Exception as exc:  # transformers validates in the constructor: ValueError, TypeError...
        raise CheckpointError(f"{HF_CONFIG} is not a valid ResNetConfig ({str(exc).splitlines()[0][:160]})",
                              hint=SAVE_PRETRAINED_HINT) from None
    with warnings.catch_warnings(), ParamsOnMeta() if on_meta else contextlib.nullcontext():
        warnings.simplefilter("ignore")
        return transformers.ResNetForImageClassification(resnet_config), int(resnet_config.num_labels)


def match_hf(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], arch: str | None) -> ArchMatch:
    """Check a Hugging Face directory's weights against the model its config describes."""
    if arch and arch not in (HF_ARCH, HF_PREFIX + HF_MODEL_TYPE):
        raise CheckpointError(f"--arch {arch} does not apply: the checkpoint is a Hugging Face {HF_CLASS} "
                              f"directory, whose {HF_CONFIG} names the architecture", hint="leave --arch out")
    check_hf_sizes(config, state_dict)
    model, num_labels = _hf_model(config)
    num_classes, problems = mismatches(signature_of(HF_ARCH, model), state_dict)
    if not problems and num_classes != num_labels:
        problems = [f"its classifier has {num_classes} outputs, {HF_CONFIG} names {num_labels} labels"]
    if problems or not num_classes:
        raise CheckpointError(f"the weights do not fit the model {HF_CONFIG} describes: "
                              + ("; ".join(problems) or "no classifier weights"),
                              hint="save config.json and the weights together with model.save_pretrained(directory)")
    return ArchMatch(HF_ARCH, int(num_classes), False, hf_config=dict(config))


def build_hf(match: ArchMatch, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """The transformers model, weights loaded strictly, wrapped to return the logits tensor."""
    if match.hf_config is None:
        raise CheckpointError(f"{match.arch} needs the directory's {HF_CONFIG}")
    config = match.hf_config
    model = build_loaded(lambda: _hf_model(config, on_meta=False)[0], state_dict, HF_ARCH)
    return LogitsOnly(model).eval()
