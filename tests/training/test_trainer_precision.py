"""training/trainer.py's choice of training arithmetic: what ``--precision`` asks for is what runs, or it is
refused with one line; ``auto`` says what it chose. Pure decisions from facts (GPU/CPU bfloat16 support),
so every device kind is covered on any host; the CUDA lines that read those facts run only on a GPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trtinfer.errors import TrtInferError  # noqa: E402
from trtinfer.training.trainer import choose_precision, training_precision  # noqa: E402


@pytest.mark.parametrize("asked, device, cuda_bf16, cpu_bf16, autocast, scaling, why", [
    ("fp32", "cuda", True, False, None, False, "--precision fp32"),
    ("fp32", "cpu", False, True, None, False, "--precision fp32"),
    ("auto", "cuda", True, False, torch.bfloat16, False, "auto: this GPU supports bfloat16"),
    ("auto", "cuda", False, False, torch.float16, True, "auto: this GPU has no bfloat16"),
    ("bf16", "cuda", True, False, torch.bfloat16, False, "--precision bf16"),
    ("fp16", "cuda", True, False, torch.float16, True, "--precision fp16"),
    ("auto", "cpu", False, True, torch.bfloat16, False, "auto: the CPU has AVX-512 BF16/AMX"),
    ("auto", "cpu", False, False, None, False, "auto: the CPU has no native bfloat16"),
    ("bf16", "cpu", False, True, torch.bfloat16, False, "--precision bf16"),
    ("bf16", "cpu", False, False, torch.bfloat16, False, "emulated and slower"),
])
def test_the_precision_asked_for_is_the_one_used(asked, device, cuda_bf16, cpu_bf16, autocast, scaling, why):
    chosen = choose_precision(asked, device, cuda_bf16, cpu_bf16)
    assert (chosen.autocast, chosen.loss_scaling) == (autocast, scaling)
    assert why in chosen.why and why in chosen.describe()


def test_bf16_on_a_gpu_without_bfloat16_is_refused_not_turned_into_fp16():
    with pytest.raises(TrtInferError, match="--precision bf16: this GPU has no bfloat16") as info:
        choose_precision("bf16", "cuda", cuda_bf16=False, cpu_bf16=False)
    assert "--precision fp16" in info.value.one_line()


def test_fp16_is_for_cuda_only():
    with pytest.raises(TrtInferError, match="CUDA GPUs only"):
        choose_precision("fp16", "cpu", cuda_bf16=False, cpu_bf16=True)


def test_this_host_cpu_reads_its_own_flags():
    from trtinfer.training.trainer import cpu_supports_bf16

    chosen = training_precision("auto", torch.device("cpu"))
    assert (chosen.autocast is torch.bfloat16) == cpu_supports_bf16()


def test_finetune_prints_the_precision_it_chose(tmp_path, capsys):
    """The run's own line names the arithmetic; --precision fp16 on a CPU stops before any training."""
    from trtinfer.cli import main

    data = tmp_path / "missing"  # never read: the precision is refused first
    assert main(["finetune", "--arch", "resnet18", "--data", str(data), "--precision", "fp16", "--device", "cpu",
                 "-o", str(tmp_path / "m.pth")]) != 0
    err = capsys.readouterr().err
    assert "--precision fp16 trains on CUDA GPUs only" in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "m.pth").exists()
