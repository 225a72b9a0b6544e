"""FP32 / FP16 / INT8 accuracy and build time of a briefly trained CIFAR-10 classifier, on the CPU.

    python -m trtinfer.benchmarks.precision_report --data ../shared/data --arch resnet18
    python -m trtinfer.benchmarks.precision_report --data ../shared/data --arch mobilenet_v2
    python -m trtinfer.benchmarks.precision_report --data ../shared/data --arch resnet18 --checkpoint r18.pth

Trains the model on the train rows (or loads ``--checkpoint``), exports FP32 ONNX, builds FP16
(ModelOpt AutoCast) and INT8 (ModelOpt Q/DQ, 512 calibration images), evaluates all three with ONNX
Runtime on the test rows and prints top-1, FP16 agreement with FP32, the INT8 drop and the wall
time of the FP16+INT8 steps, against the issue's targets.

The training helpers here are also what the test suite's trained-model fixture uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtinfer import defaults
from trtinfer.manifest import PreprocessSpec

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "mobilenet_v2")
TARGET_FP16_AGREEMENT = 0.995
TARGET_INT8_DROP = 1.0
TARGET_BUILD_SECONDS = 120.0
INPUT_SIZE = 32
# ~10 min of training each on 2 idle cores: ~50% top-1 on the 846 test rows
DEFAULT_EPOCHS = {"resnet18": 10, "mobilenet_v2": 30}
DEFAULT_LR = {"resnet18": 0.1, "mobilenet_v2": 0.05}


# -- model, training, export (torch only below this line's functions) --------------------------

def make_model(arch: str, num_classes: int = 10, cifar_stem: bool = True):
    """torchvision ``arch``, seeded; ResNets get the CIFAR stem (3x3 stride-1 conv1, no max-pool) when asked."""
    from trtinfer.builders.source.archs import fresh_model

    return fresh_model(arch, num_classes, cifar_stem)


def train_briefly(model, images: np.ndarray, labels: np.ndarray, spec: PreprocessSpec, epochs: int,
                  batch_size: int = 128, lr: float = 0.1, seed: int = 0, quiet: bool = False):
    """SGD + one-cycle LR with random crop (pad 4) and flip; deterministic for ``seed``. Returns the model in eval()."""
    import torch
    import torch.nn.functional as F

    from trtinfer.preprocess import preprocess

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(preprocess(images, spec))
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    n = len(x_all)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    size = x_all.shape[-1]
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = x_all[idx], y_all[idx]
            flip = torch.rand(len(xb), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            padded = F.pad(xb, (4, 4, 4, 4))
            offsets = torch.randint(0, 9, (len(xb), 2), generator=g).tolist()
            xb = torch.stack([padded[j, :, dy:dy + size, dx:dx + size] for j, (dy, dx) in enumerate(offsets)])
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if not quiet:
            print(f"  epoch {epoch + 1}/{epochs}: loss {total / n:.3f} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    return model.eval()


def export_fp32(model, path: str | Path, input_size: int = INPUT_SIZE) -> Path:
    """FP32 ONNX with a dynamic batch, input ``input``, output ``logits`` (opset 17, TorchScript exporter)."""
    import warnings

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), (torch.randn(1, 3, input_size, input_size),), str(path), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    return path


def load_state_dict(path: str | Path) -> dict:
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return {k.removeprefix("module."): v for k, v in obj.items()}


# -- the report -------------------------------------------------------------------------------

def run_report(data: Path, arch: str, epochs: int, checkpoint: Path | None, work: Path, samples: int,
               method: str, keep_first_layer: bool, seed: int, lr: float) -> dict[str, Any]:
    from trtinfer.builders.checks.accuracy_guard import evaluate_precisions
    from trtinfer.builders.precision.tools import reduce_precision
    from trtinfer.calibration.calibset import make_calibration_set, make_eval_set
    from trtinfer.calibration.sources import load_labeled
    from trtinfer.preprocess import make_spec

    spec = make_spec(INPUT_SIZE, "cifar10")
    train = load_labeled(data, "train")
    model = make_model(arch, num_classes=len(train.class_names))
    if checkpoint is not None:
        model.load_state_dict(load_state_dict(checkpoint))
        model.eval()
        trained = f"loaded {checkpoint}"
        train_seconds = 0.0
    else:
        print(f"training {arch} for {epochs} epochs on {len(train)} rows ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        train_briefly(model, train.images, train.labels, spec, epochs=epochs, lr=lr, seed=seed)
        train_seconds = time.perf_counter() - t
        trained = f"trained {epochs} epochs in {train_seconds:.0f} s"
        import torch

        torch.save(model.state_dict(), work / f"{arch}.pth")
    fp32 = export_fp32(model, work / "fp32.onnx")

    t0 = time.perf_counter()
    calib = make_calibration_set(train, spec, samples=samples, seed=seed)
    t_calib = time.perf_counter() - t0
    fp16_facts = reduce_precision("fp16", fp32, work / "fp16.onnx", calibration=calib.x)
    t_fp16 = time.perf_counter() - t0 - t_calib
    int8_facts = reduce_precision("int8", fp32, work / "int8.onnx", calibration=calib.x, method=method,
                                  keep_first_layer=keep_first_layer)
    t_convert = time.perf_counter() - t0
    evalset = make_eval_set(data, spec, exclude=calib, labels=train.class_names)
    results = evaluate_precisions(fp32, {"fp16": work / "fp16.onnx", "int8": work / "int8.onnx"},
                                  evalset.x, evalset.labels, allow=True)
    t_total = time.perf_counter() - t0
    return {
        "arch": arch, "cifar_stem": arch.startswith("resnet"), "input_size": INPUT_SIZE, "model": trained,
        "train_seconds": round(train_seconds, 1), "eval_images": len(evalset), "calibration_images": len(calib),
        "calibration_method": method, "keep_first_layer": keep_first_layer,
        "top1": {p: results[p]["top1"] for p in ("fp32", "fp16", "int8")},
        "fp16": results["fp16"], "int8": results["int8"],
        "seconds": {"calibration_set": round(t_calib, 1), "fp16": round(t_fp16, 1),
                    "int8": round(t_convert - t_calib - t_fp16, 1), "fp16_int8_steps": round(t_convert, 1),
                    "with_evaluation": round(t_total, 1)},
        "fp16_facts": fp16_facts, "int8_facts": int8_facts,
    }


def print_report(r: dict[str, Any]) -> None:
    ok = lambda good: "OK " if good else "MISS"  # noqa: E731
    fp16, int8, s = r["fp16"], r["int8"], r["seconds"]
    stem = ", CIFAR stem" if r["cifar_stem"] else ""
    print(f"\n{r['arch']} at {r['input_size']}x{r['input_size']}{stem}: {r['model']}; "
          f"{r['eval_images']} test rows, {r['calibration_images']} calibration rows ({r['calibration_method']})")
    print(f"  top-1          FP32 {r['top1']['fp32']:.2%}   FP16 {r['top1']['fp16']:.2%}   INT8 {r['top1']['int8']:.2%}")
    print(f"  [{ok(fp16['top1_agreement'] >= TARGET_FP16_AGREEMENT)}] FP16 top-1 agreement with FP32 "
          f"{fp16['top1_agreement']:.2%} (target >= {TARGET_FP16_AGREEMENT:.1%}); max |diff| {fp16['max_abs_diff']:.3g}")
    print(f"  [{ok(int8['top1_drop_points'] <= TARGET_INT8_DROP)}] INT8 top-1 drop {int8['top1_drop_points']:.2f} points "
          f"(target <= {TARGET_INT8_DROP}); agreement {int8['top1_agreement']:.2%}, max |diff| {int8['max_abs_diff']:.3g}")
    print(f"  [{ok(s['fp16_int8_steps'] <= TARGET_BUILD_SECONDS)}] FP16+INT8 steps {s['fp16_int8_steps']:.1f} s "
          f"(calibration set {s['calibration_set']:.1f} s, FP16 {s['fp16']:.1f} s, INT8 {s['int8']:.1f} s); "
          f"with the evaluation of all three {s['with_evaluation']:.1f} s (target < {TARGET_BUILD_SECONDS:.0f} s)")
    print(f"  INT8: {r['int8_facts']['quantize_linear']} Q / {r['int8_facts']['dequantize_linear']} DQ nodes, "
          f"quantized {r['int8_facts']['quantized_ops']}, left in FP32 {r['int8_facts']['unquantized_compute_ops']}")
    print(f"  FP16: {r['fp16_facts']['nodes_fp16']} nodes FP16, {r['fp16_facts']['nodes_fp32']} FP32, "
          f"{r['fp16_facts']['cast_nodes']} casts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtinfer.benchmarks.precision_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding cifar-10-batches-py (or that folder)")
    parser.add_argument("--arch", choices=ARCHS, default="resnet18")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs [resnet18: 10, mobilenet_v2: 30]")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate [resnet18: 0.1, mobilenet_v2: 0.05]")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a state dict to use instead of training")
    parser.add_argument("--calib-samples", type=int, default=defaults.CALIB_SAMPLES)
    parser.add_argument("--calib-method", choices=("entropy", "max"), default="entropy")
    parser.add_argument("--keep-first-layer", action="store_true", help="leave the first Conv unquantized")
    parser.add_argument("--seed", type=int, default=defaults.SEED)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the ONNX models and the trained state dict (<arch>.pth) here")
    parser.add_argument("--json", type=Path, default=None, help="also write the full report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[args.arch]
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.arch]
    with tempfile.TemporaryDirectory(prefix="trtinfer-precision-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = run_report(args.data, args.arch, epochs, args.checkpoint, work, args.calib_samples,
                            args.calib_method, args.keep_first_layer, args.seed, lr)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
