"""numba kernels of ``SlidingWindow``: numpy in, numpy out, no Arrow or Rx.

Rows are aggregated into *panes* (slices of width ``gcd(size, slide)``, as in
Flink's sliding-window slicing): every window is a whole number of panes and a
row belongs to exactly one, so a row costs one accumulator update instead of
``size/slide``. Each sensor's newest pane lives in dense per-slot accumulators
(``KeyIndex`` slots); it is folded (Chan et al.) into the windows holding it
when the sensor moves on to a later pane, or when the watermark reaches the end
of the earliest of those windows. A row of an older pane (out of order) goes
straight into its windows. Window accumulators live in a slot table keyed by
``(sensor slot, window index)`` (``_key_kernels``; ``ia``/``fa`` its columns). Panes are
folded at row arrivals and watermarks only, so outputs do not depend on how
the rows between two watermarks were batched.
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.runtime._key_kernels import INT64_MIN, _jit, _pair_claim, _slot_kernel
from telepipe.operators.windows._accumulators import (
    A_MAX,
    A_MIN,
    A_SUM,
    I_CNT,
    _acc_add,
    _acc_add_full,
    _acc_copy,
    _acc_first,
    _acc_merge,
    _sketch_code,
    _sketch_insert,
    _sketch_two,
)

NEED_KEY = 1  # a sensor without a slot (or pane) yet
NEED_TABLE = 2  # the window table could pass load 0.5


@_jit
def _windows_of(t, size, slide):
    """``(klo, khi)``: the windows ``k*slide <= t < k*slide + size``; none if klo > khi."""
    khi = t // slide
    q0 = (size - 1) // slide
    rem = (size - 1) - q0 * slide
    jmax = q0 if t - khi * slide <= rem else q0 - 1
    return khi - jmax, khi


@_jit
def _fold_pane(klo, khi, pia, pfa, k, table, n_used):
    """Fold slot ``k``'s pane accumulator into its windows ``klo..khi`` (room checked)."""
    k_slot, k_win, ia, fa = table
    for kw in range(klo, khi + 1):
        h, n_new = _pair_claim(k_slot, k_win, k, kw, n_used)
        if n_new != n_used:
            _acc_copy(ia, fa, h, pia, pfa, k)
        else:
            _acc_merge(ia, fa, h, pia, pfa, k)
        n_used = n_new
    return n_used


@_jit
def _add_row(k, klo, khi, t, seq, v, full, table, n_used):
    """Add one row of slot ``k`` straight to windows ``klo..khi`` (room checked)."""
    k_slot, k_win, ia, fa = table
    for kw in range(klo, khi + 1):
        h, n_new = _pair_claim(k_slot, k_win, k, kw, n_used)
        if n_new != n_used:
            _acc_first(ia, fa, h, t, seq, v)
        else:
            _acc_add(ia, fa, h, t, seq, v, full)
        n_used = n_new
    return n_used


@_jit
def _sliding_update_kernel(
    rows, seq0, start, shape, purge_below, out, flags, lookup, panes, table, n_used
):
    """Add rows ``start..`` of ``rows = (sid, ts, value)`` to their panes.

    ``shape = (pane, size, slide)`` in ns. Windows ``< purge_below`` are gone; a
    row all of whose windows are gone is late (``late[i] = 1``); with
    ``flags = (full, pane)``, ``full=False`` skips std and first/last and
    ``pane`` records the pane of each row taken in ``k_lo/k_hi`` (both: the key of
    the sketch it goes to; ``out = (late, k_lo, k_hi)``). Returns ``(next_row, n_used, n_late,
    need)``; ``next_row < len(ts)`` means: make room as ``need`` says and resume.
    """
    sid, ts, val = rows
    pane, size, slide = shape
    late, k_lo, k_hi = out
    full, want_pane = flags
    dense, h_key, h_slot = lookup
    c_pane, pia, pfa = panes
    cap = table[1].shape[0]
    n_slots = c_pane.shape[0]
    per_row = (size + slide - 1) // slide  # most windows a row or pane is in
    q0 = (size - 1) // slide
    rem = (size - 1) - q0 * slide
    n_late = 0
    # Slide interval and pane of the previous row: sorted data skips divisions.
    lo = np.int64(1)
    hi = np.int64(0)
    khi = np.int64(0)
    p_lo = np.int64(1)
    p_hi = np.int64(0)
    p = np.int64(0)
    n = ts.shape[0]
    for i in range(np.uint64(start), np.uint64(n)):  # unsigned: see _key_kernels
        t = ts[i]
        if t < lo or t >= hi:
            khi = t // slide
            lo = khi * slide
            hi = lo + slide
        jmax = q0 if t - lo <= rem else q0 - 1
        if jmax < 0:
            continue  # between windows (slide > size)
        if khi < purge_below:
            late[i] = 1
            n_late += 1
            continue
        klo = max(khi - jmax, purge_below)
        s = sid[i]
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= n_slots:
            return np.int64(i), n_used, n_late, NEED_KEY
        if t < p_lo or t >= p_hi:
            p = t // pane
            p_lo = p * pane
            p_hi = p_lo + pane
        v = val[i]
        seq = seq0 + np.int64(i)
        cp = c_pane[k]
        if p == cp:  # (an emptied pane has index INT64_MIN, never a row's)
            # _acc_add written out, as selects (a pane is never fired): as a call,
            # even inlined, it makes this loop ~2x slower.
            c = pia[k, I_CNT] + 1
            pia[k, I_CNT] = c
            pfa[k, A_SUM] += v
            m = pfa[k, A_MIN]
            pfa[k, A_MIN] = v if (v < m) | (m != m) else m
            m = pfa[k, A_MAX]
            pfa[k, A_MAX] = v if (v > m) | (m != m) else m
            if full:
                _acc_add_full(pia, pfa, k, t, seq, v, c)
        elif p > cp:
            if pia[k, I_CNT] != 0:  # the sensor moves on: its pane goes to its windows
                if (n_used + per_row) * 2 > cap:
                    return np.int64(i), n_used, n_late, NEED_TABLE
                w_lo, w_hi = _windows_of(cp * pane, size, slide)
                n_used = _fold_pane(max(w_lo, purge_below), w_hi, pia, pfa, k, table, n_used)
            c_pane[k] = p
            _acc_first(pia, pfa, k, t, seq, v)
        else:
            if (n_used + per_row) * 2 > cap:
                return np.int64(i), n_used, n_late, NEED_TABLE
            n_used = _add_row(k, klo, khi, t, seq, v, full, table, n_used)
        if want_pane:
            k_lo[i] = p
            k_hi[i] = p
    return n, n_used, n_late, 0


@_jit
def _sliding_due_panes_kernel(c_pane, pia, n_keys, shape, purge_below, fire_to):
    """How many panes ``_sliding_fold_due_kernel`` would fold."""
    pane, size, slide = shape
    n = 0
    for k in range(n_keys):
        if pia[k, I_CNT] != 0:
            w_lo, _ = _windows_of(c_pane[k] * pane, size, slide)
            if max(w_lo, purge_below) <= fire_to:
                n += 1
    return n


@_jit
def _sliding_fold_due_kernel(n_keys, shape, purge_below, fire_to, panes, table, n_used):
    """Fold the panes whose earliest window is ``<= fire_to`` (it fires now, or fired
    and is updated) and empty them. Room is checked by the caller."""
    pane, size, slide = shape
    c_pane, pia, pfa = panes
    for k in range(n_keys):
        if pia[k, I_CNT] == 0:
            continue
        w_lo, w_hi = _windows_of(c_pane[k] * pane, size, slide)
        w_lo = max(w_lo, purge_below)
        if w_lo > fire_to:
            continue
        n_used = _fold_pane(w_lo, w_hi, pia, pfa, k, table, n_used)
        pia[k, I_CNT] = 0
        c_pane[k] = INT64_MIN
    return n_used


# ------------------------------------------------------------ pane sketches

# A sensor's newest pane is counted in a small dense array of this many bucket
# codes (around its first value's: a 1.02**32 ~ 1.9x range), moved into the
# sketch table when the sensor moves on to a later pane or a window holding the
# pane is read; a row outside it goes to the table directly.
STAGE_CODES = 32
STAGE_SLOTS = 1 << 16  # sensors beyond these slots go to the table directly


@_jit
def _stage_flush_one(k, stage, sketch, n_used):
    """Slot ``k``'s staged pane into the sketch table (room checked); emptied."""
    st_key, st_base, st_cnt = stage
    for d in range(STAGE_CODES):
        c = st_cnt[k, d]
        if c:
            n_used = _sketch_insert(sketch, k, _sketch_two(st_key[k], st_base[k] + d), c, n_used)
            st_cnt[k, d] = 0
    st_key[k] = INT64_MIN
    return n_used


@_jit
def _sketch_stage_kernel(sid, val, k_lo, k_hi, start, lookup, stage, sketch, n_used):
    """Count the non-NaN values of rows ``start..`` in the sketches of their panes
    (``k_lo[i]``; none if ``k_hi[i] < k_lo[i]``, a late row), as
    ``_window_kernels._sketch_add_kernel`` does with one hash-table probe a row
    (~30 ns here, of mispredicted branches more than of misses), but through each
    sensor's staged pane: a row of it is one increment, and the table gets one
    insert per (sensor, pane, bucket).

    ``stage = (key, base, counts[slot, STAGE_CODES])`` per ``KeyIndex`` slot (key
    ``INT64_MIN``: none staged). A row of another pane than its sensor's staged
    one moves the staged pane to the table first, then stages its own; a row
    older than the staged pane, or outside its codes, goes to the table.
    Returns ``(next_row, n_used)``; ``next_row < len(val)``: grow the table, resume.
    """
    cap = sketch[0].shape[0]
    dense, h_key, h_slot = lookup
    st_key, st_base, st_cnt = stage
    n_stage = st_key.shape[0]
    for i in range(np.uint64(start), np.uint64(val.shape[0])):  # unsigned: see _key_kernels
        v = val[i]
        key = k_lo[i]
        if v != v or k_hi[i] < key:
            continue
        if (n_used + STAGE_CODES + 1) * 2 > cap:
            return np.int64(i), n_used
        code = _sketch_code(v)
        s = sid[i]
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if 0 <= k < n_stage and key >= st_key[k]:
            if key != st_key[k]:
                if st_key[k] != INT64_MIN:
                    n_used = _stage_flush_one(k, stage, sketch, n_used)
                st_key[k] = key
                st_base[k] = code - STAGE_CODES // 2
            d = code - st_base[k]
            if 0 <= d < STAGE_CODES:
                st_cnt[k, d] += 1
                continue
        n_used = _sketch_insert(sketch, k, _sketch_two(key, code), 1, n_used)
    return val.shape[0], n_used


@_jit
def _stage_flush_kernel(start, stage, sketch, n_used, below):
    """The staged panes ``< below`` of slots ``start..`` into the sketch table. Returns
    ``(next_slot, n_used)``; ``next_slot < len(stage[0])``: grow the table, resume."""
    cap = sketch[0].shape[0]
    st_key = stage[0]
    for k in range(start, st_key.shape[0]):
        if st_key[k] == INT64_MIN or st_key[k] >= below:
            continue
        if (n_used + STAGE_CODES) * 2 > cap:
            return k, n_used
        n_used = _stage_flush_one(k, stage, sketch, n_used)
    return st_key.shape[0], n_used
