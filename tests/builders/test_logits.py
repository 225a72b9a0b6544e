"""builders/logits.py: logits of an ONNX model with ONNX Runtime, and the figures comparing two sets of them."""

from __future__ import annotations

import numpy as np
import pytest

from builders_util import LABELS, one_hot_logits
from trtinfer.builders.logits import compare, run_onnx
from trtinfer.errors import DataError

pytest_plugins = ["conftest_trained"]


def test_compare_numbers():
    ref = one_hot_logits(LABELS, wrong=20)  # 90% top-1
    cand = one_hot_logits(LABELS, wrong=24)  # 88%: 4 more rows flipped
    cand[50, 0] += 0.25
    r = compare(ref, cand, LABELS)
    assert r["samples"] == 200 and r["top1_reference"] == 0.9 and r["top1"] == 0.88
    assert r["top1_drop_points"] == pytest.approx(2.0) and r["top1_agreement"] == pytest.approx(0.98)
    assert r["max_abs_diff"] == pytest.approx(6.0) and r["finite"]
    assert r["mean_abs_diff"] == pytest.approx((4 * 6.0 + 0.25) / 2000)


def test_compare_refuses_mismatches():
    ref = one_hot_logits(LABELS, 0)
    with pytest.raises(DataError, match="model has 10 classes"):
        compare(ref, ref, LABELS + 5)
    with pytest.raises(DataError, match="200 logit rows but 10 labels"):
        compare(ref, ref, LABELS[:10])


def test_run_onnx_matches_torch(trained_model, eval_set):
    import torch
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(torch.load(trained_model.state_path, weights_only=True))
    model.eval()
    x = eval_set.x[:37]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    seen = []
    logits = run_onnx(trained_model.onnx_path, x, batch_size=16, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3)
    assert seen == [(16, 37), (32, 37), (37, 37)]
    with pytest.raises(DataError, match=r"\[3, 16, 16\]"):
        run_onnx(trained_model.onnx_path, np.zeros((2, 3, 16, 16), np.float32))
