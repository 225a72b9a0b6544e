"""`trtinfer build --int8` end to end on a ResNet-18 made fragile on purpose: the default method fails
the accuracy guard, and the sensitivity fallback makes it pass, with the excluded node recorded.

Fragile without changing the function: layer1.0's first BatchNorm scales output channel 0 by
OUTLIER (ReLU is positively homogeneous) and conv2 scales that input channel back by 1/OUTLIER, so
FP32 logits are unchanged while a per-tensor INT8 scale at conv2's input rounds every other
channel to zero. Slow (about a minute: the fallback re-quantizes the model once per layer).
"""

from __future__ import annotations


import pytest

from trtinfer.cli import main
from trtinfer.manifest import Manifest

pytest_plugins = ["conftest_trained"]
pytestmark = pytest.mark.slow

OUTLIER = 1000.0
READER = "/layer1/layer1.0/conv2/Conv"  # the ONNX node that reads the outlier channel


@pytest.fixture(scope="module")
def fragile_ckpt(trained_model, tmp_path_factory):
    import torch

    state = torch.load(trained_model.state_path, map_location="cpu", weights_only=True)
    state["layer1.0.bn1.weight"][0] *= OUTLIER
    state["layer1.0.bn1.bias"][0] *= OUTLIER
    state["layer1.0.conv2.weight"][:, 0] /= OUTLIER
    path = tmp_path_factory.mktemp("fragile") / "fragile.pth"
    torch.save(state, path)
    return path


def _build(ckpt, cifar_root, out, trained_model, capsys, *extra):
    code = main([str(a) for a in ["build", ckpt, "--precision", "fp32,int8", "--calib-data", cifar_root,
                                  "--eval-data", cifar_root, "--input-size", trained_model.input_size,
                                  "--normalize", "cifar10", "--labels", "cifar10", "--target", "cpu", "-q",
                                  "-o", out, *extra]])
    return code, capsys.readouterr().err


def test_default_method_fails_the_guard_and_the_fallback_fixes_it(fragile_ckpt, cifar_root, trained_model, tmp_path,
                                                                  capsys):
    code, err = _build(fragile_ckpt, cifar_root, tmp_path / "nofb", trained_model, capsys, "--no-fallback")
    assert code == 1 and "int8 top-1" in err and "more than the 0.50 allowed" in err
    assert not (tmp_path / "nofb").exists() or not any((tmp_path / "nofb").iterdir())

    code, err = _build(fragile_ckpt, cifar_root, tmp_path / "fb", trained_model, capsys)
    assert code == 0, err
    m = Manifest.read(tmp_path / "fb" / "fragile-int8")
    choice = m.calibration.choice
    assert all(t.top1_drop_points > 0.5 for t in choice.methods)  # no method alone is enough
    fallback = choice.fallback
    assert fallback.ran and fallback.passed
    assert fallback.excluded_nodes[0] == READER
    assert m.conversion.nodes_excluded == fallback.excluded_nodes
    assert fallback.drop_after_points < fallback.drop_before_points
    assert m.accuracy.passed and m.accuracy.top1_drop_points <= 0.5
