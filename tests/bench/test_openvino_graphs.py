"""``python -m trtinfer.benchmarks.openvino_graphs`` on a tiny real ONNX file: both graphs timed in the same
rounds and profiled per node by OpenVINO itself. No assertion on speed."""

from __future__ import annotations

import pytest

pytest.importorskip("openvino")


def test_graphs_are_timed_and_profiled_per_node(tmp_path, capsys):
    from runtime.helpers import export_artifact, tiny_net

    from trtinfer.benchmarks.openvino_graphs import main

    onnx = export_artifact(tmp_path / "tiny", tiny_net(), "tiny") / "model.onnx"
    assert main(["--batch", "4", "--rounds", "1", "--profile", f"f32={onnx}:f32", f"default={onnx}"]) == 0
    out = capsys.readouterr().out
    assert "batch 4, 2 threads, median of 1 interleaved rounds" in out
    assert " f32 " in out and " default " in out and "x1.00" in out
    assert "f32: " in out and "us per batch of 4" in out and "Convolution" in out
