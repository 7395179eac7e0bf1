"""``KeyIndex``: dense slots for sensor ids, so keyed state is arrays indexed by slot.

Each keyed operator owns one. A slot, once given, is never taken back: the state
arrays it indexes grow with the number of distinct sensors seen (a few dozen
bytes per sensor per operator), which is what Flink's keyed state does too.
Per-slot state grows with ``grown_state``; state per slot *and* something else (a
window, a sketch bucket) is a slot table (``SlotTable``, see ``_key_kernels``).
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.runtime._key_kernels import (
    INT64_MIN,
    NEED_DENSE,
    NEED_KEYS,
    NEED_TABLE,
    _key_slots_kernel,
    _key_table_rebuild_kernel,
    _pair_rehash_kernel,
)

_MIN_KEYS = 64
_MIN_TABLE = 16
# Ids in [0, max(_DENSE_FLOOR, _DENSE_PER_KEY * keys)) are looked up by one load;
# larger (sparse) and negative ids go to the hash table. Bounds ``dense`` at
# 4 bytes x 16 per key, and never above _DENSE_CAP ids (64 MB).
_DENSE_FLOOR = 1 << 16
_DENSE_PER_KEY = 16
_DENSE_CAP = 1 << 24


class KeyIndex:
    """Sensor id (int32) -> slot ``0..n-1``, in order of first appearance."""

    def __init__(self) -> None:
        self.dense = np.full(0, -1, np.int32)
        self.h_key = np.zeros(_MIN_TABLE, np.int32)
        self.h_slot = np.full(_MIN_TABLE, -1, np.int32)
        self._keys = np.zeros(_MIN_KEYS, np.int32)
        self.n = 0
        self._n_table = 0

    @property
    def lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What ``_key_kernels._slot_kernel`` takes: ``(dense, h_key, h_slot)``."""
        return self.dense, self.h_key, self.h_slot

    @property
    def keys(self) -> np.ndarray:
        """Slot -> sensor id, for slots ``0..n-1`` (a view)."""
        return self._keys[: self.n]

    def reserve(self, sid: np.ndarray) -> None:
        """Room for every id of ``sid`` as a new key, made at once, so that ``slots(sid)``
        adds them in one pass (a restore: the keys of a snapshot).

        ``slots`` alone grows ``keys``, ``dense`` and the table as the ids come: for 1M
        new ids ~80 stops and copies of a ``dense`` that grows with the key count.
        Here ``dense`` covers the ids of ``sid`` below the bound it would have with
        ``n + len(sid)`` keys, the table takes the rest at load <= 0.5. Which of the two
        holds an id changes no slot."""
        sid = np.asarray(sid, np.int32)
        if len(sid) == 0:
            return
        total = self.n + len(sid)
        if len(self._keys) < total:
            self._keys = _grown(self._keys, _pow2_at_least(total), 0)
        limit = min(_DENSE_CAP, max(_DENSE_FLOOR, _DENSE_PER_KEY * (total + 1)))
        below = (sid >= 0) & (sid < limit)
        if below.any():
            top = int(sid[below].max())
            if top >= len(self.dense):
                size = max(1024, len(self.dense))
                while size <= top:
                    size *= 2
                self.dense = _grown(self.dense, min(size, limit), -1)
        outside = len(sid) - int(np.count_nonzero(below))
        cap = len(self.h_key)
        while (self._n_table + outside + 1) * 2 > cap:
            cap *= 2
        if cap > len(self.h_key):
            self.h_key, self.h_slot = _key_table_rebuild_kernel(self.h_key, self.h_slot, cap)

    def slots(self, sid: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The slot of every id of ``sid`` (int32), adding the ids not seen before."""
        sid = np.asarray(sid, np.int32)
        if out is None:
            out = np.empty(len(sid), np.int32)
        start = 0
        while True:
            limit = min(_DENSE_CAP, max(_DENSE_FLOOR, _DENSE_PER_KEY * (self.n + 1)))
            start, self.n, self._n_table, need = _key_slots_kernel(
                sid, start, out, *self.lookup, self._keys, self.n, self._n_table, limit
            )
            if start >= len(sid):
                return out
            if need == NEED_KEYS:
                self._keys = _grown(self._keys, 2 * len(self._keys), 0)
            elif need == NEED_TABLE:
                self.h_key, self.h_slot = _key_table_rebuild_kernel(
                    self.h_key, self.h_slot, 2 * len(self.h_key)
                )
            elif need == NEED_DENSE:
                size = max(1024, len(self.dense))
                while size <= int(sid[start]):
                    size *= 2
                self.dense = _grown(self.dense, min(size, limit), -1)


def _pow2_at_least(n: int) -> int:
    size = _MIN_KEYS
    while size < n:
        size *= 2
    return size


def _grown(old: np.ndarray, size: int, fill: int) -> np.ndarray:
    new = np.full(size, fill, old.dtype)
    new[: len(old)] = old
    return new


def grown_state(old: np.ndarray, n: int, fill: float | int) -> np.ndarray:
    """``old`` (slots along axis 0) with room for at least ``n`` slots, doubling."""
    if len(old) >= n:
        return old
    size = max(_MIN_KEYS, len(old))
    while size < n:
        size *= 2
    new = np.full((size, *old.shape[1:]), fill, old.dtype)
    new[: len(old)] = old
    return new


_MIN_TABLE_CAP = 64

SlotTable = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(k_slot int32, k_two int64, ints int64[cap, ni], floats float64[cap, nf])``."""


def capacity_for(n_entries: int) -> int:
    """The capacity of a fresh slot table for ``n_entries``: load <= 0.25, at least 64."""
    cap = _MIN_TABLE_CAP
    while cap < 4 * n_entries:
        cap *= 2
    return cap


def slot_table(
    k_slot: np.ndarray, k_two: np.ndarray, ints: np.ndarray, floats: np.ndarray
) -> tuple[SlotTable, int]:
    """A slot table of these entries (compact arrays), and its entry count."""
    n = len(k_slot)
    entries = (
        np.asarray(k_slot, np.int32),
        np.asarray(k_two, np.int64),
        np.asarray(ints, np.int64).reshape(n, -1) if n else np.asarray(ints, np.int64),
        np.asarray(floats, np.float64).reshape(n, -1) if n else np.asarray(floats, np.float64),
    )
    return _pair_rehash_kernel(entries, INT64_MIN, capacity_for(n))


def rehashed(
    table: SlotTable, n_used: int, keep_from: int = INT64_MIN, room: int = 0
) -> tuple[SlotTable, int]:
    """``table`` without the keys ``k_two < keep_from``, with room for ``room`` more
    entries at load <= 0.5: grown (doubling) when short of it, shrunk to load 0.25 when
    at most an eighth full, else the capacity it has."""
    cap = len(table[0])
    need = n_used + room
    if need * 2 > cap:
        while need * 2 > cap:
            cap *= 2
    elif need * 8 <= cap:
        cap = max(capacity_for(need), _MIN_TABLE_CAP)
    return _pair_rehash_kernel(table, keep_from, cap)


def empty_slot_table(n_ints: int, n_floats: int) -> tuple[SlotTable, int]:
    return slot_table(
        np.empty(0, np.int32),
        np.empty(0, np.int64),
        np.empty((0, n_ints), np.int64),
        np.empty((0, n_floats), np.float64),
    )
