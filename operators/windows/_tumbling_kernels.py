"""numba kernels of ``TumblingWindow``: numpy in, numpy out, no Arrow or Rx.

Each sensor's newest window lives in dense arrays indexed by its ``KeyIndex`` slot;
older open windows (out-of-order rows) in a slot table keyed by ``(slot, window)``
(``_key_kernels``): ``ints[:, 0]`` the count, ``floats[:, 0:3]`` sum, min, max. A
kernel that claims entries stops before the load would exceed 0.5 and returns how
far it got; the caller grows the table (``key_index.rehashed``) and resumes.
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.runtime._key_kernels import INT64_MAX, _jit, _pair_claim, _slot_kernel


@_jit
def _window_add_kernel(table, h, new, c, total, lo, hi):
    """Fold ``c`` rows (sum ``total``, min ``lo``, max ``hi``) into table entry ``h``
    (``new``: just claimed)."""
    _, _, ints, floats = table
    if new:
        ints[h, 0] = c
        floats[h, 0] = total
        floats[h, 1] = lo
        floats[h, 2] = hi
        return
    ints[h, 0] += c
    floats[h, 0] += total
    # min/max skip NaN unless every value is NaN (as polars min/max).
    m = floats[h, 1]
    if lo < m or m != m:
        floats[h, 1] = lo
    m = floats[h, 2]
    if hi > m or m != m:
        floats[h, 2] = hi


@_jit
def _window_update_kernel(
    sid, ts, val, start, size_ns, fire_below, lookup, cur, moved, n_moved, deferred, n_def
):
    """Aggregate rows ``start..`` of windows ``>= fire_below``; count the others late.

    Each sensor's newest window lives in the dense per-slot arrays ``cur``
    (``win, cnt, sum, min, max``; ``lookup`` gives the slot). When a sensor moves
    on to a later window, its entry is appended to ``moved`` (``slot, win, cnt,
    sum, min, max``); a row of an older window still open (out of order) is
    appended to ``deferred`` (row index). Both go to the hash table afterwards
    (``_window_table_kernel``), so this loop has no table code in it: in-order
    data touches one slot's arrays per row.

    Returns ``(next_row, late, n_moved, n_def)``; ``next_row < len(ts)`` means a
    sensor without a slot (or slot state) yet: add it and resume there.
    """
    dense, h_key, h_slot = lookup
    c_win, c_cnt, c_sm, c_mn, c_mx = cur
    m_slot, m_win, m_cnt, m_sm, m_mn, m_mx = moved
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
                m_slot[n_moved] = k
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
    moved, m_pos, n_moved, rows, deferred, d_pos, n_def, size_ns, lookup, table, n_used
):
    """Fold ``moved[m_pos:n_moved]`` entries, then the ``deferred[d_pos:n_def]`` rows of
    ``rows = (sid, ts, value)`` (slots from ``lookup``), into the slot table, in that
    order (a window's moved entry holds its rows that came before any deferred one).

    Returns ``(m_pos, d_pos, n_used)``; stopping short means: grow the table, resume.
    """
    m_slot, m_win, m_cnt, m_sm, m_mn, m_mx = moved
    sid, ts, val = rows
    dense, h_key, h_slot = lookup
    k_slot, k_win = table[0], table[1]
    while m_pos < n_moved:
        h, n_new = _pair_claim(k_slot, k_win, m_slot[m_pos], m_win[m_pos], n_used)
        if h < 0:
            return m_pos, d_pos, n_used
        c, total, lo, hi = m_cnt[m_pos], m_sm[m_pos], m_mn[m_pos], m_mx[m_pos]
        _window_add_kernel(table, h, n_new != n_used, c, total, lo, hi)
        n_used = n_new
        m_pos += 1
    while d_pos < n_def:
        i = deferred[d_pos]
        k = _slot_kernel(sid[i], dense, h_key, h_slot)
        h, n_new = _pair_claim(k_slot, k_win, k, ts[i] // size_ns, n_used)
        if h < 0:
            return m_pos, d_pos, n_used
        v = val[i]
        _window_add_kernel(table, h, n_new != n_used, 1, v, v, v)
        n_used = n_new
        d_pos += 1
    return m_pos, d_pos, n_used


@_jit
def _window_count_fired_kernel(k_slot, k_win, fire_below):
    n = 0
    for h in range(k_slot.shape[0]):
        if k_slot[h] >= 0 and k_win[h] < fire_below:
            n += 1
    return n


@_jit
def _window_emit_kernel(table, keys, fire_below, n_fire, size_ns):
    """The ``n_fire`` entries of windows ``< fire_below``, sorted by (window, sensor)
    (``keys``: slot -> sensor id).

    Returns ``(sensor_id, window_start, window_end, count, mean, min, max)``.
    """
    k_slot, k_win, ints, floats = table
    entries = np.empty(n_fire, np.int64)
    j = 0
    for h in range(k_slot.shape[0]):
        if k_slot[h] >= 0 and k_win[h] < fire_below:
            entries[j] = h
            j += 1
    sid = keys[k_slot[entries]]
    by_sid = np.argsort(sid, kind="mergesort")
    entries = entries[by_sid]
    entries = entries[np.argsort(k_win[entries], kind="mergesort")]
    o_sid = keys[k_slot[entries]]
    o_start = np.empty(n_fire, np.int64)
    o_end = np.empty(n_fire, np.int64)
    o_cnt = np.empty(n_fire, np.int64)
    o_mean = np.empty(n_fire, np.float64)
    o_min = np.empty(n_fire, np.float64)
    o_max = np.empty(n_fire, np.float64)
    last_start = INT64_MAX - size_ns
    for j in range(n_fire):
        h = entries[j]
        start = k_win[h] * size_ns
        o_start[j] = start
        # The window holding ts near 2**63 cannot state its end: clamp it.
        o_end[j] = start + size_ns if start <= last_start else INT64_MAX
        o_cnt[j] = ints[h, 0]
        o_mean[j] = floats[h, 0] / ints[h, 0]
        o_min[j] = floats[h, 1]
        o_max[j] = floats[h, 2]
    return o_sid, o_start, o_end, o_cnt, o_mean, o_min, o_max


@_jit
def _newest_kernel(slots, win, n_slots):
    """Per entry of a restore: is it the newest window of its slot (the greatest
    ``win``; of equal ones the last)? ``slots`` covers every slot ``0..n_slots-1``."""
    best = np.full(n_slots, -1, np.int64)
    for i in range(slots.shape[0]):
        s = slots[i]
        b = best[s]
        if b < 0 or win[i] >= win[b]:
            best[s] = i
    newest = np.zeros(slots.shape[0], np.bool_)
    for s in range(n_slots):
        newest[best[s]] = True
    return newest
