"""The TensorRT backend's CUDA-independent decisions, on plain objects: profile choice, chunk plans,
buffer sizing, lane rotation, zero-copy alignment, CUDA-graph batch sizes and the graph cache."""

from __future__ import annotations

import pytest

from trtinfer.errors import ArtifactError, DataError
from trtinfer.manifest import BatchProfile
from trtinfer.runtime.planning import (BUFFER_ALIGNMENT, Chunk, GraphCache, Step, align, aligned,
                                       buffer_bytes, choose_profile, graph_batch_sizes, graph_chunks, lane_buffer_bytes,
                                       lane_schedule, lanes_for_call, plan_chunks, row_bytes,
                                       uniform_chunks, zero_copy_granule)

ONE = [BatchProfile(1, 32, 128)]
GAPPED = [BatchProfile(1, 4, 8), BatchProfile(16, 32, 64)]
HIGH_MIN = [BatchProfile(8, 16, 32)]


def covered(chunks: list[Chunk], rows: int) -> bool:
    """Chunks tile [0, rows) in order with no gap or overlap."""
    position = 0
    for chunk in chunks:
        if chunk.start != position or chunk.stop <= chunk.start:
            return False
        position = chunk.stop
    return position == rows


# -- profiles --------------------------------------------------------------------------------------
def test_profile_checks_its_range():
    with pytest.raises(ValueError):
        BatchProfile(0, 1, 2)
    with pytest.raises(ValueError):
        BatchProfile(4, 2, 8)
    assert BatchProfile(2, 4, 8).covers(2) and BatchProfile(2, 4, 8).covers(8) and not BatchProfile(2, 4, 8).covers(9)


def test_choose_profile_prefers_current_then_nearest_opt():
    overlapping = [BatchProfile(1, 8, 64), BatchProfile(1, 48, 64)]
    assert choose_profile(40, overlapping) == 1          # opt 48 is nearer than 8
    assert choose_profile(40, overlapping, current=0) == 0  # no switch when the current one covers it
    assert choose_profile(10, GAPPED) is None            # in the gap
    assert choose_profile(16, GAPPED, current=0) == 1    # current does not cover: switch
    assert choose_profile(100, ONE) == 0 and choose_profile(129, ONE) is None


# -- chunk plans -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows", [0, 1, 7, 128, 129, 384, 1000])
def test_chunks_tile_the_batch_and_fit_a_profile(rows):
    chunks = plan_chunks(rows, ONE)
    assert covered(chunks, rows)
    assert all(c.rows <= 128 and c.run_rows == c.rows and c.profile == 0 for c in chunks)
    assert len(chunks) == -(-rows // 128)


def test_three_times_max_is_three_full_chunks():
    assert [(c.start, c.stop) for c in plan_chunks(384, ONE)] == [(0, 128), (128, 256), (256, 384)]


def test_chunk_limit_caps_chunks():
    chunks = plan_chunks(100, ONE, limit=32)
    assert [c.rows for c in chunks] == [32, 32, 32, 4]


def test_gap_between_profiles_splits_at_the_largest_max_below():
    chunks = plan_chunks(12, GAPPED)
    assert [(c.rows, c.profile) for c in chunks] == [(8, 0), (4, 0)]
    chunks = plan_chunks(70, GAPPED)
    assert [(c.rows, c.profile) for c in chunks] == [(64, 1), (6, 0)]
    assert all(GAPPED[c.profile].covers(c.run_rows) for c in chunks)


def test_rows_below_every_min_are_padded():
    chunks = plan_chunks(3, HIGH_MIN)
    assert chunks == [Chunk(0, 3, 8, 0)]
    assert chunks[0].padding == 5
    chunks = plan_chunks(35, HIGH_MIN)
    assert [(c.rows, c.run_rows) for c in chunks] == [(32, 32), (3, 8)]


def test_padding_beyond_the_limit_is_refused_clearly():
    with pytest.raises(DataError, match="no optimization profile"):
        plan_chunks(3, HIGH_MIN, limit=4)


def test_plan_refuses_nonsense():
    with pytest.raises(DataError):
        plan_chunks(-1, ONE)
    with pytest.raises(ArtifactError):
        plan_chunks(4, [])
    with pytest.raises(DataError):
        plan_chunks(4, ONE, limit=0)


def test_consecutive_chunks_keep_their_profile():
    overlapping = [BatchProfile(1, 8, 64), BatchProfile(1, 64, 64)]
    chunks = plan_chunks(200, overlapping)
    assert {c.profile for c in chunks[:-1]} == {chunks[0].profile}


def test_uniform_chunks():
    assert uniform_chunks(0, 4) == []
    assert uniform_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(DataError):
        uniform_chunks(4, 0)


# -- buffers ---------------------------------------------------------------------------------------------
def test_buffer_sizes_in_bytes():
    assert row_bytes((3, 32, 32), 4) == 12288
    assert buffer_bytes(128, (3, 32, 32), 4) == 128 * 12288
    assert buffer_bytes(3, (10,), 4) == BUFFER_ALIGNMENT  # 120 bytes round up to one granule
    assert buffer_bytes(0, (10,), 4) == BUFFER_ALIGNMENT  # never a zero-byte allocation
    assert align(257) == 512 and align(256) == 256
    with pytest.raises(ArtifactError):
        row_bytes((-1, 32), 4)


def test_lane_buffers_fit_the_largest_profile():
    sizes = lane_buffer_bytes(GAPPED, {"input": ((3, 32, 32), 4), "logits": ((10,), 2)})
    assert sizes == {"input": 64 * 12288, "logits": align(64 * 10 * 2)}


# -- lanes ---------------------------------------------------------------------------------------------
def test_lane_rotation_order():
    assert lane_schedule(5, 2) == [Step(0, 0, None), Step(1, 1, None), Step(2, 0, 0), Step(3, 1, 1), Step(4, 0, 2)]
    assert lane_schedule(2, 4) == [Step(0, 0, None), Step(1, 1, None)]
    assert lane_schedule(0, 2) == []
    with pytest.raises(ValueError):
        lane_schedule(3, 0)


def test_a_lane_is_reused_only_after_its_previous_chunk():
    for chunks in range(12):
        for lanes in range(1, 5):
            last: dict[int, int] = {}
            for step in lane_schedule(chunks, lanes):
                assert step.reuse_of == last.get(step.lane)
                last[step.lane] = step.chunk


def test_lanes_for_call():
    assert lanes_for_call(1, 4) == 1
    assert lanes_for_call(3, 2) == 2
    assert lanes_for_call(5, 0) == 1  # a caller always needs one, and waits for it


# -- graph cache --------------------------------------------------------------------------------------
def test_graph_cache_evicts_least_recent_and_frees():
    freed = []
    cache = GraphCache(2, on_evict=freed.append)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now most recent
    cache.put("c", "C")
    assert freed == ["B"] and "b" not in cache and len(cache) == 2
    cache.put("a", "A2")  # replacing frees the old graph
    assert freed == ["B", "A"]
    cache.clear()
    assert sorted(freed) == ["A", "A2", "B", "C"] and len(cache) == 0


def test_graph_cache_of_size_zero_keeps_nothing():
    freed = []
    cache = GraphCache(0, on_evict=freed.append)
    cache.put("a", "A")
    assert freed == ["A"] and cache.get("a") is None


# -- zero-copy alignment and CUDA-graph sizes -----------------------------------------------------------------
def test_alignment_arithmetic():
    assert aligned(0x1000) and aligned(256) and not aligned(0x1000 + 40)
    assert zero_copy_granule(3 * 32 * 32 * 4, 10 * 4) == 32  # 40 B logits rows: every 32nd row is aligned
    assert zero_copy_granule(3 * 224 * 224 * 2, 1000 * 2) == 16  # fp16, 1,000 classes: 2,000 B rows
    assert zero_copy_granule(256, 512) == 1
    for in_bytes, out_bytes in [(12288, 40), (300_000, 2000), (6, 10)]:
        k = zero_copy_granule(in_bytes, out_bytes)
        assert (k * in_bytes) % 256 == 0 and (k * out_bytes) % 256 == 0


def test_chunks_are_cut_at_whole_granules():
    chunks = plan_chunks(600, [BatchProfile(1, 32, 256)], limit=100, granule=32)
    assert [c.start for c in chunks] == [0, 96, 192, 288, 384, 480, 576]
    assert all(c.start % 32 == 0 for c in chunks)
    # a limit below one granule cannot be rounded: chunks stay as large as allowed
    assert [c.rows for c in plan_chunks(40, [BatchProfile(1, 8, 16)], granule=32)] == [16, 16, 8]
    with pytest.raises(DataError):
        plan_chunks(4, [BatchProfile(1, 1, 4)], granule=0)


def test_graph_batch_sizes_bound_the_captures():
    sizes = graph_batch_sizes(BatchProfile(1, 32, 256))
    assert sizes == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    assert graph_batch_sizes(BatchProfile(8, 12, 16)) == [8, 12, 16]
    assert graph_batch_sizes(BatchProfile(1, 8, 16), limit=10) == [1, 2, 3, 4, 6, 8, 10]
    for rows in range(1, 257):  # every batch runs padded by at most a third of what runs
        run = min(s for s in sizes if s >= rows)
        assert run - rows <= run / 3
    chunks = graph_chunks(plan_chunks(300, [BatchProfile(1, 32, 256)]), [BatchProfile(1, 32, 256)])
    assert [(c.rows, c.run_rows) for c in chunks] == [(256, 256), (44, 48)]
