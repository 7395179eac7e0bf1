"""numba kernels of ``SessionWindow``: merge each batch into per-sensor sessions.

Sessions are kept in arrays sorted by ``(sensor, start)``; their accumulators are
``_accumulators``' rows.
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.runtime._key_kernels import _hash_kernel, _jit
from telepipe.operators.runtime._sort_kernels import _stable_argsort_kernel
from telepipe.operators.windows._accumulators import (
    I_FTS,
    I_LTS,
    N_A,
    N_I,
    _acc_add,
    _acc_copy,
    _acc_first,
    _acc_merge,
)


@_jit
def _sensor_ts_order_kernel(sid, ts):
    """Row order sorted by (sensor, ts, arrival) in O(n): a stable radix sort by ts, then
    a stable counting sort by the sensor's rank among the batch's distinct sensors.
    When each sensor's rows already arrive in ts order the radix sort is skipped."""
    n = ts.shape[0]
    cap = 64
    while cap < 2 * n:
        cap *= 2
    mask = cap - 1
    used = np.zeros(cap, np.uint8)
    keys = np.empty(cap, np.int32)
    dense = np.empty(cap, np.int64)
    row_dense = np.empty(n, np.int64)
    uniq = np.empty(n, np.int32)
    last = np.empty(n, np.int64)
    in_order = True
    u = 0
    for i in range(n):
        s = sid[i]
        h = _hash_kernel(s, 0) & mask
        while used[h] and keys[h] != s:
            h = (h + 1) & mask
        if not used[h]:
            used[h] = 1
            keys[h] = s
            dense[h] = u
            uniq[u] = s
            last[u] = ts[i]
            u += 1
        d = dense[h]
        row_dense[i] = d
        if ts[i] < last[d]:
            in_order = False
        last[d] = ts[i]
    by_ts = np.arange(n) if in_order else _stable_argsort_kernel(ts)
    rank = np.empty(u, np.int64)
    rank[np.argsort(uniq[:u])] = np.arange(u)
    row_rank = rank[row_dense]
    count = np.zeros(u + 1, np.int64)
    for i in range(n):
        count[row_rank[i] + 1] += 1
    count = np.cumsum(count)
    out = np.empty(n, np.int64)
    for i in by_ts:
        out[count[row_rank[i]]] = i
        count[row_rank[i]] += 1
    return out


@_jit
def _session_merge_kernel(st_sid, st_id, st_ia, st_fa, sid, ts, val, seqs, order, gap, dead, next_id):  # fmt: skip
    """Merge rows ``order`` (by sensor, ts, arrival) into sessions sorted by (sensor, start).

    A session is ``[first ts, last ts + gap)``; a row ``[ts, ts + gap)`` joins every
    session it overlaps, so out-of-order rows can join two. A merged session with
    no stored part whose end is ``<= dead`` is past allowed lateness: its rows get
    ``row_id = -1``. Returns ``((sid, id, ia, fa), row_id, absorbed, into, next_id)``:
    the new sorted state, each row's session id, and the ids of stored sessions that
    merged into another.
    """
    m = st_sid.shape[0]
    n = order.shape[0]
    o_sid = np.empty(m + n, np.int32)
    o_id = np.empty(m + n, np.int64)
    o_ia = np.empty((m + n, N_I), np.int64)
    o_fa = np.empty((m + n, N_A), np.float64)
    row_id = np.empty(ts.shape[0], np.int64)
    absorbed = np.empty(m, np.int64)
    into = np.empty(m, np.int64)
    members = np.empty(n, np.int64)  # rows of the open session
    n_out = 0
    n_abs = 0
    i = 0
    j = 0
    while i < m or j < n:
        s = st_sid[i] if j >= n or (i < m and st_sid[i] <= sid[order[j]]) else sid[order[j]]
        open_ = False
        cur_end = np.int64(0)
        cur_id = np.int64(-1)
        n_mem = 0
        while True:
            take_state = i < m and st_sid[i] == s
            take_row = j < n and sid[order[j]] == s
            if take_state and take_row:
                take_state = st_ia[i, I_FTS] <= ts[order[j]]
            elif not take_state and not take_row:
                break
            if take_state:
                b_start = st_ia[i, I_FTS]
                b_end = st_ia[i, I_LTS] + gap
            else:
                b_start = ts[order[j]]
                b_end = b_start + gap
            if open_ and b_start >= cur_end:
                # fmt: off
                n_out, next_id = _session_close(o_sid, o_id, n_out, s, cur_id, cur_end,
                                                members[:n_mem], row_id, dead, next_id)
                # fmt: on
                open_ = False
            if take_state:
                if not open_:
                    _acc_copy(o_ia, o_fa, n_out, st_ia, st_fa, i)
                    cur_id = st_id[i]
                    cur_end = b_end
                    n_mem = 0
                    open_ = True
                else:
                    if cur_id < 0:
                        cur_id = st_id[i]
                    else:
                        absorbed[n_abs] = st_id[i]
                        into[n_abs] = cur_id
                        n_abs += 1
                    _acc_merge(o_ia, o_fa, n_out, st_ia, st_fa, i)  # marks it dirty if fired
                    cur_end = max(cur_end, b_end)
                i += 1
            else:
                r = order[j]
                if not open_:
                    _acc_first(o_ia, o_fa, n_out, ts[r], seqs[r], val[r])
                    cur_id = -1
                    cur_end = b_end
                    n_mem = 0
                    open_ = True
                else:
                    _acc_add(o_ia, o_fa, n_out, ts[r], seqs[r], val[r], True)  # dirty if fired
                    cur_end = max(cur_end, b_end)
                members[n_mem] = r
                n_mem += 1
                j += 1
        if open_:
            # fmt: off
            n_out, next_id = _session_close(o_sid, o_id, n_out, s, cur_id, cur_end,
                                            members[:n_mem], row_id, dead, next_id)
            # fmt: on
    state = (o_sid[:n_out], o_id[:n_out], o_ia[:n_out], o_fa[:n_out])
    return state, row_id, absorbed[:n_abs], into[:n_abs], next_id


@_jit
def _session_close(o_sid, o_id, n_out, s, cur_id, cur_end, members, row_id, dead, next_id):
    n_mem = members.shape[0]
    if cur_id < 0:
        if cur_end <= dead:  # only new rows, already past allowed lateness: late
            for k in range(n_mem):
                row_id[members[k]] = -1
            return n_out, next_id
        cur_id = next_id
        next_id += 1
    for k in range(n_mem):
        row_id[members[k]] = cur_id
    o_sid[n_out] = s
    o_id[n_out] = cur_id
    return n_out + 1, next_id
