"""numba kernels of ``EventTimeBuffer``: numpy in, numpy out, no Arrow or Rx.

Two ways to hand a watermark's rows to per-sensor state machines:

- *event order* (``_merge_rows_kernel``): each batch is sorted by ts and merged
  into a buffer kept in (ts, arrival) order, so a watermark releases a prefix;
- *sensor order* (``_release_segment_kernel``): rows stay in arrival order,
  and a watermark releases those below it in arrival order, which is each
  sensor's (ts, arrival) order as long as each sensor's rows arrive in ts order
  (the kernel checks, per row, against the sensor's last released ts). No sort,
  one pass; when a sensor's rows are out of order the caller puts each
  sensor's in order (``_sensor_order_kernel``).
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.runtime._key_kernels import _jit, _slot_kernel

RELEASED = 0
NEED_KEY = 1  # a sensor without a slot yet
OUT_OF_ORDER = 2  # a sensor's released rows are not in ts order


@_jit
def _merge_rows_kernel(b_sid, b_ts, b_val, b_q, head, end, sid, ts, val, q, order):
    """Merge new rows into an event-time buffer, in place, with an optional fourth column ``q``.

    Merges rows ``order`` (new rows sorted by ts, stably) into the buffer
    ``[head:end]`` sorted by (ts, arrival); ``q`` moves along when ``b_q`` is
    non-empty. Returns the new ``end``.
    """
    add = order.shape[0]
    if add == 0:
        return end
    with_q = b_q.shape[0] > 0
    first = ts[order[0]]
    lo = head
    hi = end
    while lo < hi:
        mid = (lo + hi) >> 1
        if b_ts[mid] <= first:
            lo = mid + 1
        else:
            hi = mid
    i = end - 1
    j = add - 1
    k = end + add - 1
    while j >= 0:
        r = order[j]
        t = ts[r]
        if i >= lo and b_ts[i] > t:
            b_sid[k] = b_sid[i]
            b_ts[k] = b_ts[i]
            b_val[k] = b_val[i]
            if with_q:
                b_q[k] = b_q[i]
            i -= 1
        else:
            b_sid[k] = sid[r]
            b_ts[k] = t
            b_val[k] = val[r]
            if with_q:
                b_q[k] = q[r]
            j -= 1
        k -= 1
    return end + add


@_jit
def _release_segment_kernel(
    seg, pos, n, kept, watermark, release_all, lookup, last_ts, out, o_slot, n_out, check
):
    """Move the rows ``< watermark`` (all with ``release_all``) of ``seg[pos:n]`` to
    ``out[n_out:]`` in arrival order, and the others down to ``seg[kept:]``, in order.

    ``seg``/``out`` are ``(sid, ts, value, quality)`` (quality moves along when
    ``seg``'s is non-empty), ``o_slot`` gets each released row's sensor slot;
    ``last_ts[slot]`` is each sensor's last released ts. Without ``check`` (the
    caller reorders what it gets, by those slots) rows are just moved.
    Returns ``(pos, n_out, kept, status)``: ``RELEASED`` when done; ``NEED_KEY``
    (add the sensors of ``seg[pos:n]`` and resume) or ``OUT_OF_ORDER`` (a row
    behind its sensor's last one) stop at row ``pos`` with everything before it
    done.
    """
    s_sid, s_ts, s_val, s_q = seg
    o_sid, o_ts, o_val, o_q = out
    dense, h_key, h_slot = lookup
    with_q = s_q.shape[0] > 0
    n_slots = last_ts.shape[0]
    for i in range(np.uint64(pos), np.uint64(n)):  # unsigned: see _key_kernels
        t = s_ts[i]
        if t >= watermark and not release_all:
            s_sid[kept] = s_sid[i]
            s_ts[kept] = t
            s_val[kept] = s_val[i]
            if with_q:
                s_q[kept] = s_q[i]
            kept += 1
            continue
        s = s_sid[i]
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= n_slots:
            return np.int64(i), n_out, kept, NEED_KEY
        if check:
            if t < last_ts[k]:
                return np.int64(i), n_out, kept, OUT_OF_ORDER
            last_ts[k] = t
        o_slot[n_out] = k
        o_sid[n_out] = s
        o_ts[n_out] = t
        o_val[n_out] = s_val[i]
        if with_q:
            o_q[n_out] = s_q[i]
        n_out += 1
    return n, n_out, kept, RELEASED


@_jit
def _sensor_order_kernel(slots, rows, n, prev, last, max_moves):
    """Put ``rows[:n]`` (``(sid, ts, value, quality)``, arrival order) in each sensor's
    (ts, arrival) order, in place, leaving the sensors' interleaving as it came.

    ``slots`` gives each row's sensor slot; ``last`` (one per slot, all -1) and
    ``prev`` (``n`` rows) are scratch: ``prev[i]`` is the position of the row of
    the same sensor before row ``i``. Each row is inserted backwards along that
    chain (strictly greater ts move, so equal ts keep their arrival order). A
    publisher's jitter displaces a row by a few of its sensor's rows, so this
    costs a few moves a row where a global sort costs passes over all rows.
    Returns whether it finished: after ``max_moves`` moves it stops at the end of
    a row, every row before it in order, and the caller sorts them all instead.
    """
    _, ts, val, q = rows  # a row moves only along its sensor's chain: sid stays
    with_q = q.shape[0] > 0
    moves = 0
    done = n
    for i in range(n):
        if moves > max_moves:
            done = i
            break
        k = slots[i]
        p = last[k]
        prev[i] = p
        last[k] = i
        t = ts[i]
        if p < 0 or ts[p] <= t:
            continue
        v = val[i]
        qi = q[i] if with_q else 0
        j = i
        while p >= 0 and ts[p] > t:
            ts[j] = ts[p]
            val[j] = val[p]
            if with_q:
                q[j] = q[p]
            j = p
            p = prev[p]
            moves += 1
        ts[j] = t
        val[j] = v
        if with_q:
            q[j] = qi
    for i in range(done):  # scratch back to all -1, touching only the slots used
        last[slots[i]] = -1
    return done == n
