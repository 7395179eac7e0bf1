"""numba kernels of ``ThresholdAlarm``: numpy in, numpy out, no Arrow or Rx.

The alarm runs *eagerly*: each on-time row goes through its sensor's state
machine as it arrives, in arrival order, and the alarms it fires wait until the
watermark passes them. That equals the event-time result as long as each
sensor's rows arrive in ts order, which the kernel checks per row. A sensor whose
row arrives behind one already taken is *repaired*: its rows not yet below the
watermark are sorted by (ts, arrival) and run through this same kernel again from the state
it had at the watermark, which is the state recorded before the first of them (every row
taken records its sensor's state before it, ``r_before`` / ``s_before``).

Per-sensor state is ``state = (run_len, run_start, last_ts)``, int64 arrays
indexed by slot; ``last_ts`` is the last ts taken (``INT64_MAX`` while the
sensor waits for its repair). Alarms waiting for
the watermark are ``pending = (slot int32, ts, run start, value)``.
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.runtime._key_kernels import INT64_MAX, _jit, _slot_kernel
from telepipe.operators.runtime._sort_kernels import _stable_argsort_kernel

NEED_KEY = 1  # a sensor without a slot (or slot state) yet


@_jit
def _alarm_admit_kernel(
    rows, start, watermark, params, lookup, state, before, pending, n_pend, repair
):
    """Take the rows ``start..`` of a batch ``rows = (sid, ts, value)``.

    Rows below ``watermark`` are late (skipped, counted; ``before`` gets -1). A
    row behind its sensor's last one sends the sensor to ``repair`` (slots) and
    its later rows wait for it: their ``before`` run length is -1, as is that
    of the late rows. ``n_repair`` is ``repair[0]``'s fill, passed in ``params``.

    Returns ``(next_row, n_pend, late, n_repair, high, low, need)``: ``high`` is the
    largest on-time ts, ``low`` the smallest ts of an alarm added (both also passed
    in ``params``); ``next_row < len(ts)`` means a new sensor: add its slot and
    resume there.
    """
    sid, ts, val = rows
    threshold, consecutive, n_repair, high, low = params
    dense, h_key, h_slot = lookup
    r_before, s_before = before
    run_len, run_start, last_ts = state
    p_slot, p_ts, p_start, p_val = pending
    n_slots = run_len.shape[0]
    late = 0
    for i in range(np.uint64(start), np.uint64(ts.shape[0])):  # unsigned: see _key_kernels
        t = ts[i]
        if t < watermark:
            late += 1
            r_before[i] = -1
            continue
        s = sid[i]
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= n_slots:
            return np.int64(i), n_pend, late, n_repair, high, low, NEED_KEY
        if t > high:
            high = t
        if t < last_ts[k]:
            if last_ts[k] != INT64_MAX:
                last_ts[k] = INT64_MAX
                repair[n_repair] = k
                n_repair += 1
            r_before[i] = -1
            continue
        last_ts[k] = t
        # The state machine inline (as a call it made this loop ~5x slower) and without
        # branches on the value: consecutive rows are other sensors, so whether a
        # value is above the threshold is a coin toss for the branch predictor.
        r = run_len[k]
        start_ = run_start[k]
        r_before[i] = r
        s_before[i] = start_
        v = val[i]
        above = np.int64(v > threshold)  # 0 for NaN: NaN ends a run
        run_len[k] = min(r + 1, consecutive) * above
        start_ = t if r == 0 else start_  # (a run of none has no start to keep)
        run_start[k] = start_
        # The rare test decides the branch: ``above`` alone is the coin toss above
        # (``above and ...`` branched on it: ~1.2 ns a row).
        if (r == consecutive - 1) & (above == 1):
            p_slot[n_pend] = k
            p_ts[n_pend] = t
            p_start[n_pend] = start_
            p_val[n_pend] = v
            n_pend += 1
            low = min(low, t)
    return ts.shape[0], n_pend, late, n_repair, high, low, 0


@_jit
def _alarm_waiting_rows_kernel(sid, ts, watermark, lookup, state, only_repair):
    """Indices of a batch's rows at or above ``watermark`` (none of them is late);
    with ``only_repair``, just those of sensors waiting for a repair."""
    dense, h_key, h_slot = lookup
    out = np.empty(ts.shape[0], np.int64)
    n = 0
    for i in range(ts.shape[0]):
        if ts[i] < watermark:
            continue
        if only_repair:
            k = _slot_kernel(sid[i], dense, h_key, h_slot)
            if state[2][k] != INT64_MAX:
                continue
        out[n] = i
        n += 1
    return out[:n]


@_jit
def _alarm_due_kernel(pending, n_pend, watermark, keys):
    """Take the waiting alarms below ``watermark`` (all of them at ``INT64_MAX``) out of
    ``pending``; the others move up, in order.

    Returns ``(sensor id, ts, run start, value)``, sorted by (ts, sensor) with equal
    pairs in firing order, how many alarms are left waiting and their smallest ts.
    """
    p_slot, p_ts, p_start, p_val = pending
    flush = watermark == INT64_MAX
    n_due = 0
    for j in range(n_pend):
        if flush or p_ts[j] < watermark:
            n_due += 1
    sid = np.empty(n_due, np.int64)
    ts = np.empty(n_due, np.int64)
    start = np.empty(n_due, np.int64)
    val = np.empty(n_due)
    d = 0
    kept = 0
    low = INT64_MAX
    for j in range(n_pend):
        if flush or p_ts[j] < watermark:
            sid[d] = keys[p_slot[j]]
            ts[d] = p_ts[j]
            start[d] = p_start[j]
            val[d] = p_val[j]
            d += 1
        else:
            p_slot[kept] = p_slot[j]
            p_ts[kept] = p_ts[j]
            p_start[kept] = p_start[j]
            p_val[kept] = p_val[j]
            low = min(low, p_ts[j])
            kept += 1
    by = _stable_argsort_kernel(sid)
    by = by[_stable_argsort_kernel(ts[by])]
    return sid[by].astype(np.int32), ts[by], start[by], val[by], kept, low
