"""numba kernels of ``TumblingWindow``: numpy in, numpy out, no Arrow or Rx.

Keyed state lives in open-addressing hash tables (power-of-two capacity, linear
probing) made of parallel numpy arrays owned by the operator logic. A kernel that
inserts stops before the load would exceed 0.5 and returns how far it got; the
caller grows the table with a rebuild kernel and resumes. Entries are never
deleted in place: removal is a rebuild that copies the survivors, so there are
no tombstones.

Window table: ``(cnt, k_sid, k_win, sm, mn, mx)``; a slot is empty iff ``cnt == 0``.
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.runtime._key_kernels import INT64_MAX, _hash_kernel, _jit, _slot_kernel

# ----------------------------------------------------------------- windows


@_jit
def _window_find_kernel(cnt, k_sid, k_win, s, w):
    """The table slot of window ``(s, w)``, or the empty slot where it would go."""
    mask = cnt.shape[0] - 1
    h = _hash_kernel(s, w) & mask
    while cnt[h] != 0 and (k_win[h] != w or k_sid[h] != s):
        h = (h + 1) & mask
    return h


@_jit
def _window_add_kernel(table, h, s, w, c, total, lo, hi):
    """Fold ``c`` rows (sum ``total``, min ``lo``, max ``hi``) into table slot ``h``."""
    cnt, k_sid, k_win, sm, mn, mx = table
    if cnt[h] == 0:
        k_sid[h] = s
        k_win[h] = w
        cnt[h] = c
        sm[h] = total
        mn[h] = lo
        mx[h] = hi
        return
    cnt[h] += c
    sm[h] += total
    # min/max skip NaN unless every value is NaN (as polars min/max).
    m = mn[h]
    if lo < m or m != m:
        mn[h] = lo
    m = mx[h]
    if hi > m or m != m:
        mx[h] = hi


@_jit
def _window_update_kernel(
    sid, ts, val, start, size_ns, fire_below, lookup, cur, moved, n_moved, deferred, n_def
):
    """Aggregate rows ``start..`` of windows ``>= fire_below``; count the others late.

    Each sensor's newest window lives in the dense per-slot arrays ``cur``
    (``win, cnt, sum, min, max``; ``lookup`` gives the slot). When a sensor moves
    on to a later window, its entry is appended to ``moved`` (``sid, win, cnt,
    sum, min, max``); a row of an older window still open (out of order) is
    appended to ``deferred`` (row index). Both go to the hash table afterwards
    (``_window_table_kernel``), so this loop has no table code in it: in-order
    data touches one slot's arrays per row.

    Returns ``(next_row, late, n_moved, n_def)``; ``next_row < len(ts)`` means a
    sensor without a slot (or slot state) yet: add it and resume there.
    """
    dense, h_key, h_slot = lookup
    c_win, c_cnt, c_sm, c_mn, c_mx = cur
    m_sid, m_win, m_cnt, m_sm, m_mn, m_mx = moved
    n_slots = c_win.shape[0]
    late = 0
    # Window of the previous row: time-ordered data skips the integer division.
    lo = np.int64(1)
    hi = np.int64(0)
    w = np.int64(0)
    n = ts.shape[0]
    for i in range(np.uint64(start), np.uint64(n)):  # unsigned: see _key_kernels
        t = ts[i]
        if t < lo or t >= hi:
            w = t // size_ns  # floor division, also for negative ts
            lo = w * size_ns
            hi = lo + size_ns
        if w < fire_below:
            late += 1
            continue
        s = sid[i]
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= n_slots:
            return np.int64(i), late, n_moved, n_def
        v = val[i]
        cw = c_win[k]
        if w == cw:  # (an emptied entry has win INT64_MIN, never a row's)
            c_cnt[k] += 1
            c_sm[k] += v
            # min/max skip NaN unless every value is NaN (as polars min/max);
            # written as selects, not branches.
            m = c_mn[k]
            c_mn[k] = v if (v < m) | (m != m) else m
            m = c_mx[k]
            c_mx[k] = v if (v > m) | (m != m) else m
        elif w > cw:
            if c_cnt[k] != 0:
                m_sid[n_moved] = s
                m_win[n_moved] = cw
                m_cnt[n_moved] = c_cnt[k]
                m_sm[n_moved] = c_sm[k]
                m_mn[n_moved] = c_mn[k]
                m_mx[n_moved] = c_mx[k]
                n_moved += 1
            c_win[k] = w
            c_cnt[k] = 1
            c_sm[k] = v
            c_mn[k] = v
            c_mx[k] = v
        else:
            deferred[n_def] = i
            n_def += 1
    return n, late, n_moved, n_def


@_jit
def _window_table_kernel(
    moved, m_pos, n_moved, rows, deferred, d_pos, n_def, size_ns, table, n_used
):
    """Fold ``moved[m_pos:n_moved]`` entries, then the ``deferred[d_pos:n_def]`` rows of
    ``rows = (sid, ts, value)``, into the hash table, in that order (a window's
    moved entry holds its rows that came before any deferred one).

    Returns ``(m_pos, d_pos, n_used)``; stopping short means: grow the table, resume.
    """
    m_sid, m_win, m_cnt, m_sm, m_mn, m_mx = moved
    sid, ts, val = rows
    cnt = table[0]
    cap = cnt.shape[0]
    while m_pos < n_moved:
        s, w = m_sid[m_pos], m_win[m_pos]
        h = _window_find_kernel(*table[:3], s, w)
        if cnt[h] == 0:
            if (n_used + 1) * 2 > cap:
                return m_pos, d_pos, n_used
            n_used += 1
        _window_add_kernel(table, h, s, w, m_cnt[m_pos], m_sm[m_pos], m_mn[m_pos], m_mx[m_pos])
        m_pos += 1
    while d_pos < n_def:
        i = deferred[d_pos]
        s, v = sid[i], val[i]
        w = ts[i] // size_ns
        h = _window_find_kernel(*table[:3], s, w)
        if cnt[h] == 0:
            if (n_used + 1) * 2 > cap:
                return m_pos, d_pos, n_used
            n_used += 1
        _window_add_kernel(table, h, s, w, 1, v, v, v)
        d_pos += 1
    return m_pos, d_pos, n_used


@_jit
def _window_count_fired_kernel(cnt, k_win, fire_below):
    n = 0
    for h in range(cnt.shape[0]):
        if cnt[h] != 0 and k_win[h] < fire_below:
            n += 1
    return n


@_jit
def _window_emit_kernel(cnt, k_sid, k_win, sm, mn, mx, fire_below, n_fire, size_ns):
    """The ``n_fire`` entries of windows ``< fire_below``, sorted by (window, sensor).

    Returns ``(sensor_id, window_start, window_end, count, mean, min, max)``.
    """
    slots = np.empty(n_fire, np.int64)
    j = 0
    for h in range(cnt.shape[0]):
        if cnt[h] != 0 and k_win[h] < fire_below:
            slots[j] = h
            j += 1
    by_sid = np.argsort(k_sid[slots], kind="mergesort")
    slots = slots[by_sid]
    slots = slots[np.argsort(k_win[slots], kind="mergesort")]
    o_sid = k_sid[slots]
    o_start = np.empty(n_fire, np.int64)
    o_end = np.empty(n_fire, np.int64)
    o_cnt = cnt[slots]
    o_mean = np.empty(n_fire, np.float64)
    last_start = INT64_MAX - size_ns
    for j in range(n_fire):
        h = slots[j]
        start = k_win[h] * size_ns
        o_start[j] = start
        # The window holding ts near 2**63 cannot state its end: clamp it.
        o_end[j] = start + size_ns if start <= last_start else INT64_MAX
        o_mean[j] = sm[h] / cnt[h]
    return o_sid, o_start, o_end, o_cnt, o_mean, mn[slots], mx[slots]


@_jit
def _window_rebuild_kernel(cnt, k_sid, k_win, sm, mn, mx, keep_from, new_cap):
    """A fresh table of ``new_cap`` slots holding the entries of windows ``>= keep_from``.

    Growth passes ``keep_from = INT64_MIN``; restore passes compact entry arrays.
    """
    n_cnt = np.zeros(new_cap, np.int64)
    n_sid = np.zeros(new_cap, np.int32)
    n_win = np.zeros(new_cap, np.int64)
    n_sm = np.zeros(new_cap, np.float64)
    n_mn = np.zeros(new_cap, np.float64)
    n_mx = np.zeros(new_cap, np.float64)
    mask = new_cap - 1
    n_used = 0
    for j in range(cnt.shape[0]):
        if cnt[j] == 0 or k_win[j] < keep_from:
            continue
        h = _hash_kernel(k_sid[j], k_win[j]) & mask
        while n_cnt[h] != 0:
            h = (h + 1) & mask
        n_cnt[h] = cnt[j]
        n_sid[h] = k_sid[j]
        n_win[h] = k_win[j]
        n_sm[h] = sm[j]
        n_mn[h] = mn[j]
        n_mx[h] = mx[j]
        n_used += 1
    return (n_cnt, n_sid, n_win, n_sm, n_mn, n_mx), n_used
