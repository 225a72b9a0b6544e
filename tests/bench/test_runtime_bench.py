"""``python -m trtinfer.benchmarks.runtime_bench``'s batch-1 comparison on a tiny real artifact: load()'s
defaults against every bare session a user would write instead (real ONNX Runtime and OpenVINO). No
assertion on speed: the figure comes from the script, not from a test."""

from __future__ import annotations

import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def test_defaults_are_compared_with_every_bare_session(tmp_path, monkeypatch):
    from runtime.helpers import export_artifact, tiny_net

    from trtinfer.benchmarks.runtime_bench import bench_defaults_batch1

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    art = export_artifact(tmp_path / "tiny", tiny_net(), "tiny")
    result = bench_defaults_batch1(art, threads=1, rounds=1, calls=5)
    names = list(result["per_call_us"])
    assert names[0].startswith("trtinfer.load defaults (") and result["ours"] == names[0]
    assert {n for n in names[1:]} == {"onnxruntime bare (spin on)", "onnxruntime bare (spin off)",
                                      "openvino bare (defaults, dynamic batch)", "openvino bare (defaults, batch fixed at 1)"}
    assert result["best_bare"] in names[1:] and result["calls"] == 5 and result["rounds"] == 1
    fastest_bare = min(result["per_call_us"][n] for n in names[1:])
    assert result["ratio_vs_best_bare"] == pytest.approx(fastest_bare / result["per_call_us"][names[0]])


def test_coroutine_clients_are_batched(tmp_path, monkeypatch):
    import numpy as np
    from runtime.helpers import export_artifact, tiny_net

    import trtinfer
    from trtinfer.benchmarks.runtime_bench import coroutine_throughput

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    art = export_artifact(tmp_path / "tiny", tiny_net(), "tiny")
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with trtinfer.load(art, backend="onnxruntime", max_batch=16) as model:
        rate = coroutine_throughput(model, images, clients=16, seconds=0.3)
        stats = model.stats()
    assert rate > 0 and stats.requests >= rate * 0.3 * 0.5  # the clients' requests went through submit
    assert stats.mean_batch_size > 1  # one event loop's clients were batched together
