"""The public API on the CPU backend for real: load and backend choice, tampering, predict,
submit / infer_async under heavy concurrency, timeouts, overload, cancellation, shutdown with work
in flight, statistics, load/close cycles, and a lean import."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

import trtinfer
from trtinfer.errors import ArtifactError, BackendUnavailable, DataError, OverloadedError, TrtInferError
from trtinfer.manifest import Manifest
from trtinfer.preprocess import preprocess
from trtinfer.runtime import ModelClosedError, RequestTimeout
from trtinfer.runtime.loader import cpu_backend_available

from .helpers import distinct_inputs, torch_reference, run_in_threads

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def relabelled(src, dst, **changes):
    """A copy of an artifact with manifest fields changed (the files' sha256s stay valid)."""
    shutil.copytree(src, dst)
    manifest = Manifest.read(dst)
    for key, value in changes.items():
        setattr(manifest, key, value)
    manifest.write(dst)
    return dst


class Gate:
    """Hold a model's batcher inside its next batch until ``open()``."""

    def __init__(self, model) -> None:
        self.inner = model._run_batch
        self.event = threading.Event()
        self.entered = threading.Event()
        self.rows: list[np.ndarray] = []
        model._run_batch = self  # the batcher binds _run_batch when it starts

    def __call__(self, x):
        self.entered.set()
        assert self.event.wait(10), "gate never opened"
        self.rows.append(x.copy())
        return self.inner(x)

    def open(self) -> None:
        self.event.set()


# -- load --------------------------------------------------------------------------------------------
def test_auto_picks_a_measured_cpu_execution_and_says_why(tiny_artifact):
    with trtinfer.load(tiny_artifact) as model:
        assert model.backend in ("onnxruntime", "openvino") and model.execution in model.backend_reason
        assert "model.plan" in model.backend_reason
        assert model.input_shape == (-1, 3, 32, 32) and model.num_classes == 10
        assert model.labels[0] == "airplane" and model.precision == "fp32"
        assert model.backend in repr(model)


def test_auto_opens_the_fastest_it_measured(tiny_artifact, tmp_path):
    import re

    art = relabelled(tiny_artifact, tmp_path / "int8", precision="int8")
    with trtinfer.load(art) as model:
        listing = model.backend_reason  # measured now, or the cached measurement of an earlier load
        rates = {name: float(rate.replace(",", "")) for name, rate in re.findall(r"([a-z0-9-]+) ([\d,]+) img/s", listing)}
        assert set(rates) == ({"onnxruntime", "openvino"} if cpu_backend_available("openvino") else {"onnxruntime"})
        assert model.execution == max(rates, key=rates.get)


def test_int8_without_openvino_runs_on_onnxruntime_and_says_so(tiny_artifact, tmp_path, monkeypatch):
    import trtinfer.execution as execution

    monkeypatch.setattr(execution, "module_available", lambda name: name != "openvino")
    art = relabelled(tiny_artifact, tmp_path / "int8", precision="int8")
    with trtinfer.load(art) as model:
        assert model.backend == "onnxruntime"
        assert "onnxruntime is the only CPU execution allowed here" in model.backend_reason


def test_tensorrt_without_a_plan_is_refused_with_the_fix(tiny_artifact):
    with pytest.raises(ArtifactError, match="model.plan") as info:
        trtinfer.load(tiny_artifact, backend="tensorrt")
    assert "trtinfer build --from-onnx" in info.value.hint


def test_bad_backend_and_options_are_refused(tiny_artifact):
    with pytest.raises(TrtInferError, match="unknown backend"):
        trtinfer.load(tiny_artifact, backend="cuda")
    with pytest.raises(TrtInferError, match="unknown load option"):
        trtinfer.load(tiny_artifact, max_bach=4)
    with pytest.raises(TrtInferError, match="max_batch"):
        trtinfer.load(tiny_artifact, max_batch=0)


def test_missing_openvino_is_a_clear_error(tiny_artifact, monkeypatch):
    import trtinfer.runtime.loader as loader

    monkeypatch.setattr(loader, "cpu_backend_available", lambda name: name != "openvino")
    with pytest.raises(BackendUnavailable, match="openvino"):
        trtinfer.load(tiny_artifact, backend="openvino")


# -- tampering ------------------------------------------------------------------------------------------
def test_modified_model_is_refused(artifact_copy):
    path = artifact_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        trtinfer.load(artifact_copy)


def test_truncated_model_is_refused(artifact_copy):
    path = artifact_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="truncated"):
        trtinfer.load(artifact_copy)


def test_missing_or_unlisted_model_is_refused(artifact_copy, tiny_artifact, tmp_path):
    (artifact_copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        trtinfer.load(artifact_copy)
    unlisted = relabelled(tiny_artifact, tmp_path / "unlisted", files={})
    with pytest.raises(ArtifactError, match="not listed"):
        trtinfer.load(unlisted)
    with pytest.raises(ArtifactError, match="manifest.json"):
        trtinfer.load(tmp_path)


# -- predict ---------------------------------------------------------------------------------------------
def test_predict_from_arrays_and_pil_images(tiny_artifact):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    images.append(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))  # resized and cropped
    with trtinfer.load(tiny_artifact) as model:
        results = model.predict(images, top_k=3)
        pil = model.predict([Image.fromarray(a) for a in images], top_k=3)
        logits = model.infer(preprocess(images, model.manifest.preprocess))
        one = model.predict(images[0], top_k=20)
    assert len(results) == 4 and all(len(r) == 3 for r in results)
    assert results == pil
    for row, res in zip(logits, results):
        probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        best = np.argsort(-probs)[:3]
        assert [label for label, _ in res] == [model.labels[i] for i in best]
        np.testing.assert_allclose([p for _, p in res], probs[best], rtol=1e-5)
        assert res[0][1] >= res[1][1] >= res[2][1]
    assert len(one) == 1 and len(one[0]) == 10 and abs(sum(p for _, p in one[0]) - 1) < 1e-6
    with pytest.raises(DataError):
        model.predict(images, top_k=0)


# -- the batcher through the model --------------------------------------------------------------------
def test_32_threads_x_200_requests_each_get_their_own_rows(tiny_artifact):
    errors: list[str] = []
    with trtinfer.load(tiny_artifact, max_batch=32, max_delay_ms=1, max_queue=10_000) as model:
        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            for i in range(200):
                x = distinct_inputs(int(rng.integers(1, 9)), seed=seed * 1000 + i)
                y = model.submit(x).result(timeout=60)
                if y.shape != (len(x), 10) or not np.allclose(y, model.infer(x), rtol=1e-5, atol=1e-5):
                    errors.append(f"client {seed} request {i}")

        run_in_threads(client, 32)
        stats = model.stats()
    assert errors == []
    assert stats.requests == stats.completed == 32 * 200
    assert stats.batches < stats.requests and max(stats.batch_sizes) <= 32 + 8


def test_single_sample_submit_and_zero_rows(tiny_artifact, tiny_model):
    x = distinct_inputs(3, seed=4)
    with trtinfer.load(tiny_artifact) as model:
        y = model.submit(x[1]).result(timeout=10)
        assert y.shape == (10,)
        np.testing.assert_allclose(y, torch_reference(tiny_model, x[1:2])[0], rtol=1e-5, atol=1e-5)
        assert model.submit(np.zeros((0, 3, 32, 32), np.float32)).result(timeout=1).shape == (0, 10)


def test_wrong_requests_fail_alone_at_submit(tiny_artifact):
    with trtinfer.load(tiny_artifact) as model:
        good = [model.submit(distinct_inputs(2, seed=i)) for i in range(5)]
        with pytest.raises(DataError, match="shape"):
            model.submit(np.zeros((2, 3, 31, 32), np.float32))
        with pytest.raises(DataError, match="dtype"):
            model.submit(np.zeros((2, 3, 32, 32), np.float16))
        assert all(f.result(timeout=10).shape == (2, 10) for f in good)


def test_infer_async_from_many_coroutines(tiny_artifact):
    async def main(model):
        xs = [distinct_inputs(1 + i % 3, seed=i) for i in range(100)]
        ys = await asyncio.gather(*(model.infer_async(x) for x in xs))
        return xs, ys

    with trtinfer.load(tiny_artifact, max_batch=16) as model:
        xs, ys = asyncio.run(main(model))
        for x, y in zip(xs, ys):
            np.testing.assert_allclose(y, model.infer(x), rtol=1e-5, atol=1e-5)
        assert model.stats().mean_batch_size > 1


def test_cancelled_coroutine_drops_its_request(tiny_artifact):
    with trtinfer.load(tiny_artifact, max_batch=1) as model:
        gate = Gate(model)
        marker = np.full((1, 3, 32, 32), 7.5, np.float32)

        async def main():
            first = asyncio.ensure_future(model.infer_async(distinct_inputs(1)))
            while not gate.entered.is_set():
                await asyncio.sleep(0.001)
            doomed = asyncio.ensure_future(model.infer_async(marker))
            await asyncio.sleep(0.01)
            doomed.cancel()
            await asyncio.sleep(0.01)
            gate.open()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            return await first

        assert asyncio.run(main()).shape == (1, 10)
        model.submit(distinct_inputs(1)).result(timeout=10)  # the batcher goes on
        assert not any(np.all(r == 7.5) for r in gate.rows)
        assert model.stats().cancelled == 1


def test_timeout_and_overload_through_the_model(tiny_artifact):
    with trtinfer.load(tiny_artifact, max_batch=1, max_queue=2, timeout_ms=30) as model:
        gate = Gate(model)
        first = model.submit(distinct_inputs(1))
        assert gate.entered.wait(5)
        late = [model.submit(distinct_inputs(1))]
        deadline = time.time() + 5
        while model._batcher.queue_depth() and time.time() < deadline:
            time.sleep(0.001)  # the pipelining worker takes the next batch and waits for the run slot
        late += [model.submit(distinct_inputs(1)) for _ in range(2)]
        with pytest.raises(OverloadedError):
            model.submit(distinct_inputs(1))
        time.sleep(0.1)
        gate.open()
        assert first.result(timeout=10).shape == (1, 10)
        for f in late:
            with pytest.raises(RequestTimeout):
                f.result(timeout=10)
        stats = model.stats()
        assert stats.rejected == 1 and stats.timed_out == 3


def test_future_cancel_before_running(tiny_artifact):
    with trtinfer.load(tiny_artifact, max_batch=1) as model:
        gate = Gate(model)
        model.submit(distinct_inputs(1))
        assert gate.entered.wait(5)
        doomed = model.submit(distinct_inputs(1))
        assert doomed.cancel()
        gate.open()
        with pytest.raises(CancelledError):
            doomed.result(timeout=5)


def test_close_finishes_work_in_flight_then_rejects(tiny_artifact):
    model = trtinfer.load(tiny_artifact, max_batch=4)
    gate = Gate(model)
    xs = [distinct_inputs(1, seed=i) for i in range(12)]
    futures = [model.submit(x) for x in xs]
    assert gate.entered.wait(5)
    closer = threading.Thread(target=model.close)
    closer.start()
    deadline = time.time() + 5
    while not model.closed and time.time() < deadline:
        time.sleep(0.001)
    with pytest.raises(ModelClosedError):
        model.submit(xs[0])
    with pytest.raises(ModelClosedError):
        model.infer(xs[0])
    gate.open()
    closer.join(20)
    assert not closer.is_alive()
    assert all(f.result(timeout=0).shape == (1, 10) for f in futures)
    model.close()  # idempotent


def test_close_waits_for_direct_calls_in_flight(resnet_artifact):
    model = trtinfer.load(resnet_artifact, backend="onnxruntime")
    x = distinct_inputs(64)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(model.infer(x)))
    worker.start()
    time.sleep(0.02)
    model.close()  # must not free the session under the running call
    worker.join(30)
    assert result and result[0].shape == (64, 10)


def test_close_racing_many_direct_calls_never_frees_the_backend_under_one(tiny_artifact):
    """Direct calls are counted in without a lock (an atomic append): close() racing 4 threads of calls must
    still wait for every call counted in, and every later call must fail with ModelClosedError."""
    model = trtinfer.load(tiny_artifact, backend="onnxruntime")
    freed = threading.Event()
    late: list[str] = []
    run, free = model._infer_impl, model._close_impl

    def slow_run(x, out):
        if freed.is_set():
            late.append("started after the backend was freed")
        time.sleep(0.0005)
        result = run(x, out)
        if freed.is_set():
            late.append("ended after the backend was freed")
        return result

    def marked_free():
        freed.set()
        free()

    model._infer_impl, model._close_impl = slow_run, marked_free
    outcomes: list[str] = []
    x = distinct_inputs(1)

    def caller() -> None:
        while True:
            try:
                model.infer(x)
            except ModelClosedError:
                outcomes.append("closed")
                return

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for t in callers:
        t.start()
    time.sleep(0.05)
    model.close()
    for t in callers:
        t.join(10)
    assert not late and outcomes == ["closed"] * 4 and not model._calls


def test_stats_report_what_happened(tiny_artifact):
    with trtinfer.load(tiny_artifact, max_batch=8, max_delay_ms=20) as model:
        model.infer(distinct_inputs(5))
        futures = [model.submit(distinct_inputs(1, seed=i)) for i in range(8)]
        for f in futures:
            f.result(timeout=10)
        stats = model.stats()
        data = stats.as_dict()
        model.reset_stats()
        assert model.stats().requests == 0
    assert stats.infer_calls == 1 and stats.infer_rows == 5 and stats.requests == 8 and stats.completed == 8
    assert sum(size * n for size, n in stats.batch_sizes.items()) == 8
    assert set(stats.request_latency_ms) >= {"p50", "p90", "p99", "max"}
    json.dumps(data)


# -- lifetime ---------------------------------------------------------------------------------------------
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


# Each CPU backend by name: which one `auto` picks is measured per machine (OpenVINO on one thread here,
# ONNX Runtime on two), and the handle that close() releases is the backend's own.
@pytest.mark.parametrize("backend, handle", [("onnxruntime", "_session"), ("openvino", "_core")])
def test_load_close_cycles_leak_no_threads_or_files(tiny_artifact, backend, handle):
    x = distinct_inputs(2)
    for _ in range(3):  # warm up caches and libraries
        with trtinfer.load(tiny_artifact, backend=backend) as model:
            model.submit(x).result(timeout=10)
    threads, fds = threading.active_count(), _open_fds()
    for _ in range(100):
        with trtinfer.load(tiny_artifact, backend=backend, max_delay_ms=0) as model:
            model.infer(x)
            model.submit(x).result(timeout=10)
        assert model.backend == backend
        assert model.closed and model._batcher is not None and getattr(model, handle) is None
    assert threading.active_count() <= threads
    assert _open_fds() <= fds + 2


def test_unclosed_model_warns_only(tiny_artifact):
    model = trtinfer.load(tiny_artifact)
    with pytest.warns(ResourceWarning, match="never closed"):
        model.__del__()
    model.close()


def test_importing_and_loading_needs_neither_torch_nor_modelopt(tiny_artifact):
    code = (
        "import json, sys, numpy as np, trtinfer\n"
        f"m = trtinfer.load({str(tiny_artifact)!r})\n"
        "m.infer(np.zeros((1, 3, 32, 32), np.float32)); m.submit(np.zeros((3, 32, 32), np.float32)).result()\n"
        "m.close()\n"
        "heavy = ['torch', 'torchvision', 'modelopt', 'tensorrt', 'onnx', 'trtinfer.builders']\n"
        "print(json.dumps([name for name in heavy if name in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
