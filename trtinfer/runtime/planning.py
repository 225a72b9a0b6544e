"""Pure planning logic of the runtime: no CUDA, no TensorRT, no threads.

Everything here decides *what* a backend does with a batch (which profile, which chunks, which
lane, how many bytes), so it can be tested on plain objects on any host; the TensorRT backend
only carries the plans out.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ArtifactError, DataError
from ..manifest import BatchProfile

#: TensorRT requires every I/O tensor address given to ``setTensorAddress`` to be aligned to 256
#: bytes. cudaMalloc's blocks are; an address inside a caller's array (a chunk's start, a slice) may not be.
TENSOR_ALIGNMENT = 256
#: Host and device staging buffers are rounded up to this many bytes (one alignment for both
#: keeps per-row offsets simple).
BUFFER_ALIGNMENT = TENSOR_ALIGNMENT


def choose_profile(batch: int, profiles: Sequence[BatchProfile], current: int | None = None) -> int | None:
    """Index of the profile to run ``batch`` rows with, or None when no profile covers it.

    The context's current profile wins when it covers the batch (switching profiles makes
    TensorRT update layer resources on the next launch); otherwise the covering profile whose
    ``opt`` is nearest, and of those the one with the smallest range.
    """
    if current is not None and 0 <= current < len(profiles) and profiles[current].covers(batch):
        return current
    best: tuple[int, int, int] | None = None
    choice = None
    for index, profile in enumerate(profiles):
        if profile.covers(batch):
            key = (abs(profile.opt - batch), profile.max - profile.min, index)
            if best is None or key < best:
                best, choice = key, index
    return choice


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` of a request, run as ``run_rows`` rows on ``profile``.

    ``run_rows > stop - start`` only when the rows are fewer than every profile's MIN: the chunk
    is then padded with zero rows whose outputs are dropped (rows of a classifier are independent).
    """

    start: int
    stop: int
    run_rows: int
    profile: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def padding(self) -> int:
        return self.run_rows - self.rows


def plan_chunks(rows: int, profiles: Sequence[BatchProfile], limit: int | None = None, granule: int = 1) -> list[Chunk]:
    """Split ``rows`` into chunks each of which some profile can run, in order.

    Chunks are as large as possible (at most ``limit`` and the largest profile MAX, rounded down to
    a multiple of ``granule`` where that leaves at least one granule, so every chunk but the
    last starts a whole number of granules in: see :func:`zero_copy_granule`); a batch that falls
    in a gap between profiles is split at the largest MAX below it; a remainder below every MIN is
    padded up to the smallest MIN.
    """
    if rows < 0:
        raise DataError(f"a batch cannot have {rows} rows")
    if not profiles:
        raise ArtifactError("the engine has no optimization profile", hint="rebuild the engine")
    cap = max(p.max for p in profiles)
    if limit is not None:
        if limit < 1:
            raise DataError(f"chunk limit {limit} must be at least 1")
        cap = min(cap, limit)
    if granule < 1:
        raise DataError(f"chunk granule {granule} must be at least 1")
    if cap >= granule:
        cap -= cap % granule
    chunks: list[Chunk] = []
    start = 0
    current: int | None = None
    while start < rows:
        size = min(rows - start, cap)
        index = choose_profile(size, profiles, current)
        if index is None:
            below = [p.max for p in profiles if p.max < size]
            if below:  # in a gap between profiles (or above the limit's reach): take the largest fit
                size = max(below)
                index = choose_profile(size, profiles, current)
        if index is None:  # fewer rows than any profile's MIN: pad
            index = min(range(len(profiles)), key=lambda i: (profiles[i].min, i))
            if profiles[index].min > cap:
                raise DataError(f"no optimization profile can run {size} rows within the chunk limit {cap} "
                                f"(profiles {', '.join(map(str, profiles))})",
                                hint="raise chunk_size or rebuild the engine with a profile whose MIN is 1")
            chunks.append(Chunk(start, start + size, profiles[index].min, index))
        else:
            chunks.append(Chunk(start, start + size, size, index))
        current = chunks[-1].profile
        start += size
    return chunks


# -- zero-copy alignment and CUDA-graph sizes --------------------------------------------------
def aligned(ptr: int, alignment: int = TENSOR_ALIGNMENT) -> bool:
    """Whether a device address may be bound to a TensorRT I/O tensor as is."""
    return int(ptr) % alignment == 0


def zero_copy_granule(*row_sizes: int, alignment: int = TENSOR_ALIGNMENT) -> int:
    """The fewest rows ``k`` with ``k * row_bytes`` a multiple of ``alignment`` for every tensor.

    A chunk starting ``k * n`` rows into an aligned array starts at an aligned address in every
    tensor: 10 float32 logits are 40 B a row, so ``k`` is 32 rows (1,280 B); a 3x32x32 float32
    input row (12,288 B) needs no rounding at all.
    """
    k = 1
    for size in row_sizes:
        k = math.lcm(k, alignment // math.gcd(alignment, int(size)) if size else 1)
    return k


def graph_batch_sizes(profile: BatchProfile, limit: int | None = None) -> list[int]:
    """The batch sizes a lane captures CUDA graphs for on ``profile``: its MIN and MAX (or ``limit``)
    and the ladder 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ... between them.

    Any batch runs padded up to the next size (at most a third of the rows run are padding), so a
    lane holds at most about two graphs per doubling of the range (16 for 1:32:256) instead of
    one per batch size the batcher happens to form.
    """
    top = profile.max if limit is None else max(profile.min, min(profile.max, limit))
    sizes = {profile.min, top}
    power = 1
    while power < top:
        sizes.update(s for s in (power, power + power // 2) if profile.min < s < top)
        power *= 2
    return sorted(sizes)


def graph_chunks(chunks: Sequence[Chunk], profiles: Sequence[BatchProfile], limit: int | None = None) -> list[Chunk]:
    """``chunks`` with each one's ``run_rows`` raised to its profile's next graph batch size."""
    out = []
    for chunk in chunks:
        sizes = graph_batch_sizes(profiles[chunk.profile], limit)
        run = next((s for s in sizes if s >= chunk.run_rows), chunk.run_rows)
        out.append(dataclasses.replace(chunk, run_rows=run))
    return out


def uniform_chunks(rows: int, max_rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``max_rows`` rows covering ``rows`` (CPU backends)."""
    if max_rows < 1:
        raise DataError(f"chunk size {max_rows} must be at least 1")
    return [(s, min(s + max_rows, rows)) for s in range(0, rows, max_rows)]


# -- buffers ---------------------------------------------------------------------------------
def align(nbytes: int, alignment: int = BUFFER_ALIGNMENT) -> int:
    return -(-int(nbytes) // alignment) * alignment


def row_bytes(row_shape: Sequence[int], itemsize: int) -> int:
    """Bytes of one batch row (the tensor shape without its batch dimension)."""
    if any(int(d) < 0 for d in row_shape):
        raise ArtifactError(f"tensor shape {list(row_shape)} has a dynamic dimension besides the batch",
                            hint="export the model with only the batch dimension dynamic")
    return int(math.prod(int(d) for d in row_shape)) * int(itemsize)


def buffer_bytes(max_rows: int, row_shape: Sequence[int], itemsize: int) -> int:
    """Bytes of a staging buffer for ``max_rows`` rows, rounded up to :data:`BUFFER_ALIGNMENT`."""
    return align(max(1, int(max_rows)) * row_bytes(row_shape, itemsize))


def lane_buffer_bytes(profiles: Sequence[BatchProfile], tensors: dict[str, tuple[Sequence[int], int]]) -> dict[str, int]:
    """Per-tensor staging bytes for one lane: sized for the largest MAX, since a lane may switch
    profiles. ``tensors`` maps name -> (row shape, itemsize)."""
    max_rows = max(p.max for p in profiles)
    return {name: buffer_bytes(max_rows, shape, itemsize) for name, (shape, itemsize) in tensors.items()}


# -- lanes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """Chunk ``chunk`` runs on lane ``lane``; when ``reuse_of`` is set, that earlier chunk used
    the same lane and its output must be collected (waited for) before this chunk overwrites the
    lane's host staging buffers."""

    chunk: int
    lane: int
    reuse_of: int | None


def lane_schedule(num_chunks: int, num_lanes: int) -> list[Step]:
    """Round-robin chunks over lanes so one chunk's copies overlap another's compute.

    With ``num_chunks <= num_lanes`` nothing is reused and the call needs one wait per lane at the
    end; beyond that each reuse waits only for the oldest chunk in flight while the others run.
    """
    if num_lanes < 1:
        raise ValueError("at least one lane is needed")
    return [Step(i, i % num_lanes, i - num_lanes if i >= num_lanes else None) for i in range(num_chunks)]


def lanes_for_call(num_chunks: int, free_lanes: int) -> int:
    """How many lanes a call should hold: enough for its chunks, never more than are free, at least one."""
    return max(1, min(num_chunks, free_lanes))


class GraphCache:
    """Least-recently-used map of CUDA graphs per lane, keyed by (profile, rows) (the rows are
    :func:`graph_batch_sizes`, so few keys exist); bounded so the graphs of many profiles cannot
    hold unbounded device memory. ``on_evict`` frees."""

    def __init__(self, capacity: int, on_evict: Any = None) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._on_evict = on_evict

    def get(self, key: Hashable) -> Any:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, value: Any) -> None:
        if self.capacity == 0:
            if self._on_evict is not None:
                self._on_evict(value)
            return
        old = self._items.pop(key, None)
        if old is not None and old is not value and self._on_evict is not None:
            self._on_evict(old)
        self._items[key] = value
        while len(self._items) > self.capacity:
            _, evicted = self._items.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(evicted)

    def clear(self) -> None:
        items, self._items = list(self._items.values()), OrderedDict()
        if self._on_evict is not None:
            for item in items:
                self._on_evict(item)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
