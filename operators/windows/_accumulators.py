"""numba kernels of the sliding and session windows: numpy in, numpy out, no Arrow or Rx.

An accumulator is one row of two 2-D arrays, ``ia`` (int64) and ``fa`` (float64),
columns ``I_*`` and ``A_*`` below. Rows are added in arrival order (Welford for
the variance, so two accumulators merge exactly as Chan et al.); first/last
compare ``(ts, seq)`` where ``seq`` is the row's global arrival number, so they
do not depend on batching.

Sliding windows (``_sliding_kernels``) keep window accumulators in a hash table
fed by per-sensor panes. Session windows keep them in arrays sorted by
``(sensor, start)``, merged with each batch. Quantiles use a DDSketch kept sparse in a
slot table (``_key_kernels``) keyed by ``(sensor slot, sketch key and bucket)``
(``_sketch_two``), its count in ``ints[:, 0]``.
"""

from __future__ import annotations

import math

import numpy as np

from telepipe.operators.runtime._key_kernels import (
    _inline,
    _jit,
    _pair_claim,
    _pair_find,
)

# ia columns: count, first ts/seq, last ts/seq, times fired, updated since fired.
I_CNT, I_FTS, I_FSEQ, I_LTS, I_LSEQ, I_FIRED, I_DIRTY = range(7)
N_I = 7
# fa columns: sum, Welford mean, Welford M2, min, max, first value, last value.
A_SUM, A_WMEAN, A_M2, A_MIN, A_MAX, A_FVAL, A_LVAL = range(7)
N_A = 7
# Columns of the finalize kernel's float output.
F_SUM, F_MEAN, F_MIN, F_MAX, F_STD, F_FIRST, F_LAST = range(7)

# DDSketch: bucket k holds |v| in (gamma**(k-1), gamma**k]; its estimate
# 2 gamma**k / (gamma + 1) is within SKETCH_ALPHA of every value in it.
SKETCH_ALPHA = 0.01
_GAMMA = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA)
_LN_GAMMA = math.log(_GAMMA)
_LN_EST = math.log(2 / (_GAMMA + 1))
SKETCH_MIN_ABS = 1e-300  # |v| below this counts as 0 (absolute error < 1e-300)
_CODE_OFFSET = 40_000  # |k| <= 35_500 for doubles above SKETCH_MIN_ABS
_CODE_INF = 131_071
# A sketch entry's second key: its key (pane or session, |key| < 2**45) and bucket code
# in one int64, ordered by key: ``key * 2**18 + code + 2**17``.
SKETCH_CODE_BITS = 18
_CODE_BIAS = 1 << 17


# ------------------------------------------------------------ accumulators


@_inline
def _acc_first(ia, fa, h, t, seq, v):
    ia[h, I_CNT] = 1
    ia[h, I_FTS] = ia[h, I_LTS] = t
    ia[h, I_FSEQ] = ia[h, I_LSEQ] = seq
    ia[h, I_FIRED] = ia[h, I_DIRTY] = 0
    fa[h, A_SUM] = fa[h, A_WMEAN] = fa[h, A_MIN] = fa[h, A_MAX] = v
    fa[h, A_FVAL] = fa[h, A_LVAL] = v
    fa[h, A_M2] = 0.0 if v - v == 0.0 else math.nan  # inf/NaN: no variance


@_inline
def _acc_add(ia, fa, h, t, seq, v, full):
    """Add a row; ``full=False`` skips the variance and first/last (not asked for)."""
    c = ia[h, I_CNT] + 1
    ia[h, I_CNT] = c
    fa[h, A_SUM] += v
    # min/max skip NaN unless every value is NaN (as polars min/max).
    m = fa[h, A_MIN]
    if v < m or m != m:
        fa[h, A_MIN] = v
    m = fa[h, A_MAX]
    if v > m or m != m:
        fa[h, A_MAX] = v
    if full:
        _acc_add_full(ia, fa, h, t, seq, v, c)
    if ia[h, I_FIRED] > 0:
        ia[h, I_DIRTY] = 1


@_jit
def _acc_add_full(ia, fa, h, t, seq, v, c):
    """The variance (Welford) and first/last part of adding the ``c``-th row."""
    d = v - fa[h, A_WMEAN]
    fa[h, A_WMEAN] += d / c
    fa[h, A_M2] += d * (v - fa[h, A_WMEAN])
    if t < ia[h, I_FTS] or (t == ia[h, I_FTS] and seq < ia[h, I_FSEQ]):
        ia[h, I_FTS] = t
        ia[h, I_FSEQ] = seq
        fa[h, A_FVAL] = v
    if t > ia[h, I_LTS] or (t == ia[h, I_LTS] and seq > ia[h, I_LSEQ]):
        ia[h, I_LTS] = t
        ia[h, I_LSEQ] = seq
        fa[h, A_LVAL] = v


@_jit
def _acc_copy(ia, fa, d, sia, sfa, s):
    for j in range(N_I):
        ia[d, j] = sia[s, j]
    for j in range(N_A):
        fa[d, j] = sfa[s, j]


@_jit
def _acc_merge(ia, fa, d, sia, sfa, s):
    """Merge accumulator ``s`` of ``(sia, sfa)`` into ``d`` of ``(ia, fa)`` (Chan et al.)."""
    na = ia[d, I_CNT]
    nb = sia[s, I_CNT]
    n = na + nb
    delta = sfa[s, A_WMEAN] - fa[d, A_WMEAN]
    fa[d, A_WMEAN] += delta * (nb / n)
    fa[d, A_M2] += sfa[s, A_M2] + delta * delta * (na * (nb / n))
    ia[d, I_CNT] = n
    fa[d, A_SUM] += sfa[s, A_SUM]
    v = sfa[s, A_MIN]
    m = fa[d, A_MIN]
    if v < m or m != m:
        fa[d, A_MIN] = v
    v = sfa[s, A_MAX]
    m = fa[d, A_MAX]
    if v > m or m != m:
        fa[d, A_MAX] = v
    t = sia[s, I_FTS]
    if t < ia[d, I_FTS] or (t == ia[d, I_FTS] and sia[s, I_FSEQ] < ia[d, I_FSEQ]):
        ia[d, I_FTS] = t
        ia[d, I_FSEQ] = sia[s, I_FSEQ]
        fa[d, A_FVAL] = sfa[s, A_FVAL]
    t = sia[s, I_LTS]
    if t > ia[d, I_LTS] or (t == ia[d, I_LTS] and sia[s, I_LSEQ] > ia[d, I_LSEQ]):
        ia[d, I_LTS] = t
        ia[d, I_LSEQ] = sia[s, I_LSEQ]
        fa[d, A_LVAL] = sfa[s, A_LVAL]
    # Fired parts make the merged window an update of what was emitted.
    fired = max(ia[d, I_FIRED], sia[s, I_FIRED])
    ia[d, I_DIRTY] = 1 if fired > 0 else 0
    ia[d, I_FIRED] = fired


@_jit
def _finalize_kernel(slots, sid, ia, fa, start, end):
    """Output columns of accumulators ``slots`` (of sensors ``sid``, one per slot) sorted
    by (start, sensor).

    ``start``/``end`` are indexed by slot. Returns ``(slots, sensor_id, start, end,
    count, revision, floats[n, 7])``.
    """
    by_sid = np.argsort(sid, kind="mergesort")
    order = by_sid[np.argsort(start[slots[by_sid]], kind="mergesort")]
    o_slots = slots[order]
    n = slots.shape[0]
    o_f = np.empty((n, 7), np.float64)
    o_cnt = np.empty(n, np.int64)
    o_rev = np.empty(n, np.int64)
    for j in range(n):
        h = o_slots[j]
        c = ia[h, I_CNT]
        o_cnt[j] = c
        o_rev[j] = ia[h, I_FIRED]
        o_f[j, F_SUM] = fa[h, A_SUM]
        o_f[j, F_MEAN] = fa[h, A_SUM] / c
        o_f[j, F_MIN] = fa[h, A_MIN]
        o_f[j, F_MAX] = fa[h, A_MAX]
        o_f[j, F_STD] = math.sqrt(fa[h, A_M2] / (c - 1)) if c > 1 else math.nan
        o_f[j, F_FIRST] = fa[h, A_FVAL]
        o_f[j, F_LAST] = fa[h, A_LVAL]
    return o_slots, sid[order], start[o_slots], end[o_slots], o_cnt, o_rev, o_f


# ------------------------------------------------------------------ sketch


@_jit
def _sketch_code(v):
    """The bucket of ``v``, as an int ordered like the values (0 holds |v| < MIN_ABS)."""
    a = abs(v)
    if a < SKETCH_MIN_ABS:
        return 0
    c = _CODE_INF if a == math.inf else np.int64(math.ceil(math.log(a) / _LN_GAMMA)) + _CODE_OFFSET
    return c if v > 0 else -c


@_jit
def _sketch_value(code):
    if code == 0:
        return 0.0
    c = abs(code)
    x = math.inf if c == _CODE_INF else math.exp((c - _CODE_OFFSET) * _LN_GAMMA + _LN_EST)
    return x if code > 0 else -x


@_inline
def _sketch_two(key, code):
    return (key << SKETCH_CODE_BITS) + (code + _CODE_BIAS)


@_inline
def _sketch_key(two):
    return two >> SKETCH_CODE_BITS


@_inline
def _sketch_bucket(two):
    return (two & ((1 << SKETCH_CODE_BITS) - 1)) - _CODE_BIAS


@_jit
def _sketch_insert(sketch, k, two, count, n_used):
    """Add ``count`` to entry ``(k, two)`` of ``sketch`` (room checked by the caller);
    returns ``n_used``."""
    k_slot, k_two, ints, _ = sketch
    h, n_new = _pair_claim(k_slot, k_two, k, two, n_used)
    if n_new != n_used:
        ints[h, 0] = 0
    ints[h, 0] += count
    return n_new


@_jit
def _sketch_add_kernel(slots, val, k_lo, k_hi, start, sketch, n_used):
    """Add the non-NaN values of rows ``start..`` to sketches ``(slots[i], k_lo[i]..k_hi[i])``.

    Returns ``(next_row, n_used)``; ``next_row < len(val)`` means: grow and resume.
    """
    k_slot, k_two, ints, _ = sketch
    cap = k_slot.shape[0]
    n = val.shape[0]
    for i in range(np.uint64(start), np.uint64(n)):  # unsigned: see _key_kernels
        v = val[i]
        if v != v or k_hi[i] < k_lo[i]:
            continue
        if (n_used + k_hi[i] - k_lo[i] + 1) * 2 > cap:
            return np.int64(i), n_used
        code = _sketch_code(v)
        # _sketch_insert written out: called here it made SessionWindow ~20% slower.
        for k in range(k_lo[i], k_hi[i] + 1):
            two = _sketch_two(k, code)
            h = _pair_find(k_slot, k_two, slots[i], two)
            if k_slot[h] < 0:
                k_slot[h] = slots[i]
                k_two[h] = two
                ints[h, 0] = 0
                n_used += 1
            ints[h, 0] += 1
    return n, n_used


@_jit
def _sketch_rebuild_kernel(sketch, keep_from, remap_from, remap_to, new_cap):
    """A fresh sketch table: keys ``< keep_from`` dropped, keys in sorted ``remap_from``
    renamed to ``remap_to`` (``-1`` drops), buckets of equal keys added up."""
    k_slot, k_two, ints, _ = sketch
    new = (
        np.full(new_cap, -1, np.int32),
        np.zeros(new_cap, np.int64),
        np.zeros((new_cap, 1), np.int64),
        np.zeros((new_cap, 0), np.float64),
    )
    n_used = 0
    n_map = remap_from.shape[0]
    for j in range(k_slot.shape[0]):
        if k_slot[j] < 0:
            continue
        key = _sketch_key(k_two[j])
        if key < keep_from:
            continue
        two = k_two[j]
        if n_map:
            p = np.searchsorted(remap_from, key)
            if p < n_map and remap_from[p] == key:
                if remap_to[p] < 0:
                    continue
                two = _sketch_two(remap_to[p], _sketch_bucket(two))
        n_used = _sketch_insert(new, k_slot[j], two, ints[j, 0], n_used)
    return new, n_used


@_jit
def _grown_int64(a):
    b = np.empty(2 * a.shape[0], np.int64)
    b[: a.shape[0]] = a
    return b


@_jit
def _sketch_quantiles_kernel(sketch, q_slot, q_key, qs, lo, hi, panes):
    """Quantiles ``qs`` of the sketches ``(q_slot, q_key)``: out ``[len(q_slot), len(qs)]``.

    ``panes = (r, p)``: sketch key ``k`` is a pane, and window ``w`` is made of the
    panes ``w*r .. w*r + p - 1`` (``SlidingWindow``: a row goes to one pane's
    sketch, not to each of its windows'; bucket counts add up exactly, so the
    result is the same); ``(1, 1)``: keys are the windows themselves.
    Quantile ``q`` estimates the value of rank ``floor(q * (n - 1))`` among the
    ``n`` non-NaN values (numpy ``method="lower"``), clamped to ``[lo, hi]``;
    NaN if there are none.
    """
    s_slot, s_two, s_ints, _ = sketch
    r_, p_ = panes
    n_q = q_slot.shape[0]
    out = np.full((n_q, qs.shape[0]), np.nan)
    if n_q == 0:
        return out
    cap = 64
    while cap < 2 * n_q:
        cap *= 2
    # The wanted sketches' output rows, in a slot table of their own.
    w_slot = np.full(cap, -1, np.int32)
    w_key = np.zeros(cap, np.int64)
    w_row = np.zeros(cap, np.int64)
    q_lo = q_key[0]
    q_hi = q_key[0]
    for r in range(n_q):
        h, _ = _pair_claim(w_slot, w_key, q_slot[r], q_key[r], 0)
        w_row[h] = r
        q_lo = min(q_lo, q_key[r])
        q_hi = max(q_hi, q_key[r])
    # Entries of the wanted sketches, keyed by (output row, bucket).
    n_e = 0
    e_sort = np.empty(max(s_slot.shape[0], 16), np.int64)
    e_cnt = np.empty(max(s_slot.shape[0], 16), np.int64)
    for j in range(s_slot.shape[0]):
        if s_slot[j] < 0:
            continue
        key = _sketch_key(s_two[j])
        # The wanted windows holding pane ``key``: w <= key // r, key - w*r < p.
        w = min(key // r_, q_hi)
        while w >= q_lo and key - w * r_ < p_:
            h = _pair_find(w_slot, w_key, s_slot[j], w)
            if w_slot[h] >= 0:
                if n_e == e_sort.shape[0]:
                    e_sort = _grown_int64(e_sort)
                    e_cnt = _grown_int64(e_cnt)
                e_sort[n_e] = (w_row[h] << 18) + (_sketch_bucket(s_two[j]) + 131072)
                e_cnt[n_e] = s_ints[j, 0]
                n_e += 1
            w -= 1
    e_sort = e_sort[:n_e]
    e_cnt = e_cnt[:n_e]
    order = np.argsort(e_sort)
    a = 0
    while a < n_e:
        r = e_sort[order[a]] >> 18
        b = a
        total = 0
        while b < n_e and (e_sort[order[b]] >> 18) == r:
            total += e_cnt[order[b]]
            b += 1
        for qi in range(qs.shape[0]):
            rank = np.int64(math.floor(qs[qi] * (total - 1)))
            seen = 0
            for p in range(a, b):
                seen += e_cnt[order[p]]
                if seen > rank:
                    code = (e_sort[order[p]] & 262143) - 131072
                    x = _sketch_value(code)
                    out[r, qi] = min(max(x, lo[r]), hi[r])
                    break
        a = b
    return out
