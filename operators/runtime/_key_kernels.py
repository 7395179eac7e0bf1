"""numba kernels of keyed state: ``KeyIndex`` (sensor id -> dense slot) and the tables
keyed by ``(slot, int64)``, numpy in and out; the decorators every kernel module uses.

Slots are numbered ``0..n-1`` in order of first appearance, so per-key state can
live in plain arrays indexed by slot (as a hand-written kernel indexes by sensor
id) instead of a hash table probed per row. Two parts:

- ``dense int32[d]``: the slot of ids ``0 <= id < d`` (-1: absent), one load per row;
- an open-addressing table (``h_key int32[cap]``, ``h_slot int32[cap]``, -1 empty,
  linear probing) for the ids outside it: negative, or too large for ``dense``.

An id is looked up in ``dense`` first and then in the table, so ids put in the
table before ``dense`` grew past them are still found there.

Row loops write the dense load out and call ``_slot_kernel`` only on a miss::

    k = -1
    if 0 <= s < dense.shape[0]:
        k = dense[s]
    if k < 0:
        k = _slot_kernel(s, dense, h_key, h_slot)

Calling ``_slot_kernel`` for every row, or a helper doing the dense load
(``inline="always"`` included), measured 2-5x slower per loop here.

Row loops that resume at ``start`` count with an unsigned index,
``range(np.uint64(start), np.uint64(n))``: numba wraps negative indices, and
with a signed ``i`` that LLVM cannot prove non-negative (a loop from ``start``,
unlike one from 0) every load checks for it. Unsigned: TumblingWindow's and
ThresholdAlarm's row loops 1.17x and 1.20x faster. Mixed with signed integers a
``uint64`` makes float64 in numba, so ``i`` is cast back (``np.int64(i)``) wherever it
is more than an index.

State per key *and* something else (a window, a sketch bucket) lives in a *slot
table*: open addressing (power-of-two capacity, linear probing) over
``k_slot int32[cap]`` (-1: empty) and ``k_two int64[cap]``, the caller's value
columns beside them. ``_pair_claim`` finds or claims an entry, refusing before the
load passes 0.5 (the caller grows with ``_pair_rehash_kernel`` and resumes); entries
are never deleted in place: removal is a rehash that keeps the survivors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np

# Kernels are typed by numba when compiled, not by mypy: to a caller, any function.
_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
_jit = cast(_Decorator, numba.njit(cache=True, nogil=True))
# Row-level helpers of hot loops, inlined into the caller by numba itself.
_inline = cast(_Decorator, numba.njit(cache=True, nogil=True, inline="always"))

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Odd 64-bit multipliers (golden ratio and splitmix64), as signed int64: numba
# int64 multiplication wraps, which is what a multiplicative hash wants.
_M1 = -7046029254386353131
_M2 = -4658895280553007687
_M3 = -7723592293110705685


@_jit
def _hash_kernel(sid: np.int64, win: np.int64) -> np.int64:
    h = np.int64(sid) * _M1 + np.int64(win) * _M2
    h ^= h >> 31
    h *= _M3
    h ^= h >> 29
    return h


# What ``_key_slots_kernel`` needs before it can go on.
NEED_NOTHING = 0
NEED_KEYS = 1  # ``keys`` (slot -> id) is full
NEED_TABLE = 2  # the table would pass load 0.5
NEED_DENSE = 3  # ``dense`` should grow to cover the id of the row it stopped at


@_jit
def _slot_kernel(s, dense, h_key, h_slot):
    """The slot of id ``s``, or -1."""
    if 0 <= s < dense.shape[0]:
        k = dense[s]
        if k >= 0:
            return k
    mask = h_key.shape[0] - 1
    h = _hash_kernel(s, 0) & mask
    while h_slot[h] >= 0:
        if h_key[h] == s:
            return h_slot[h]
        h = (h + 1) & mask
    return -1


@_jit
def _key_slots_kernel(sid, start, out, dense, h_key, h_slot, keys, n, n_table, dense_limit):
    """Write the slot of ``sid[i]`` to ``out[i]`` for ``i >= start``, adding new ids.

    A new id ``0 <= id < dense_limit`` goes to ``dense`` (``NEED_DENSE`` if it
    must grow first), any other to the table. Returns ``(next_row, n, n_table,
    need)``; ``next_row < len(sid)`` means: make room as ``need`` says and resume.
    """
    cap = h_key.shape[0]
    mask = cap - 1
    d = dense.shape[0]
    # Known ids in the dense range first, in a loop with no call in it; the general
    # loop below starts at the first miss. It stops there: going on to the end
    # made every resume (a grown ``dense``, table or ``keys``) scan all the rows
    # left again, quadratic in a batch of new ids (a restore: 83 resumes, 0.43 s
    # for 1M ids, 36% of the time the scanning).
    first_miss = sid.shape[0]
    for i in range(start, sid.shape[0]):
        s = sid[i]
        k = dense[s] if 0 <= s < d else -1
        if k < 0:
            first_miss = i
            break
        out[i] = k
    for i in range(first_miss, sid.shape[0]):
        s = sid[i]
        if 0 <= s < d:
            k = dense[s]
            if k >= 0:
                out[i] = k
                continue
        # The table probe written out, not ``_slot_kernel``: a call taking arrays
        # per new id kept one cache miss of ``dense`` in flight at a time (1M new
        # ids in random order: 77 ms called, 28 ms written out).
        h = _hash_kernel(s, 0) & mask
        k = -1
        while h_slot[h] >= 0:
            if h_key[h] == s:
                k = h_slot[h]
                break
            h = (h + 1) & mask
        if k >= 0:
            out[i] = k
            continue
        if n >= keys.shape[0]:
            return i, n, n_table, NEED_KEYS
        if 0 <= s < d:
            dense[s] = n
        elif 0 <= s < dense_limit:
            return i, n, n_table, NEED_DENSE
        else:
            if (n_table + 1) * 2 > cap:
                return i, n, n_table, NEED_TABLE
            # ``h``: the empty entry the probe above ended at.
            h_key[h] = s
            h_slot[h] = n
            n_table += 1
        keys[n] = s
        out[i] = n
        n += 1
    return sid.shape[0], n, n_table, NEED_NOTHING


@_jit
def _key_table_rebuild_kernel(h_key, h_slot, new_cap):
    n_key = np.zeros(new_cap, np.int32)
    n_slot = np.full(new_cap, -1, np.int32)
    mask = new_cap - 1
    for j in range(h_key.shape[0]):
        if h_slot[j] < 0:
            continue
        h = _hash_kernel(h_key[j], 0) & mask
        while n_slot[h] >= 0:
            h = (h + 1) & mask
        n_key[h] = h_key[j]
        n_slot[h] = h_slot[j]
    return n_key, n_slot


# -------------------------------------------------------------- slot tables


@_jit
def _pair_find(k_slot, k_two, s, w):
    """The index of key ``(s, w)``, or of the empty entry where it would go."""
    mask = k_slot.shape[0] - 1
    h = _hash_kernel(s, w) & mask
    while k_slot[h] >= 0 and (k_two[h] != w or k_slot[h] != s):
        h = (h + 1) & mask
    return h


@_jit
def _pair_claim(k_slot, k_two, s, w, n_used):
    """``(index, n_used)`` of key ``(s, w)``, claimed if new (its values are the caller's
    to set: whatever the entry held before); index -1 if claiming would pass load 0.5."""
    h = _pair_find(k_slot, k_two, s, w)
    if k_slot[h] < 0:
        if (n_used + 1) * 2 > k_slot.shape[0]:
            return np.int64(-1), n_used
        k_slot[h] = s
        k_two[h] = w
        n_used += 1
    return h, n_used


@_jit
def _pair_rehash_kernel(table, keep_from, new_cap):
    """The entries of keys ``k_two >= keep_from`` of ``table = (k_slot, k_two, ints,
    floats)`` in a fresh table of ``new_cap`` entries; returns ``(table, n_used)``."""
    k_slot, k_two, ints, floats = table
    n_ints = ints.shape[1]
    n_floats = floats.shape[1]
    new = (
        np.full(new_cap, -1, np.int32),
        np.zeros(new_cap, np.int64),
        np.zeros((new_cap, n_ints), np.int64),
        np.zeros((new_cap, n_floats), np.float64),
    )
    o_slot, o_two, o_ints, o_floats = new
    n_used = 0
    for j in range(k_slot.shape[0]):
        if k_slot[j] < 0 or k_two[j] < keep_from:
            continue
        h = _pair_find(o_slot, o_two, k_slot[j], k_two[j])
        o_slot[h] = k_slot[j]
        o_two[h] = k_two[j]
        for c in range(n_ints):
            o_ints[h, c] = ints[j, c]
        for c in range(n_floats):
            o_floats[h, c] = floats[j, c]
        n_used += 1
    return new, n_used
