"""The latency ring: a batch's samples written at once land exactly where one-by-one writes would."""

from __future__ import annotations

import numpy as np
import pytest

from trtinfer.runtime.stats import _Ring


@pytest.mark.parametrize("chunks", [[3, 4], [5, 5, 2], [13], [2, 9, 1, 7]])
def test_add_many_equals_adding_one_at_a_time(chunks):
    rng = np.random.default_rng(sum(chunks))
    batched, single = _Ring(8), _Ring(8)
    for n in chunks:  # wrapping around the end, and a batch longer than the ring
        values = [float(v) for v in rng.random(n)]
        batched.add_many(values)
        for v in values:
            single.add(v)
        assert np.array_equal(batched._buf, single._buf)
        assert batched._next == single._next and batched._count == single._count
