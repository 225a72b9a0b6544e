"""What the benchmark measures on a TensorRT model beside its calls: the engine's own compute time and
the host-to-device copy bandwidth, each timed with CUDA events. Benchmark-only, so apart from the
runtime: they take a loaded TensorRT :class:`~trtinfer.runtime.Model`.
"""

from __future__ import annotations

from typing import Any

from trtinfer.runtime.backends.tensorrt import cuda, devices


def compute_time_ms(model: Any, rows: int, repeats: int = 50) -> float:
    """The engine's own time per batch of ``rows`` (CUDA events around the launches alone)."""
    with model.bound_lane(rows) as lane:
        for _ in range(5):
            lane.launch(model.cuda_graphs)
        with cuda.Event(timing=True) as start, cuda.Event(timing=True) as end:
            start.record(lane.stream)
            for _ in range(repeats):
                lane.launch(model.cuda_graphs)
            end.record(lane.stream)
            end.synchronize()
            return cuda.Event.elapsed_ms(start, end) / repeats


def h2d_bandwidth_gbs(model: Any, nbytes: int = 64 << 20, repeats: int = 10) -> float:
    """Host-to-device bandwidth from a pinned buffer to the model's GPU, GB/s."""
    devices.set_device(model.options.device)
    with cuda.PinnedBuffer(nbytes) as host, cuda.DeviceBuffer(nbytes) as dev, cuda.Stream() as stream, \
            cuda.Event(timing=True) as start, cuda.Event(timing=True) as end:
        cuda.htod_async(dev.ptr, host.ptr, nbytes, stream)
        start.record(stream)
        for _ in range(repeats):
            cuda.htod_async(dev.ptr, host.ptr, nbytes, stream)
        end.record(stream)
        end.synchronize()
        seconds = cuda.Event.elapsed_ms(start, end) / 1e3
    return nbytes * repeats / seconds / 1e9
