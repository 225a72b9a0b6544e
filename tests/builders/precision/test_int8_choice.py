"""INT8 that keeps its accuracy by itself: method choice and the sensitivity fallback, on real
NNCF/ModelOpt quantizations, real OpenVINO/ONNX Runtime runs and real CIFAR rows.

The fragile model is made fragile on purpose, the way real networks are: one channel of an
activation is a thousand times larger than the others (its next layer scales it back), so a
per-tensor INT8 scale for that activation rounds every other channel to zero. Only the layer
that reads it needs float; the fallback must find it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trtinfer.builders.logits import run_onnx
from trtinfer.builders.precision.int8_choice import Int8Chooser, Selection, Trial, choose_int8, pick_method
from trtinfer.builders.precision.quantizer_for_target import int8_tool
from trtinfer.builders.precision.tools import get_tool
from trtinfer.manifest import FallbackRecord

pytest.importorskip("nncf")
assert int8_tool("nncf", "cpu")[0].name == "nncf-int8"
pytest.importorskip("torch")

OUTLIER = 1000.0


def fragile_net(cifar_root):
    """A small CNN trained for two epochs on the CIFAR rows, then made fragile without changing its
    function: ReLU is positively homogeneous, so scaling one output channel of the second conv by
    OUTLIER and that input channel of the third conv by 1/OUTLIER leaves FP32 logits as they were."""
    import torch
    from torch import nn

    from trtinfer.benchmarks.precision_report import train_briefly
    from trtinfer.calibration.cifar import load_cifar
    from trtinfer.preprocess import make_spec

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    train = load_cifar(cifar_root, "train")
    train_briefly(net, train.images, train.labels, make_spec(32, "cifar10"), epochs=2, lr=0.05, quiet=True)
    net.eval()
    with torch.no_grad():
        net[2].weight[0] *= OUTLIER
        net[2].bias[0] *= OUTLIER
        net[4].weight[:, 0] /= OUTLIER
    return net


@pytest.fixture(scope="module")
def fragile(tmp_path_factory, cifar_root):
    from runtime.helpers import export_artifact

    from trtinfer.calibration.calibset import make_calibration_set, make_eval_set
    from trtinfer.preprocess import make_spec

    art = export_artifact(tmp_path_factory.mktemp("fragile") / "a", fragile_net(cifar_root), "fragile")
    spec = make_spec(32, "cifar10")
    calib = make_calibration_set(cifar_root, spec, samples=128, seed=0)
    rows = make_eval_set(cifar_root, spec, exclude=calib, limit=400, split="train")
    onnx_path = art / "model.onnx"
    # labels = FP32's own answers: the slice's "drop" is then exactly the share of answers INT8 changes
    labels = run_onnx(onnx_path, rows.x).argmax(1)
    return onnx_path, calib, Selection(x=rows.x, labels=labels, source=rows.source)


def _logits(path, x):
    return run_onnx(path, x)


def test_selection_slice_is_train_rows_left_out_of_calibration(cifar_root):
    from trtinfer.calibration.calibset import make_calibration_set, make_eval_set
    from trtinfer.preprocess import make_spec

    spec = make_spec(32, "cifar10")
    calib = make_calibration_set(cifar_root, spec, samples=64, seed=0)
    rows = make_eval_set(cifar_root, spec, exclude=calib, limit=200, split="train")
    assert rows.split == "train" and len(rows) == 200
    assert not set(rows.indices.tolist()) & set(calib.indices.tolist())


def test_every_method_is_tried_and_the_best_kept(fragile, tmp_path):
    onnx_path, calib, selection = fragile
    tool = get_tool("int8", "nncf-int8")
    chooser = Int8Chooser(tool, onnx_path, calib.x, selection, _logits, tmp_path)
    best, trials, refused = chooser.choose_method(tool.methods)
    assert [t.method for t in trials] == list(tool.methods) and refused == []
    top = max(t.agreement for t in trials)
    assert best.agreement >= top - best.drop_se / 100 - 1e-12  # the best, or tied with it within the noise
    assert all(t.path.is_file() for t in trials)
    # a model the target's runtime cannot run is passed over for the next best, and the refusal said
    # (a stand-in for the runtime check: it refuses the first pick, whatever it is)
    probed: list[Path] = []

    def refuse_the_first(path: Path) -> str | None:
        probed.append(path)
        return "OpenVINO crashed (SIGSEGV) at f32 dynamic batch 1" if len(probed) == 1 else None

    again, trials, refused = Int8Chooser(tool, onnx_path, calib.x, selection, _logits, tmp_path / "again"
                                         ).choose_method(tool.methods, runs=refuse_the_first)
    first = next(t.method for t in trials if t.path == probed[0])
    assert again.method != first and again.path == probed[1] and len(probed) == 2
    assert refused == [f"{first}: OpenVINO crashed (SIGSEGV) at f32 dynamic batch 1"]


def test_the_runs_check_reports_a_crash_and_a_refusal_and_passes_a_model_that_runs(tmp_path, monkeypatch):
    """The real probe on a real model passes; a child killed by a signal and one that raises are named (stand-ins
    for OpenVINO's crash, which needs a trained model to reproduce: see builders/precision/runs_check.py)."""
    pytest.importorskip("openvino")
    from runtime.helpers import export_artifact, tiny_net

    from trtinfer.builders.precision import runs_check

    art = export_artifact(tmp_path / "tiny", tiny_net(), "tiny")
    assert runs_check.openvino_failure(art / "model.onnx", (3, 32, 32)) is None
    monkeypatch.setattr(runs_check, "_PROBE", "import os, signal; print('f32 dynamic batch 1', flush=True); "
                                              "os.kill(os.getpid(), signal.SIGSEGV)")
    assert runs_check.openvino_failure(art / "model.onnx", (3, 32, 32)) == \
        "OpenVINO crashed (SIGSEGV) at f32 dynamic batch 1"
    monkeypatch.setattr(runs_check, "_PROBE", "print('compiling f32', flush=True); raise RuntimeError('no kernel')")
    assert runs_check.openvino_failure(art / "model.onnx", (3, 32, 32)) == \
        "OpenVINO failed at compiling f32: RuntimeError: no kernel"


def _trial(method: str, agreement: float, se_points: float = 0.3, mse: float = 0.01) -> Trial:
    return Trial(method, (), Path(method), {}, agreement, 0.5, 0.0, mse, 0.0, drop_se=se_points)


def test_an_agreement_within_the_noise_goes_to_the_method_listed_first():
    # the standard-stem ResNet-18 that picked NNCF's mixed preset by one row in 2,000 (and ran its stem in f32)
    trials = [_trial("performance", 0.964), _trial("mixed", 0.965), _trial("mean_minmax", 0.955)]
    assert pick_method(trials).method == "performance"


def test_a_clear_winner_is_kept_whatever_its_place():
    trials = [_trial("performance", 0.95), _trial("mixed", 0.97), _trial("mean_minmax", 0.955)]
    assert pick_method(trials).method == "mixed"
    assert pick_method([_trial("a", 0.9, se_points=0.0), _trial("b", 0.9001, se_points=0.0)]).method == "b"


def test_fallback_keeps_the_layer_that_reads_the_outlier_in_float(fragile, tmp_path):
    import onnx

    onnx_path, calib, selection = fragile
    out = tmp_path / "int8.onnx"
    result = choose_int8(get_tool("int8", "nncf-int8"), onnx_path, out, calib.x, selection, _logits,
                         "onnxruntime", tmp_path, max_drop=2.0)
    choice = result.choice
    json.dumps(choice.to_dict(), allow_nan=False)
    before = min(m.top1_drop_points for m in choice.methods)
    assert before > 10, f"the outlier channel should wreck per-tensor INT8 (best method drop {before})"
    fallback = choice.fallback
    assert fallback.ran and fallback.passed, fallback
    convs = [n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv"]
    assert fallback.excluded_nodes[0] == convs[2]  # the conv that reads the outlier activation
    assert fallback.drop_after_points <= 2.0 < fallback.drop_before_points
    assert result.conversion.nodes_excluded == fallback.excluded_nodes
    # the written model is the fallback's, and it really is that accurate on the slice
    agree = (run_onnx(out, selection.x).argmax(1) == selection.labels).mean()
    assert 100 * (1 - agree) == pytest.approx(fallback.drop_after_points, abs=1e-6)


def test_no_fallback_keeps_the_failing_model_and_says_so(fragile, tmp_path):
    onnx_path, calib, selection = fragile
    result = choose_int8(get_tool("int8", "nncf-int8"), onnx_path, tmp_path / "m.onnx", calib.x, selection,
                         _logits, "onnxruntime", tmp_path, max_drop=2.0, method="performance", fallback=False)
    assert result.choice.fallback == FallbackRecord(ran=False, reason="--no-fallback")
    assert [m.method for m in result.choice.methods] == ["performance"]
    assert result.conversion.nodes_excluded == ()


def test_without_a_selection_slice_the_default_method_runs(fragile, tmp_path):
    onnx_path, calib, _ = fragile
    result = choose_int8(get_tool("int8", "nncf-int8"), onnx_path, tmp_path / "m.onnx", calib.x, None, _logits,
                         "onnxruntime", tmp_path, max_drop=0.5)
    assert result.choice.ran is False and result.choice.method == "performance"
    assert Path(tmp_path / "m.onnx").is_file()


def test_modelopt_takes_exact_node_names(fragile, tmp_path):
    """ModelOpt matches nodes_to_exclude as regular expressions; a name must exclude that node only."""
    import onnx

    pytest.importorskip("modelopt")
    onnx_path, calib, _ = fragile
    convs = [n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv"]
    facts = get_tool("int8", "modelopt-int8").run(onnx_path, tmp_path / "m.onnx", calibration=calib.x[:64],
                                                  method="max", nodes_to_exclude=[convs[0]])
    assert facts["nodes_excluded"] == [convs[0]]
    assert f"Conv:{convs[0]}" in facts["unquantized_compute_ops"]
    assert f"Conv:{convs[1]}" not in facts["unquantized_compute_ops"]
