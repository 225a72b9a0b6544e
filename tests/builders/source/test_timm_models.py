"""builders/source/timm_models.py: timm state dicts recognised by their signatures, twins refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from trtinfer.builders.source.archs import build_model, match_arch
from trtinfer.builders.source.timm_models import TIMM_CANDIDATES, timm_signature
from trtinfer.errors import CheckpointError

timm = pytest.importorskip("timm")


def test_timm_inference_and_twins():
    torch.manual_seed(0)
    r10t = timm.create_model("resnet10t", pretrained=False, num_classes=7).eval()
    match = match_arch(r10t.state_dict())
    assert (match.arch, match.num_classes) == ("timm:resnet10t", 7)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(build_model(match, r10t.state_dict())(x), r10t(x))
    effnet = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10).state_dict()
    with pytest.raises(CheckpointError, match="timm:efficientnet_b0.*timm:tf_efficientnet_b0.*--arch timm:NAME"):
        match_arch(effnet)  # same weights, different padding: only --arch can tell
    assert match_arch(effnet, "timm:tf_efficientnet_b0").arch == "timm:tf_efficientnet_b0"
    with pytest.raises(CheckpointError, match="does not fit --arch timm:resnet10t"):
        match_arch(effnet, "timm:resnet10t")


def test_timm_candidates_twins_are_listed_together():
    """Candidates sharing keys and shapes are exactly the known twins (TF padding, blur/anti-aliased pooling)."""
    groups: dict[tuple, list[str]] = {}
    for name in TIMM_CANDIDATES:
        groups.setdefault(tuple(sorted(timm_signature(name).shapes.items())), []).append(name)
    twins = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    assert twins == sorted([
        ["efficientnet_b0", "efficientnet_blur_b0", "tf_efficientnet_b0"], ["efficientnet_b1", "tf_efficientnet_b1"],
        ["efficientnet_b2", "tf_efficientnet_b2"], ["efficientnet_b3", "tf_efficientnet_b3"],
        ["efficientnet_lite0", "tf_efficientnet_lite0"], ["mobilenetv3_large_075", "tf_mobilenetv3_large_075"],
        ["mobilenetv3_large_100", "tf_mobilenetv3_large_100"], ["mobilenetv3_small_075", "tf_mobilenetv3_small_075"],
        ["mobilenetv3_small_100", "tf_mobilenetv3_small_100"], ["resnet34d", "resnetaa34d"],
        ["resnet50d", "resnetaa50d", "resnetblur50d"]])


@pytest.mark.slow
def test_timm_candidates_unique_among_timm_cnns():
    """Every candidate's signature is shared by no timm CNN outside its listed twins (~35 s)."""
    import hashlib

    def key(model: nn.Module) -> str:
        items = sorted((k, list(v.shape)) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
        return hashlib.sha1(json.dumps(items).encode()).hexdigest()

    wanted = {}
    for name in TIMM_CANDIDATES:
        with torch.device("meta"):
            wanted.setdefault(key(timm.create_model(name, num_classes=10)), set()).add(name)
    for pattern in ("resnet*", "resnetaa*", "resnetblur*", "mobilenet*", "efficientnet*", "tf_*", "mnasnet*",
                    "lcnet*", "fbnet*", "tinynet*", "mixnet*", "spnasnet*", "semnasnet*"):
        for name in timm.list_models(pattern):
            try:
                with torch.device("meta"):
                    model = timm.create_model(name, num_classes=10)
            except Exception:
                continue
            found = wanted.get(key(model))
            assert found is None or name in found, f"timm:{name} has the weights of {sorted(found or [])}"
