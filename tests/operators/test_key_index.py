"""KeyIndex against a dict: slots in order of first appearance, for any int32 ids."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from telepipe.operators.runtime._key_kernels import _slot_kernel
from telepipe.operators.runtime.key_index import KeyIndex

IDS = st.integers(-(2**31), 2**31 - 1) | st.integers(-5, 70_000) | st.sampled_from([0, 65_535])


def reference_slots(batches: list[list[int]]) -> list[list[int]]:
    seen: dict[int, int] = {}
    return [[seen.setdefault(s, len(seen)) for s in batch] for batch in batches]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(IDS, max_size=300), max_size=6))
def test_slots_match_first_appearance(batches: list[list[int]]) -> None:
    index = KeyIndex()
    got = [index.slots(np.array(b, np.int32)).tolist() for b in batches]
    assert got == reference_slots(batches)
    everything = [s for b in batches for s in b]
    assert index.n == len(set(everything))
    assert index.keys.tolist() == list(dict.fromkeys(everything))
    for slot, s in enumerate(index.keys.tolist()):
        assert _slot_kernel(np.int32(s), *index.lookup) == slot
    for absent in {-(2**31), 2**31 - 1, -1, 0, 123_456} - set(everything):
        assert _slot_kernel(np.int32(absent), *index.lookup) == -1


def test_dense_range_grows_and_earlier_table_ids_stay_found() -> None:
    index = KeyIndex()
    # 200k in the table first (beyond the dense floor for so few keys) ...
    assert index.slots(np.array([200_000, 3], np.int32)).tolist() == [0, 1]
    # ... then enough keys that the dense range covers it: it is still slot 0.
    many = np.arange(20_000, dtype=np.int32) * 10
    index.slots(many)
    assert index.dense.shape[0] > 200_000
    assert index.slots(np.array([200_000, 3, 0], np.int32)).tolist() == [0, 1, 2]
    assert index.n == 2 + len(many)


def test_many_sparse_ids() -> None:
    rng = np.random.default_rng(5)
    ids = rng.integers(-(2**31), 2**31 - 1, 50_000).astype(np.int32)
    index = KeyIndex()
    slots = index.slots(np.concatenate([ids, ids[::-1]]))
    _, first = np.unique(ids, return_index=True)
    assert index.n == len(first)
    np.testing.assert_array_equal(index.keys[slots], np.concatenate([ids, ids[::-1]]))
    assert index.dense.nbytes <= 4 << 20  # sparse ids do not blow up the dense part


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(IDS, max_size=300), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_reserve_changes_no_slot(batches: list[list[int]], reserve: list[bool]) -> None:
    """``reserve`` (a restore's sizing at once, duplicates and known ids too) before any
    batch: the same slots as without it, and every id found after."""
    index = KeyIndex()
    got = []
    for batch, first in zip(batches, reserve, strict=False):
        ids = np.array(batch, np.int32)
        if first:
            index.reserve(ids)
        got.append(index.slots(ids).tolist())
    assert got == reference_slots(batches)
    for slot, s in enumerate(index.keys.tolist()):
        assert _slot_kernel(np.int32(s), *index.lookup) == slot


def test_reserved_index_adds_in_one_pass_and_keeps_growing() -> None:
    """1M-scale restore shape (a few hundred thousand ids over a wide range, some
    outside the dense bound): sized once, then more keys arrive and grow it as usual."""
    rng = np.random.default_rng(9)
    ids = rng.permutation(np.arange(300_000, dtype=np.int32) * 7 + 1)
    wide = rng.choice(np.arange(2**30, 2**30 + 10**6, dtype=np.int32), 20_000, replace=False)
    restored = np.concatenate([ids, -wide, wide])
    index = KeyIndex()
    index.reserve(restored)
    sizes = (len(index.dense), len(index.h_key), len(index._keys))
    np.testing.assert_array_equal(index.slots(restored), np.arange(len(restored)))
    assert (len(index.dense), len(index.h_key), len(index._keys)) == sizes  # no regrowth
    assert index.dense.nbytes <= 4 * 16 * (len(restored) + 1)
    more = np.arange(3_000_000, 3_400_000, dtype=np.int32)
    np.testing.assert_array_equal(
        index.slots(np.concatenate([more, restored[::-1]])),
        np.r_[np.arange(len(more)) + len(restored), np.arange(len(restored))[::-1]],
    )
    assert index.keys.tolist() == [*restored.tolist(), *more.tolist()]
