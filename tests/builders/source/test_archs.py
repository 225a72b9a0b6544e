"""Architecture inference from state-dict keys and shapes, across the torchvision families."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from builders_util import make_model
from trtinfer.builders.source.archs import build_model, match_arch
from trtinfer.builders.source.types import ArchMatch
from trtinfer.errors import CheckpointError

CASES = [
    ("resnet18", 10, True), ("resnet50", 10, False), ("resnext50_32x4d", 100, False), ("wide_resnet50_2", 10, False),
    ("mobilenet_v2", 10, False), ("mobilenet_v3_small", 10, False), ("mobilenet_v3_large", 7, False),
    ("vgg11", 10, False), ("vgg11_bn", 10, False), ("densenet121", 10, False), ("efficientnet_b0", 10, False),
    ("efficientnet_v2_s", 10, False), ("alexnet", 10, False),
    ("regnet_y_400mf", 10, False), ("regnet_x_400mf", 10, False), ("convnext_tiny", 10, False),
    ("shufflenet_v2_x0_5", 10, False),
]


@pytest.mark.parametrize("arch,num_classes,cifar", CASES)
def test_infer_and_rebuild(arch, num_classes, cifar):
    model = make_model(arch, num_classes, cifar)
    sd = model.state_dict()
    match = match_arch(sd)
    assert match == ArchMatch(arch, num_classes, cifar)
    rebuilt = build_model(match, sd)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), rebuilt(x), atol=1e-5)


def test_wrong_arch_lists_mismatching_keys():
    sd = make_model("resnet18").state_dict()
    with pytest.raises(CheckpointError) as err:
        match_arch(sd, "resnet34")
    text = str(err.value)
    assert "does not fit --arch resnet34" in text and "layer1.2" in text


def test_wrong_arch_shape_mismatch():
    sd = make_model("resnet50").state_dict()
    with pytest.raises(CheckpointError, match=r"wide_resnet50_2.*\["):
        match_arch(sd, "wide_resnet50_2")


def test_unknown_arch_name():
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet19'"):
        match_arch(make_model("resnet18").state_dict(), "resnet19")


def test_unrecognised_weights():
    sd = {"encoder.weight": torch.zeros(4, 4), "head.weight": torch.zeros(10, 4)}
    with pytest.raises(CheckpointError, match="could not recognise the architecture.*--arch"):
        match_arch(sd)


def test_cifar_stem_built_for_given_arch():
    sd = make_model("resnet18", cifar_stem=True).state_dict()
    match = match_arch(sd, "resnet18")
    assert match.cifar_stem
    assert isinstance(build_model(match, sd).maxpool, torch.nn.Identity)


def test_dropout_head_variations():
    densenet = make_model("densenet121")
    densenet.classifier = nn.Sequential(nn.Dropout(0.3), densenet.classifier)
    match = match_arch(densenet.state_dict())
    assert (match.arch, match.dropout_head, match.num_classes) == ("densenet121", True, 10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(build_model(match, densenet.state_dict())(x), densenet.eval()(x))
    r18 = make_model("resnet18", cifar_stem=True)
    r18.fc = nn.Sequential(nn.Dropout(0.5), r18.fc)
    match = match_arch(r18.state_dict(), "resnet18")  # --arch given
    assert match.dropout_head and match.cifar_stem
    assert match_arch(make_model("mobilenet_v2").state_dict()).dropout_head is False  # its own classifier.1
