"""numba kernels of ``CepPattern``: run the compiled NFA per sensor over event-ordered rows.

State, all numpy arrays owned by the logic:

- key table: open addressing ``(used, k_sid, k_idx)`` from sensor id to a dense key
  index; ``key_sid[idx]``; ``nslot[idx]`` slots in use.
- slots: ``block[idx * cap + q, S_*]`` int64 rows, at most ``cap`` per key: partial
  matches (``S_DONE == 0``) and complete matches held back by the after-match rule
  (``S_DONE == 1``). ``scratch`` holds one key's slots while an event is processed.
- events of matches: a node pool ``nd[i, N_*]`` + ``nd_val[i]``, each node linking to
  the match's previous event (``N_PREV``), so forking a partial match is O(1). Nodes
  no slot reaches are reclaimed by ``_pattern_gc_kernel`` when the pool fills.

Kernels stop before a row they might not have room for and return a status; the
caller grows (or collects) and resumes, as the other operator kernels do.
"""

from __future__ import annotations

import numba
import numpy as np

from telepipe.operators._kernels import INT64_MAX, INT64_MIN, _hash_kernel, _jit
from telepipe.operators._pattern_compiler import (
    K_NOTNEXT,
    K_TRAIL_NFB,
    K_TRAIL_NN,
    T_FIN,
    T_KILL,
    T_KIND,
    T_NEXT,
    T_PROCEED,
    T_STEP,
    T_STRICT,
    T_TAKE,
    T_TO,
)

S_STATE, S_FLAG, S_DONE, S_START_TS, S_START_POS, S_N, S_HEAD = range(7)
N_POS, N_TS, N_STEP, N_PREV = range(4)
O_SID, O_START_TS, O_END_TS, O_N, O_HEAD = range(5)
ST_DONE, ST_KEYS, ST_NODES, ST_OUT = range(4)
C_DROPPED, C_OVERFLOW = range(2)


_inline = numba.njit(cache=True, nogil=True, inline="always")


@_inline
def _put(sl, w, state, flag, done, start_ts, start_pos, n, head):
    sl[w, S_STATE] = state
    sl[w, S_FLAG] = flag
    sl[w, S_DONE] = done
    sl[w, S_START_TS] = start_ts
    sl[w, S_START_POS] = start_pos
    sl[w, S_N] = n
    sl[w, S_HEAD] = head
    return w + 1


@_inline
def _chain(nd, head, n, into):
    h = head
    for j in range(n - 1, -1, -1):
        into[j] = nd[h, N_POS]
        h = nd[h, N_PREV]


@_inline
def _better(sl, a, b, nd, tmp_a, tmp_b):
    """Slot ``a`` wins over ``b``: earlier start, then lexicographically smaller positions."""
    if sl[a, S_START_POS] != sl[b, S_START_POS]:
        return sl[a, S_START_POS] < sl[b, S_START_POS]
    na = sl[a, S_N]
    nb = sl[b, S_N]
    _chain(nd, sl[a, S_HEAD], na, tmp_a)
    _chain(nd, sl[b, S_HEAD], nb, tmp_b)
    for j in range(min(na, nb)):
        if tmp_a[j] != tmp_b[j]:
            return tmp_a[j] < tmp_b[j]
    return na < nb


@_inline
def _emit(sl, lo, cnt, sid, nd, o_meta, n_out, tmp_a, tmp_b):
    """Emit held complete matches no earlier partial match can pre-empt; skip past each.

    Returns ``(cnt, n_out)``; the slots ``[lo, lo + cnt)`` are compacted in place.
    """
    while True:
        best = -1
        min_partial = INT64_MAX
        for q in range(lo, lo + cnt):
            if sl[q, S_DONE] == 1:
                if best < 0 or _better(sl, q, best, nd, tmp_a, tmp_b):
                    best = q
            elif sl[q, S_START_POS] < min_partial:
                min_partial = sl[q, S_START_POS]
        if best < 0 or min_partial < sl[best, S_START_POS]:
            return cnt, n_out
        head = sl[best, S_HEAD]
        o_meta[n_out, O_SID] = sid
        o_meta[n_out, O_START_TS] = sl[best, S_START_TS]
        o_meta[n_out, O_END_TS] = nd[head, N_TS]
        o_meta[n_out, O_N] = sl[best, S_N]
        o_meta[n_out, O_HEAD] = head
        n_out += 1
        last = nd[head, N_POS]
        w = lo
        for q in range(lo, lo + cnt):
            if sl[q, S_START_POS] > last:
                if w != q:
                    sl[w, :] = sl[q, :]
                w += 1
        cnt = w - lo


@_inline
def _deadline(start, within):
    """When a partial match started at ``start`` times out (INT64_MAX if past the range)."""
    return INT64_MAX if start > INT64_MAX - within else start + within


@_inline
def _timeout(sl, lo, cnt, t, within, flush, tab):
    """Partial matches older than ``within`` at time ``t`` end: a pending trailing
    ``not_followed_by`` completes, any other is dropped. ``flush`` ends them all."""
    w = lo
    for q in range(lo, lo + cnt):
        keep = True
        if sl[q, S_DONE] == 0:
            deadline = _deadline(sl[q, S_START_TS], within)
            if flush or (within > 0 and t >= deadline):
                if within > 0 and tab[sl[q, S_STATE], T_KIND] == K_TRAIL_NFB:
                    sl[q, S_DONE] = 1
                else:
                    keep = False
        if keep:
            if w != q:
                sl[w, :] = sl[q, :]
            w += 1
    return w - lo


@_inline
def _cap(sl, cnt, cap, sid, nd, o_meta, n_out, counters, tmp_a, tmp_b):
    """Drop the partial matches of the oldest start event until ``cnt <= cap``."""
    while cnt > cap:
        oldest = INT64_MAX
        for q in range(cnt):
            if sl[q, S_DONE] == 0 and sl[q, S_START_POS] < oldest:
                oldest = sl[q, S_START_POS]
        if oldest == INT64_MAX:
            break
        w = 0
        for q in range(cnt):
            if sl[q, S_DONE] == 0 and sl[q, S_START_POS] == oldest:
                counters[C_DROPPED] += 1
                continue
            if w != q:
                sl[w, :] = sl[q, :]
            w += 1
        cnt, n_out = _emit(sl, 0, w, sid, nd, o_meta, n_out, tmp_a, tmp_b)
    return cnt, n_out


@_inline
def _walk(
    sl,
    w,
    state,
    flag,
    start_ts,
    start_pos,
    n,
    head,
    is_start,
    bits,
    t,
    pos,
    v,
    tab,
    L,
    nd,
    nd_val,
    n_nodes,
    counters,
):
    """Branches of one partial match (or of the start state) on one event, from ``w``.

    Returns ``(w, n_nodes)``; a kill condition discards every branch of the match.
    """
    w0 = w
    cur = state
    kk = flag
    while cur >= 0:
        kill = tab[cur, T_KILL]
        if kill >= 0 and (bits >> kill) & 1:
            return w0, n_nodes
        kind = tab[cur, T_KIND]
        if kind == K_NOTNEXT:
            cur = tab[cur, T_NEXT]
            kk = 0
            continue
        if kind == K_TRAIL_NN:
            return _put(sl, w, -1, 0, 1, start_ts, start_pos, n, head), n_nodes
        if kind == K_TRAIL_NFB:
            return _put(sl, w, cur, 0, 0, start_ts, start_pos, n, head), n_nodes
        proceed = tab[cur, T_PROCEED] == 1 and kk == 0
        if (bits >> tab[cur, T_TAKE]) & 1:
            if n + 1 > L:
                counters[C_OVERFLOW] += 1
            else:
                node = n_nodes
                n_nodes += 1
                nd[node, N_POS] = pos
                nd[node, N_TS] = t
                nd[node, N_STEP] = tab[cur, T_STEP]
                nd[node, N_PREV] = head
                nd_val[node] = v
                to = tab[cur, T_TO]
                if to < 0:
                    w = _put(sl, w, -1, 0, 1, start_ts, start_pos, n + 1, node)
                else:
                    w = _put(sl, w, to, 0, 0, start_ts, start_pos, n + 1, node)
                    if tab[cur, T_FIN] == 1:
                        w = _put(sl, w, -1, 0, 1, start_ts, start_pos, n + 1, node)
        elif tab[cur, T_STRICT] == 0 and not is_start:
            w = _put(sl, w, cur, 1 if proceed else kk, 0, start_ts, start_pos, n, head)
        if not proceed:
            break
        cur = tab[cur, T_NEXT]
        kk = 0
    return w, n_nodes


@_jit
def _idle_fixed_kernel(tab):
    """``fixed[state, flag]``: a partial match in ``state`` with ``flag`` stays exactly as
    it is on a row meeting no condition (``_walk`` with no bit set gives back that one
    slot, unchanged). Found by running ``_walk`` itself, so it cannot disagree with it."""
    n_states = tab.shape[0]
    fixed = np.zeros((n_states, 2), np.uint8)
    sl = np.zeros((2 * n_states + 2, 7), np.int64)
    nd = np.zeros((1, 4), np.int64)
    nd_val = np.zeros(1, np.float64)
    counters = np.zeros(2, np.int64)
    for state in range(n_states):
        for flag in range(2):
            w, n_nodes = _walk(
                sl, 0, state, flag, 0, 0, 1, -1, False, np.uint64(0), 0, 1, 0.0, tab, 2,
                nd, nd_val, 0, counters,
            )  # fmt: skip
            if (
                w == 1
                and n_nodes == 0
                and sl[0, S_STATE] == state
                and sl[0, S_FLAG] == flag
                and sl[0, S_DONE] == 0
            ):
                fixed[state, flag] = 1
    return fixed


@_inline
def _idle_until(sl, lo, cnt, within, fixed):
    """Until when rows meeting no condition leave the slots ``[lo, lo + cnt)`` as they
    are: the earliest deadline of their partial matches if every one is idle-fixed
    (INT64_MAX with no ``within``), else INT64_MIN (not even now). Held complete
    matches then stay held: nothing that decides their emission changes."""
    until = INT64_MAX
    for q in range(lo, lo + cnt):
        if sl[q, S_DONE] != 0:
            continue
        if fixed[sl[q, S_STATE], sl[q, S_FLAG]] == 0:
            return INT64_MIN
        if within > 0:
            until = min(until, _deadline(sl[q, S_START_TS], within))
    return until


@_jit
def _pattern_run_kernel(
    skip_idle,
    idle_fixed,
    idle,
    start,
    sid,
    ts,
    val,
    bits,
    pos0,
    tab,
    within,
    cap,
    L,
    chain,
    used,
    k_sid,
    k_idx,
    key_sid,
    n_keys,
    nslot,
    block,
    scratch,
    nd,
    nd_val,
    n_nodes,
    o_meta,
    n_out,
    counters,
    tmp_a,
    tmp_b,
):
    """Run rows ``start..`` (in (ts, arrival) order; row ``i`` has position ``pos0 + i``).

    With ``skip_idle`` (``idle_rows_do_nothing(tab)``), a row meeting no condition
    of a sensor with no partial match is passed over (it would change nothing), and
    so is one of a sensor whose partial matches it leaves as they are: on a relaxed
    pattern, most rows of a sensor with many partial matches. ``idle[idx] = (known,
    until)`` caches ``_idle_until`` per key (``idle_fixed = _idle_fixed_kernel(tab)``);
    the kernel clears ``known`` when it changes a key's slots, the caller when
    anything else does.

    Returns ``(row, n_keys, n_nodes, n_out, status)``: ``status`` ST_DONE, or what
    to grow before resuming at ``row``.
    """
    mask = used.shape[0] - 1
    n_rows = ts.shape[0]
    for i in range(np.uint64(start), np.uint64(n_rows)):  # unsigned: see _key_kernels
        s = sid[i]
        h = _hash_kernel(s, 0) & mask
        idx = -1
        while used[h] != 0:
            if k_sid[h] == s:
                idx = k_idx[h]
                break
            h = (h + 1) & mask
        if skip_idle and bits[i] == 0 and (idx < 0 or nslot[idx] == 0):
            continue
        if idx < 0:
            if (n_keys + 1) * 2 > used.shape[0] or n_keys + 1 > nslot.shape[0]:
                return np.int64(i), n_keys, n_nodes, n_out, ST_KEYS
            used[h] = 1
            k_sid[h] = s
            k_idx[h] = n_keys
            key_sid[n_keys] = s
            nslot[n_keys] = 0
            idx = n_keys
            n_keys += 1
        n = nslot[idx]
        if skip_idle and bits[i] == 0:
            if idle[idx, 0] == 0:
                idle[idx, 1] = _idle_until(block, idx * cap, n, within, idle_fixed)
                idle[idx, 0] = 1
            if ts[i] < idle[idx, 1]:
                continue
        if n_nodes + (n + 1) * chain > nd.shape[0]:
            return np.int64(i), n_keys, n_nodes, n_out, ST_NODES
        if n_out + cap + scratch.shape[0] > o_meta.shape[0]:
            return np.int64(i), n_keys, n_nodes, n_out, ST_OUT
        base = idx * cap
        t = ts[i]
        if n > 0 and within > 0:
            n = _timeout(block, base, n, t, within, False, tab)
            n, n_out = _emit(block, base, n, s, nd, o_meta, n_out, tmp_a, tmp_b)
        b = bits[i]
        pos = pos0 + np.int64(i)
        v = val[i]
        w = 0
        for q in range(base, base + n):
            if block[q, S_DONE] == 1:
                scratch[w, :] = block[q, :]
                w += 1
                continue
            w, n_nodes = _walk(
                scratch,
                w,
                block[q, S_STATE],
                block[q, S_FLAG],
                block[q, S_START_TS],
                block[q, S_START_POS],
                block[q, S_N],
                block[q, S_HEAD],
                False,
                b,
                t,
                pos,
                v,
                tab,
                L,
                nd,
                nd_val,
                n_nodes,
                counters,
            )
        w, n_nodes = _walk(
            scratch,
            w,
            0,
            0,
            t,
            pos,
            0,
            -1,
            True,
            b,
            t,
            pos,
            v,
            tab,
            L,
            nd,
            nd_val,
            n_nodes,
            counters,
        )
        w, n_out = _emit(scratch, 0, w, s, nd, o_meta, n_out, tmp_a, tmp_b)
        w, n_out = _cap(scratch, w, cap, s, nd, o_meta, n_out, counters, tmp_a, tmp_b)
        block[base : base + w, :] = scratch[:w, :]
        nslot[idx] = w
        idle[idx, 0] = 0
    return n_rows, n_keys, n_nodes, n_out, ST_DONE


@_jit
def _pattern_advance_kernel(
    start,
    t,
    flush,
    tab,
    within,
    cap,
    key_sid,
    n_keys,
    nslot,
    block,
    nd,
    o_meta,
    n_out,
    tmp_a,
    tmp_b,
):
    """Time reaches ``t`` for every key from ``start``: timeouts, then held matches.

    Returns ``(next_key, n_out)``; ``next_key < n_keys`` means: grow the output.
    """
    for idx in range(start, n_keys):
        n = nslot[idx]
        if n == 0:
            continue
        if n_out + cap > o_meta.shape[0]:
            return idx, n_out
        base = idx * cap
        n = _timeout(block, base, n, t, within, flush, tab)
        n, n_out = _emit(block, base, n, key_sid[idx], nd, o_meta, n_out, tmp_a, tmp_b)
        nslot[idx] = n
    return n_keys, n_out


@_jit
def _pattern_chains_kernel(heads, lens, nd, nd_val):
    """The events of chains ``heads`` (first to last): offsets, pos, ts, step, value."""
    m = heads.shape[0]
    offsets = np.zeros(m + 1, np.int64)
    for r in range(m):
        offsets[r + 1] = offsets[r] + lens[r]
    total = offsets[m]
    pos = np.empty(total, np.int64)
    ts = np.empty(total, np.int64)
    step = np.empty(total, np.int64)
    value = np.empty(total, np.float64)
    for r in range(m):
        h = heads[r]
        for j in range(offsets[r + 1] - 1, offsets[r] - 1, -1):
            pos[j] = nd[h, N_POS]
            ts[j] = nd[h, N_TS]
            step[j] = nd[h, N_STEP]
            value[j] = nd_val[h]
            h = nd[h, N_PREV]
    return offsets, pos, ts, step, value


@_jit
def _pattern_gc_kernel(nd, nd_val, n_nodes, cap, n_keys, nslot, block):
    """Compact the node pool in place to the nodes some slot reaches; returns the count."""
    mark = np.zeros(n_nodes, np.uint8)
    for idx in range(n_keys):
        base = idx * cap
        for q in range(base, base + nslot[idx]):
            h = block[q, S_HEAD]
            while h >= 0 and mark[h] == 0:
                mark[h] = 1
                h = nd[h, N_PREV]
    new = np.empty(n_nodes, np.int64)
    w = 0
    for j in range(n_nodes):  # a node's predecessor has a smaller index
        if mark[j] == 0:
            continue
        new[j] = w
        prev = nd[j, N_PREV]
        nd[w, :] = nd[j, :]
        nd[w, N_PREV] = new[prev] if prev >= 0 else -1
        nd_val[w] = nd_val[j]
        w += 1
    for idx in range(n_keys):
        base = idx * cap
        for q in range(base, base + nslot[idx]):
            h = block[q, S_HEAD]
            if h >= 0:
                block[q, S_HEAD] = new[h]
    return w


@_jit
def _pattern_rehash_kernel(key_sid, n_keys, new_cap):
    """A key table of ``new_cap`` slots for the dense keys ``key_sid[:n_keys]``."""
    used = np.zeros(new_cap, np.uint8)
    k_sid = np.zeros(new_cap, np.int32)
    k_idx = np.zeros(new_cap, np.int64)
    mask = new_cap - 1
    for idx in range(n_keys):
        s = key_sid[idx]
        h = _hash_kernel(s, 0) & mask
        while used[h] != 0:
            h = (h + 1) & mask
        used[h] = 1
        k_sid[h] = s
        k_idx[h] = idx
    return used, k_sid, k_idx
