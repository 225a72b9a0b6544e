"""backends/tensorrt/engine_io.py: what an engine takes and gives, read once at load (here from the TensorRT
stand-in's engine: this checks our reading, not TensorRT)."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import tensorrt as fake_trt
from trtinfer.errors import ArtifactError
from trtinfer.manifest import BatchProfile, Manifest
from trtinfer.runtime.backends.tensorrt.engine_io import EngineIO

GAPPED = [BatchProfile(1, 2, 4), BatchProfile(8, 12, 16)]


def _engine(stand_ins):
    return stand_ins.trt.Runtime(None).deserialize_cuda_engine(fake_trt.PLAN_BYTES)


@pytest.mark.parametrize("fakes", [GAPPED], indirect=True)
def test_names_types_shapes_profiles_and_sizes(fakes, plan_artifact):
    stand_ins, profiles = fakes
    io = EngineIO(stand_ins.trt, _engine(stand_ins), Manifest.read(plan_artifact), None)
    assert (io.input_name, io.output_name) == ("input", "logits")
    assert io.in_dtype == np.float32 and io.out_dtype == np.float32
    assert io.row_shape == fake_trt.ROW and io.out_row_shape == (fake_trt.CLASSES,)
    assert io.profiles == profiles and io.max_rows == 16
    assert io.in_row_bytes == 4 * int(np.prod(fake_trt.ROW)) and io.out_row_bytes == 4 * fake_trt.CLASSES
    assert io.in_bytes >= 16 * io.in_row_bytes and io.out_bytes >= 16 * io.out_row_bytes
    chunks = io.plan(20, graphs=False)
    assert sum(c.rows for c in chunks) == 20
    assert all(profiles[c.profile].min <= c.run_rows <= profiles[c.profile].max for c in chunks)
    limited = EngineIO(stand_ins.trt, _engine(stand_ins), Manifest.read(plan_artifact), 10)
    assert limited.max_rows == 10  # chunk_size caps the staging buffers


def test_a_manifest_naming_another_output_is_refused(fakes, plan_artifact):
    stand_ins = fakes[0]
    manifest = Manifest.read(plan_artifact)
    manifest.output.name = "probabilities"
    with pytest.raises(ArtifactError, match="the engine's output is 'logits', the manifest says 'probabilities'"):
        EngineIO(stand_ins.trt, _engine(stand_ins), manifest, None)
