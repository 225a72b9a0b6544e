"""The runtime against hostile or careless input: unbounded options, a batcher worker that dies,
close() with a timeout while work is queued, NaN/inf tensors, 16-bit / empty / huge / sliver
images, corrupt encoded images, non-finite normalisation, and malformed per-call arguments.

Real threads, real backends (ONNX Runtime and OpenVINO on the tiny artifact), real files.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import struct
import threading
import time
import warnings
import zlib
from concurrent.futures import wait as wait_futures
from pathlib import Path

import numpy as np
import pytest

import trtinfer
from trtinfer.errors import DataError, InternalError, TrtInferError
from trtinfer.preprocess import (MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, check_image_size, decode_image_bytes, make_spec,
                                 preprocess)
from trtinfer.runtime import ModelClosedError
from trtinfer.runtime.batcher import DynamicBatcher
from trtinfer.runtime.loader import cpu_backend_available
from trtinfer.runtime.options import RuntimeOptions, max_threads

from .helpers import distinct_inputs

CPU_BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not cpu_backend_available("openvino"), reason="OpenVINO is not installed"))]
ROW = (3,)
#: The shared CIFAR-10 rows, found the way tests/conftest.py finds them.
CIFAR_ROOT = Path(os.environ.get("TRTINFER_CIFAR_ROOT", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def make_batcher(run, **kw) -> DynamicBatcher:
    options = dict(row_shape=ROW, dtype=np.float32, max_batch=8, max_delay_s=0.005, max_queue=1000)
    options.update(kw)
    return DynamicBatcher(run, **options)


def rows(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, *ROW), value, dtype=np.float32)


def all_done(futures, seconds: float = 10.0) -> None:
    _, pending = wait_futures(futures, timeout=seconds)
    assert not pending, f"{len(pending)} of {len(futures)} futures still pending after {seconds} s"


class Slowed:
    """Wraps a model's real batch run (the batcher binds _run_batch when it starts) with a delay and
    an optional gate, so a test can hold a real backend run in flight."""

    def __init__(self, model, delay: float = 0.0, gated: bool = False) -> None:
        self.inner = model._run_batch
        self.delay = delay
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not gated:
            self.gate.set()
        model._run_batch = self

    def __call__(self, x):
        self.entered.set()
        assert self.gate.wait(20), "gate never opened"
        if self.delay:
            time.sleep(self.delay)
        return self.inner(x)


# == A. options are bounded, and a batcher worker cannot die silently ===============================
@pytest.mark.parametrize("option, value, bound", [
    ("max_batch", 10**7, "65,536"),
    ("max_batch", True, "integer"),
    ("max_batch", 2.0, "integer"),
    ("max_delay_ms", float("inf"), "60,000"),
    ("max_delay_ms", float("nan"), "60,000"),
    ("max_delay_ms", -1, ">= 0"),
    ("max_delay_ms", True, "finite number"),
    ("timeout_ms", float("nan"), "3,600,000"),
    ("timeout_ms", float("inf"), "3,600,000"),
    ("timeout_ms", 0, "> 0"),
    ("timeout_ms", -5, "> 0"),
    ("timeout_ms", 10**9, "3,600,000"),
    ("max_queue", 10**7, "1,000,000"),
    ("max_queue", True, "integer"),
    ("chunk_size", 10**6, "65,536"),
    ("workers", 1000, "64"),
    ("workers", True, "integer"),
    ("threads", 10_000, "usable core"),
    ("threads", 0, "from 1"),
    ("streams", 100, "16"),
    ("graph_cache", 10**6, "1,024"),
    ("device", -1, ">= 0"),
    ("check_finite", "yes", "True or False"),
    ("cuda_graphs", 1, "True or False"),
])
def test_unbounded_or_mistyped_load_options_are_refused_naming_the_bound(tiny_artifact, option, value, bound):
    with pytest.raises(TrtInferError) as info:
        RuntimeOptions.from_kwargs({option: value})
    message = str(info.value)
    assert option in message and bound in message and "\n" not in message
    with pytest.raises(TrtInferError, match=option):  # load() refuses before opening anything
        trtinfer.load(tiny_artifact, **{option: value})


def test_threads_bound_is_four_per_usable_core():
    limit = max_threads()
    assert RuntimeOptions.from_kwargs({"threads": limit}).threads == limit
    with pytest.raises(TrtInferError, match=f"at most {limit:,}"):
        RuntimeOptions.from_kwargs({"threads": limit + 1})


def test_numpy_integers_are_accepted_where_ints_are_meant(tiny_artifact):
    opts = RuntimeOptions.from_kwargs({"max_batch": np.int64(4), "workers": np.int32(1), "max_queue": np.int64(50),
                                       "max_delay_ms": np.float32(1.5), "threads": np.int64(1),
                                       "chunk_size": np.uint16(64), "check_finite": np.bool_(True)})
    assert type(opts.max_batch) is int and type(opts.threads) is int and type(opts.max_delay_ms) is float
    assert opts.check_finite is True
    with trtinfer.load(tiny_artifact, max_batch=np.int64(4), threads=np.int64(1)) as model:
        assert model.max_batch == 4
        assert model.submit(distinct_inputs(2)).result(timeout=10).shape == (2, 10)


@pytest.mark.parametrize("option, value", [
    ("max_batch", 10**7), ("max_batch", 0), ("max_delay_s", float("inf")), ("max_delay_s", float("nan")),
    ("max_delay_s", 61.0), ("max_queue", 10**7), ("timeout_s", float("nan")), ("timeout_s", -1.0),
    ("concurrency", 1000), ("concurrency", True),
])
def test_batcher_refuses_options_its_worker_cannot_survive(option, value):
    before = threading.active_count()
    with pytest.raises(TrtInferError, match=option):
        make_batcher(lambda x: x, **{option: value})
    assert threading.active_count() == before  # refused before any worker started


def test_staging_buffer_follows_the_traffic_not_max_batch():
    batcher = make_batcher(lambda x: x * 2, max_batch=65_536, max_delay_s=0.05)
    futures = [batcher.submit(rows(i), 1) for i in range(4)]
    assert [float(f.result(timeout=10)[0, 0]) for f in futures] == [0, 2, 4, 6]
    batcher.close()


def test_a_worker_failing_outside_the_run_fails_every_future_and_breaks_the_batcher(monkeypatch):
    ran: list[int] = []

    def run(x):
        ran.append(len(x))
        return x * 2

    batcher = make_batcher(run, max_batch=4, max_delay_s=0.02)

    def no_memory(taken, staging):
        raise MemoryError("staging buffer")

    monkeypatch.setattr(batcher, "_assemble", no_memory)
    futures = [batcher.submit(rows(i, 1 + i % 3), 1 + i % 3) for i in range(40)]
    all_done(futures)
    for future in futures:
        error = future.exception(timeout=0)
        assert isinstance(error, InternalError) and "MemoryError" in str(error)
        assert isinstance(error.__cause__, MemoryError)
    assert ran == [] and batcher.broken is not None
    start = time.perf_counter()
    with pytest.raises(ModelClosedError, match="MemoryError"):
        batcher.submit(rows(99), 1)
    assert time.perf_counter() - start < 5.0  # at once, not after a hang
    start = time.perf_counter()
    batcher.close()
    assert time.perf_counter() - start < 5.0
    assert not any(t.is_alive() for t in batcher._threads)


def test_a_dying_worker_leaves_a_running_batch_alone_and_nothing_pending(monkeypatch):
    gate, entered = threading.Event(), threading.Event()

    def run(x):
        entered.set()
        assert gate.wait(10)
        return x * 2

    batcher = make_batcher(run, max_batch=2, max_delay_s=0.0)
    original = batcher._assemble
    calls = [0]

    def fail_second(taken, staging):
        calls[0] += 1
        if calls[0] > 1:
            raise MemoryError("staging buffer")
        return original(taken, staging)

    monkeypatch.setattr(batcher, "_assemble", fail_second)
    first = batcher.submit(rows(1, 2), 2)
    assert entered.wait(5)  # the first batch is inside run()
    later = [batcher.submit(rows(i, 2), 2) for i in range(2, 8)]
    all_done(later)  # the pipelining worker died while the first batch ran: nobody waits on it
    assert all(isinstance(f.exception(timeout=0), InternalError) for f in later)
    gate.set()
    assert np.array_equal(first.result(timeout=10), rows(2, 2))  # the running batch still ends well
    batcher.close()
    assert not any(t.is_alive() for t in batcher._threads)


def test_close_never_leaves_queued_futures_pending_after_a_worker_died(monkeypatch):
    batcher = make_batcher(lambda x: x, max_batch=1, max_delay_s=0.0)
    monkeypatch.setattr(batcher, "_settle", lambda taken: (_ for _ in ()).throw(RuntimeError("bug")))
    futures = [batcher.submit(rows(i), 1) for i in range(20)]
    batcher.close(timeout=5)
    all_done(futures, seconds=1)
    assert all(isinstance(f.exception(timeout=0), InternalError) for f in futures)


# == B. close(timeout) with work queued ============================================================
def _outcomes(futures) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for future in futures:
        error = future.exception(timeout=0)
        if error is None:
            assert future.result(timeout=0).shape == (10,)
            kind = "result"
        else:
            assert isinstance(error, ModelClosedError), repr(error)  # never TypeError from a freed session
            assert "closed before this request ran" in str(error)
            kind = "closed"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_close_with_a_timeout_fails_unstarted_requests_and_frees_the_backend_after_running_work(
        tiny_artifact, backend):
    model = trtinfer.load(tiny_artifact, backend=backend, max_batch=1, max_delay_ms=0)
    Slowed(model, delay=0.002)  # each real run takes >= 2 ms, so 300 cannot all run in 50 ms
    futures = [model.submit(x) for x in distinct_inputs(300, seed=3)]
    start = time.perf_counter()
    try:
        model.close(timeout=0.05)
        fully_closed = True
    except TrtInferError as exc:  # a batch was still running: the backend stays open for it
        assert "still running" in str(exc) and "close() again" in str(exc)
        fully_closed = False
    assert time.perf_counter() - start < 2.0
    assert model.closed
    all_done(futures)
    kinds = _outcomes(futures)
    assert kinds.get("closed", 0) > 0 and sum(kinds.values()) == 300
    if fully_closed:
        assert not model._opened
    model.close()  # frees the backend if the first close could not
    assert not model._opened
    model.close()  # idempotent


def test_close_with_a_timeout_on_a_real_slow_model(resnet_artifact):
    model = trtinfer.load(resnet_artifact, backend="onnxruntime", max_batch=8, max_delay_ms=0)
    futures = [model.submit(x) for x in distinct_inputs(300, seed=5)]
    try:
        model.close(timeout=0.05)
    except TrtInferError as exc:
        assert "still running" in str(exc)
    all_done(futures, seconds=30)
    kinds = _outcomes(futures)
    assert kinds.get("closed", 0) > 0
    model.close()
    assert not model._opened


def test_a_second_close_frees_what_a_timed_out_close_left_running(tiny_artifact):
    model = trtinfer.load(tiny_artifact, backend="onnxruntime", max_batch=1, max_delay_ms=0)
    slowed = Slowed(model, gated=True)
    running = model.submit(distinct_inputs(1, seed=1)[0])
    assert slowed.entered.wait(5)
    queued = [model.submit(x) for x in distinct_inputs(20, seed=2)]
    with pytest.raises(TrtInferError, match="ran out while a batch was still running"):
        model.close(timeout=0.05)
    assert model._opened  # not freed under the running batch
    all_done(queued, seconds=5)  # the requests that never started are settled at once
    assert _outcomes(queued) == {"closed": 20}
    with pytest.raises(ModelClosedError):
        model.submit(distinct_inputs(1))
    slowed.gate.set()
    assert running.result(timeout=10).shape == (10,)  # the running batch ends on a live backend
    model.close()
    assert not model._opened


# == C. NaN and inf in host input ==================================================================
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_read_only_input_runs_on_every_path(tiny_artifact, backend):
    """A server hands the model read-only views of its request bytes (np.frombuffer): every path takes them."""
    x = distinct_inputs(3, seed=5)
    frozen = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(x.shape)
    assert not frozen.flags.writeable
    with trtinfer.load(tiny_artifact, backend=backend) as model:
        expected = model.infer(x)
        assert np.array_equal(model.infer(frozen), expected)
        assert np.array_equal(model.infer(frozen[1]), expected[1])
        assert np.array_equal(model.submit(frozen).result(timeout=10), expected)
        assert np.array_equal(asyncio.run(model.infer_async(frozen[2:3])), expected[2:3])


def test_a_batch_screened_once_fails_only_its_non_finite_requests(tiny_artifact):
    """Clients' requests gathered into one batch: the batch is checked once; the two requests holding NaN/inf fail
    with their own rows named, the other six get exactly their own rows, and the model never sees NaN."""
    x = distinct_inputs(8, seed=11)
    x[1, 0, 0, 0] = np.nan
    x[4, 1, 2, 3] = np.inf
    with trtinfer.load(tiny_artifact, backend="onnxruntime", max_batch=8, max_delay_ms=200) as model:
        expected = model.infer(np.delete(x, [1, 4], axis=0))
        seen: list[np.ndarray] = []
        run = model._run_batch

        def recording(batch):
            seen.append(batch.copy())
            return run(batch)

        model._run_batch = recording
        before = model.stats()
        futures = [model.submit(x[i]) if i % 2 else model.submit(x[i:i + 1]) for i in range(8)]
        for i, future in enumerate(futures):
            if i in (1, 4):
                with pytest.raises(DataError, match="sample holds NaN or inf in 1 of" if i == 1 else
                                   r"1 of 1 row\(s\) \(row 0\)"):
                    future.result(timeout=10)
            else:
                got = future.result(timeout=10)
                row = expected[[0, 0, 1, 2, 2, 3, 4, 5][i]]
                assert np.allclose(got if i % 2 else got[0], row, atol=1e-5)
        after = model.stats()
        assert after.failed - before.failed == 2 and after.completed - before.completed == 6
        assert seen and all(np.isfinite(batch).all() for batch in seen)
        assert sum(len(batch) for batch in seen) == 6


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_finite_input_is_refused_naming_the_rows(tiny_artifact, backend):
    x = distinct_inputs(8, seed=7)
    x[2, 0, 1, 1] = np.nan
    x[5] = np.inf
    x[6, 2, 3, 4] = -np.inf
    with trtinfer.load(tiny_artifact, backend=backend) as model:
        with pytest.raises(DataError) as info:
            model.infer(x)
        message = str(info.value)
        assert "3 of 8 row(s)" in message and "row 2, 5, 6" in message and "check_finite=False" in message
        with pytest.raises(DataError, match="sample holds NaN or inf in 1 of"):
            model.infer(x[2])
        with pytest.raises(DataError, match="sample holds NaN or inf in 3072 of"):
            model.infer(x[5])
        with pytest.raises(DataError, match=r"1 of 1 row\(s\) \(row 0\)"):
            model.infer(x[6:7])
        # The batcher screens each assembled batch once: the requests holding NaN/inf fail with the rows named,
        # their batch-mates run. One request at a time here; mixed batches in the test below.
        with pytest.raises(DataError, match=r"3 of 8 row\(s\) \(row 2, 5, 6\)"):
            model.submit(x).result(timeout=10)
        with pytest.raises(DataError, match="sample holds NaN or inf in 1 of"):
            model.submit(x[2]).result(timeout=10)
        with pytest.raises(DataError, match="NaN or inf"):
            asyncio.run(model.infer_async(x[5:6]))
        many = np.repeat(x[2:3], 9, axis=0)
        with pytest.raises(DataError, match=r"9 of 9 row\(s\) \(row 0, 1, 2, 3, 4, \.\.\.\)"):
            model.infer(many)
        finite = np.delete(x, [2, 5, 6], axis=0)  # the rest still runs, on the batcher too
        assert model.submit(finite).result(timeout=10).shape == (5, 10)
        assert np.isfinite(model.infer(finite)).all()
        huge = np.full((2, 3, 32, 32), 3e38, np.float32)  # finite, however large: not refused
        model.infer(huge)
    with trtinfer.load(tiny_artifact, backend=backend, check_finite=False) as model:
        assert model.infer(x).shape == (8, 10)  # the caller vouched for the data


@pytest.mark.parametrize("rows", [1, 2, 3])  # 3 rows of 3x32x32 pass DOT_CHECK_MAX: min and max check them
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_finite_check_finds_one_bad_value_anywhere_and_passes_every_finite_one(tiny_artifact, rows, bad):
    finite = distinct_inputs(rows, seed=rows)
    finite.reshape(-1)[:4] = [3.4e38, -3.4e38, 1e-45, -0.0]  # the largest, a denormal, a signed zero: all finite
    with trtinfer.load(tiny_artifact) as model, warnings.catch_warnings(), np.errstate(all="raise"):
        # No "invalid value" warning (0 * inf), no FloatingPointError where the caller made them errors: our
        # DataError is the only answer (np.dot would warn here; the check uses np.vdot, which does not).
        warnings.simplefilter("error")
        assert (finite.size in model._zeros) == (rows < 3)  # the dot product's sizes; min and max beyond them
        assert model._non_finite_error(finite, False) is None
        for where in (0, finite.size // 2, finite.size - 1):
            x = finite.copy()
            x.reshape(-1)[where] = bad
            error = model._non_finite_error(x, False)
            assert error is not None and f"row {where // (3 * 32 * 32)}" in str(error)
        both = finite.copy()
        both.reshape(-1)[-2:] = [np.inf, -np.inf]  # inf - inf inside the sum
        assert model._non_finite_error(both, False) is not None


def test_the_finite_check_allocates_nothing_per_row(tiny_artifact):
    """The check is a dot product with zeros (small inputs) or one min and one max: no copy, no boolean mask
    of its size (its cost is measured by the benchmarks, not asserted here)."""
    import tracemalloc

    with trtinfer.load(tiny_artifact) as model:
        for x in (distinct_inputs(2), distinct_inputs(64)):
            model._check_host(x)
            tracemalloc.start()
            try:
                model._check_host(x)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            # a copy of 2 rows would be 24 KB and their mask 6 KB; the dot product's own scalar and view about 300 bytes
            bound = max(1024, x.nbytes // 100)
            assert peak < bound, f"the finite check allocated {peak} bytes for a {x.nbytes}-byte batch"


# == D. images: bit depth, empty, huge, slivers, encoded bytes ====================================
@functools.lru_cache(maxsize=1)
def _cifar_test_rows() -> np.ndarray | None:
    """The shared CIFAR test rows, read through the project's restricted reader (never plain pickle)."""
    if not (CIFAR_ROOT / "cifar-10-batches-py" / "test_batch").is_file():
        return None
    from trtinfer.calibration.cifar import load_cifar

    return load_cifar(CIFAR_ROOT, "test").images


def cifar_like_images(count: int) -> np.ndarray:
    """Real CIFAR-10 test rows (uint8 NHWC) when the shared data is present, else smooth synthetic ones."""
    real = _cifar_test_rows()
    if real is not None:
        return real[:count].copy()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)


def test_16_bit_and_float_images_preprocess_like_their_8_bit_twins(tiny_artifact):
    from PIL import Image

    spec = make_spec(32, "cifar10", resize=40)  # resized as well, so the twins go through PIL too
    rgb = cifar_like_images(200)
    gray = [np.asarray(Image.fromarray(a).convert("L")) for a in rgb]
    want = preprocess([Image.fromarray(g) for g in gray], spec)
    twins = {
        "I;16": [Image.fromarray(g.astype(np.uint16) * 257) for g in gray],
        "I;16B": [Image.fromarray((g.astype(np.uint16) * 257).astype(">u2")) for g in gray],
        "I": [Image.fromarray(g.astype(np.int32) * 257) for g in gray],
        "F [0,1]": [Image.fromarray(g.astype(np.float32) / 255) for g in gray],
        "F [0,255]": [Image.fromarray(g.astype(np.float32)) for g in gray],
        "uint16 HW": [g.astype(np.uint16) * 257 for g in gray],
    }
    assert twins["I;16"][0].mode == "I;16" and twins["I;16B"][0].mode == "I;16B" and twins["I"][0].mode == "I"
    for name, images in twins.items():
        np.testing.assert_array_equal(preprocess(images, spec), want, err_msg=name)
    # uint16 colour arrays and NHWC batches, too
    want_rgb = preprocess(rgb, spec)
    np.testing.assert_array_equal(preprocess(list(rgb.astype(np.uint16) * 257), spec), want_rgb)
    np.testing.assert_array_equal(preprocess(rgb.astype(np.uint16) * 257, spec), want_rgb)
    with trtinfer.load(tiny_artifact) as model:
        assert model.predict(twins["I;16"][:50]) == model.predict([Image.fromarray(g) for g in gray[:50]])


def test_out_of_range_high_depth_images_are_refused():
    from PIL import Image

    spec = make_spec(32, "none")
    wide = np.full((32, 32), 70000, np.int32)
    wide[0, 0] = 0
    with pytest.raises(DataError, match="values from 0 to 70000, outside the 16-bit range"):
        preprocess(Image.fromarray(wide), spec)
    wide[0, 0] = -1
    with pytest.raises(DataError, match="values from -1 to 70000"):
        preprocess(Image.fromarray(wide), spec)
    with pytest.raises(DataError, match="NaN"):
        preprocess(Image.fromarray(np.full((32, 32), np.nan, np.float32)), spec)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1", "RGB", "YCbCr"])
def test_common_image_modes_keep_working(tiny_artifact, mode):
    from PIL import Image

    spec = make_spec(32, "cifar10")
    original = Image.fromarray(cifar_like_images(1)[0])
    image = original.convert(mode)
    x = preprocess(image, spec)
    assert x.shape == (1, 3, 32, 32) and np.isfinite(x).all()
    np.testing.assert_array_equal(x, preprocess(np.asarray(image.convert("RGB")), spec))
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(x, preprocess(original, spec))
    with trtinfer.load(tiny_artifact) as model:
        assert len(model.predict(image, top_k=2)[0]) == 2


@pytest.mark.parametrize("make, size", [
    (lambda: np.zeros((0, 0, 3), np.uint8), "0x0"),
    (lambda: np.zeros((0, 7, 3), np.uint8), "7x0"),
    (lambda: np.zeros((7, 0), np.uint8), "0x7"),
    (lambda: __import__("PIL.Image").Image.new("RGB", (0, 0)), "0x0"),
    (lambda: __import__("PIL.Image").Image.new("L", (0, 12)), "0x12"),
    (lambda: np.zeros((2, 0, 5, 3), np.uint8), "5x0"),
])
def test_empty_images_are_a_data_error_naming_the_size(tiny_artifact, make, size):
    spec = make_spec(32, "cifar10")
    with pytest.raises(DataError, match=f"is {size} pixels"):
        preprocess(make(), spec)
    with trtinfer.load(tiny_artifact) as model, pytest.raises(DataError, match=size):
        model.predict(make())


def test_huge_images_and_slivers_are_refused_before_any_resize(tiny_artifact):
    from PIL import Image

    spec = make_spec(32, "cifar10")
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # no memory behind it
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        preprocess(huge, spec)
    assert time.perf_counter() - start < 5.0  # at once, not after a hang
    message = str(info.value)
    assert "20000x20000" in message and f"{MAX_IMAGE_PIXELS:,}" in message and "downscale" in message
    with pytest.raises(DataError, match="20000x20000"):
        preprocess(np.broadcast_to(huge[None], (2, 20000, 20000, 3)), spec)
    sliver = np.zeros((1, 200_000, 3), np.uint8)
    with pytest.raises(DataError, match=rf"200000x1 pixels, an aspect ratio of 200,000:1, beyond the "
                                        rf"{MAX_ASPECT_RATIO}:1 allowed"):
        preprocess(sliver, spec)
    with pytest.raises(DataError, match="aspect ratio"):
        preprocess(Image.new("RGB", (1, 200_000)), spec)
    with trtinfer.load(tiny_artifact) as model, pytest.raises(DataError, match="aspect ratio"):
        model.predict(sliver)
    # at the bounds: still taken
    assert preprocess(np.zeros((1, MAX_ASPECT_RATIO, 3), np.uint8), spec).shape == (1, 3, 32, 32)
    check_image_size(8000, 8000)
    with pytest.raises(DataError, match="64,000,001"):
        check_image_size(64_000_001, 1, max_pixels=64_000_001 - 1)


def _png_bytes(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of any size, compressed row by row (a 20000x20000 one is ~50 KB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _encoded(fmt: str) -> tuple[bytes, np.ndarray]:
    from PIL import Image

    array = cifar_like_images(1)[0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue(), array


def test_decode_image_bytes_reads_jpeg_png_and_webp():
    for fmt in ("PNG", "JPEG", "WEBP"):
        data, array = _encoded(fmt)
        image = decode_image_bytes(data)
        assert image.size == (32, 32) and image.format == fmt
        if fmt == "PNG":
            np.testing.assert_array_equal(np.asarray(image), array)
    assert decode_image_bytes(_png_bytes(40, 30)).size == (40, 30)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_encoded_images_are_a_data_error(fmt):
    data, _ = _encoded(fmt)
    # (A PNG that loses only its IEND chunk and last checksum still has every pixel, and decodes.)
    for cut in (len(data) // 2, len(data) * 9 // 10, 40, 12):
        with pytest.raises(DataError) as info:
            decode_image_bytes(data[:cut])
        assert "\n" not in str(info.value)


def test_random_bytes_other_formats_and_non_bytes_are_a_data_error():
    from PIL import Image

    with pytest.raises(DataError, match="not a complete JPEG, PNG or WebP image"):
        decode_image_bytes(np.random.default_rng(0).bytes(5000))
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    with pytest.raises(DataError, match="JPEG, PNG or WebP"):
        decode_image_bytes(gif.getvalue())
    with pytest.raises(DataError, match="empty"):
        decode_image_bytes(b"")
    with pytest.raises(DataError, match="takes bytes"):
        decode_image_bytes("image.png")  # type: ignore[arg-type]
    data, _ = _encoded("PNG")
    corrupt = data[:60] + bytes(100) + data[160:]
    with pytest.raises(DataError):
        decode_image_bytes(corrupt)


def test_huge_images_that_are_tiny_to_store_are_refused_before_decoding():
    bomb = _png_bytes(20000, 20000)
    assert len(bomb) < 200_000
    start = time.perf_counter()
    with pytest.raises(DataError, match=rf"400,000,000 pixels, more than the {MAX_IMAGE_PIXELS:,} allowed"):
        decode_image_bytes(bomb)
    with pytest.raises(DataError, match=rf"9000x9000 = 81,000,000 pixels, more than the {MAX_IMAGE_PIXELS:,}"):
        decode_image_bytes(_png_bytes(9000, 9000))
    assert time.perf_counter() - start < 5.0
    with pytest.raises(DataError, match="40x30 = 1,200 pixels, more than the 1,000 allowed"):
        decode_image_bytes(_png_bytes(40, 30), max_pixels=1000)
    with pytest.raises(DataError, match="aspect ratio"):
        decode_image_bytes(_png_bytes(5000, 2))


# == E. non-finite normalisation ===================================================================
@pytest.mark.parametrize("mean, std, flag", [
    ((float("nan"), 0.5, 0.5), (0.5, 0.5, 0.5), "--mean"),
    ((0.5, 0.5, 0.5), (float("inf"), 0.5, 0.5), "--std"),
    ((0.5, float("-inf"), 0.5), (0.5, 0.5, 0.5), "--mean"),
    ((0.5, 0.5, 0.5), (0.5, 0.5, float("nan")), "--std"),
])
def test_make_spec_refuses_non_finite_mean_and_std(mean, std, flag):
    with pytest.raises(TrtInferError) as info:
        make_spec(32, None, mean=mean, std=std)
    message = str(info.value)
    assert message.startswith(flag) and "finite" in message and "\n" not in message


# == F. per-call arguments =========================================================================
def test_submit_timeouts_must_be_finite_positive_numbers(tiny_artifact):
    x = distinct_inputs(1)
    with trtinfer.load(tiny_artifact) as model:
        for bad in ("abc", float("nan"), float("inf"), -1, 0, True, 10**7):
            with pytest.raises(TrtInferError, match=r"submit\(\) timeout=") as info:
                model.submit(x, timeout=bad)
            assert "seconds" in str(info.value)
        with pytest.raises(TrtInferError, match="timeout"):
            asyncio.run(model.infer_async(x, timeout="abc"))
        assert model.submit(x, timeout=np.float64(5)).result(timeout=10).shape == (1, 10)
        assert model.submit(x, timeout=np.int64(5)).result(timeout=10).shape == (1, 10)
        assert model.stats().requests == 2  # the refused ones were never queued
    batcher = make_batcher(lambda a: a)
    with pytest.raises(TrtInferError, match="timeout"):
        batcher.submit(rows(1), 1, timeout=float("nan"))
    batcher.close()


def test_close_timeout_is_checked(tiny_artifact):
    model = trtinfer.load(tiny_artifact)
    with pytest.raises(TrtInferError, match=r"close\(\) timeout="):
        model.close(timeout="soon")
    model.close()
    assert not model._opened


def test_top_k_takes_integers_not_bools(tiny_artifact):
    images = list(cifar_like_images(2))
    with trtinfer.load(tiny_artifact) as model:
        for bad in (True, False, 0, -1, 2.0, "3"):
            with pytest.raises(DataError, match=r"top_k=.* must be an integer >= 1"):
                model.predict(images, top_k=bad)
        result = model.predict(images, top_k=np.int64(2))
        assert [len(r) for r in result] == [2, 2]
