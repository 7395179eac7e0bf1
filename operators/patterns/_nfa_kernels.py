"""numba kernels of ``CepPattern``: run the compiled NFA per sensor over event-ordered rows.

State, all numpy arrays owned by the logic:

- keys: each sensor's ``KeyIndex`` slot ``idx`` (``lookup``); ``nslot[idx]`` entries in
  use of its block ``blk[idx]`` (-1: none yet; given to a sensor when a row of it
  meets a condition, so a sensor that never does costs no block).
- entries: ``block[blk[idx] * cap + q, S_*]`` int64 rows, at most ``cap`` per key: partial
  matches (``S_DONE == 0``) and complete matches held back by the after-match rule
  (``S_DONE == 1``). ``scratch`` takes the slots an event changes (all of the key's
  when they pass the cap) while it is processed.
- events of matches: a node pool ``nd[i, N_*]`` + ``nd_val[i]``, each node linking to
  the match's previous event (``N_PREV``), so forking a partial match is O(1). Nodes
  no slot reaches are reclaimed by ``_pattern_store_kernels._pattern_gc_kernel`` when
  the pool fills.

Kernels stop before a row they might not have room for and return a status; the
caller grows (or collects) and resumes, as the other operator kernels do.
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.patterns._compiler import (
    K_NOTNEXT,
    K_TRAIL_NFB,
    K_TRAIL_NN,
    T_ANY,
    T_FIN,
    T_KILL,
    T_KIND,
    T_NEXT,
    T_NOIGN,
    T_PROCEED,
    T_STEP,
    T_STRICT,
    T_TAKE,
    T_TO,
)
from telepipe.operators.runtime._key_kernels import (
    INT64_MAX,
    INT64_MIN,
    _inline,
    _jit,
    _slot_kernel,
)
from telepipe.operators.runtime._time_kernels import _deadline

S_STATE, S_FLAG, S_DONE, S_START_TS, S_START_POS, S_N, S_HEAD = range(7)
N_POS, N_TS, N_STEP, N_PREV = range(4)
O_SID, O_START_TS, O_END_TS, O_N, O_HEAD = range(5)
ST_DONE, ST_KEYS, ST_NODES, ST_OUT, ST_BLOCK = range(5)
C_DROPPED, C_OVERFLOW = range(2)
# After-match skip strategies (``skip[0]``; ``skip[1]``: the step of to_first/to_last).
SK_PAST_LAST, SK_TO_NEXT, SK_TO_FIRST, SK_TO_LAST, SK_NO_SKIP = range(5)
# ``_pattern_run_kernel``'s cache of which (state, flag) a row's condition bits leave as
# they are: entries, and the marks of an entry's cells.
_FIXED_CACHE = 8
_UNKNOWN = 2
_EMPTY = 3


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
def _emit(sl, lo, cnt, sid, nd, o_meta, n_out, tmp_a, tmp_b, skip):
    """Emit held complete matches no earlier partial match can pre-empt (with no skip:
    every complete match at once); after each, drop what the skip strategy ``skip``
    discards.

    Returns ``(cnt, n_out)``; the slots ``[lo, lo + cnt)`` are compacted in place.
    """
    kind = skip[0]
    while True:
        best = -1
        min_partial = INT64_MAX
        for q in range(lo, lo + cnt):
            if sl[q, S_DONE] == 1:
                if best < 0 or _better(sl, q, best, nd, tmp_a, tmp_b):
                    best = q
            elif sl[q, S_START_POS] < min_partial:
                min_partial = sl[q, S_START_POS]
        if best < 0 or (kind != SK_NO_SKIP and min_partial < sl[best, S_START_POS]):
            return cnt, n_out
        head = sl[best, S_HEAD]
        o_meta[n_out, O_SID] = sid
        o_meta[n_out, O_START_TS] = sl[best, S_START_TS]
        o_meta[n_out, O_END_TS] = nd[head, N_TS]
        o_meta[n_out, O_N] = sl[best, S_N]
        o_meta[n_out, O_HEAD] = head
        n_out += 1
        first = sl[best, S_START_POS]
        if kind == SK_PAST_LAST:
            cut = nd[head, N_POS]
        elif kind == SK_NO_SKIP:
            cut = INT64_MIN
        elif kind == SK_TO_NEXT:
            cut = first
        else:
            # drop the matches started before the first / last event of step skip[1]
            # (never the match's own start or earlier: as skip to next then)
            at = INT64_MIN
            h = head
            for _ in range(sl[best, S_N]):
                if nd[h, N_STEP] == skip[1] and (kind == SK_TO_FIRST or at == INT64_MIN):
                    at = nd[h, N_POS]
                h = nd[h, N_PREV]
            cut = first if at == INT64_MIN else max(first, at - 1)
        w = lo
        for q in range(lo, lo + cnt):
            if q != best and sl[q, S_START_POS] > cut:
                if w != q:
                    sl[w, :] = sl[q, :]
                w += 1
        cnt = w - lo


@_inline
def _due(start, within, unit):
    """When a partial match started at ``start`` expires: ``start + within``, with
    ``start`` first floored to a multiple of ``unit`` (1: exact nanoseconds; 10**6:
    Flink's whole milliseconds, ``floor(t / 1 ms) - floor(start / 1 ms) >= within``)."""
    if unit == 1:  # the common case: no integer division on the hot path
        return _deadline(start, within)
    return _deadline(start - start % unit, within)


@_inline
def _timeout(sl, lo, cnt, t, within, unit, flush, tab):
    """Partial matches older than ``within`` at time ``t`` end: a pending trailing
    ``not_followed_by`` completes, any other is dropped. ``flush`` ends them all."""
    w = lo
    for q in range(lo, lo + cnt):
        keep = True
        if sl[q, S_DONE] == 0:
            deadline = _due(sl[q, S_START_TS], within, unit)
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
def _drop_start(sl, lo, cnt, start_pos, counters):
    """Drop the slots ``[lo, lo + cnt)`` of partial matches started at ``start_pos``
    (moving the others up); returns the new end."""
    w = lo
    for q in range(lo, lo + cnt):
        if sl[q, S_DONE] == 0 and sl[q, S_START_POS] == start_pos:
            counters[C_DROPPED] += 1
            continue
        if w != q:
            sl[w, :] = sl[q, :]
        w += 1
    return w


@_inline
def _cap(sl, cnt, cap, sid, nd, o_meta, n_out, counters, tmp_a, tmp_b, held, skip):
    """Drop the partial matches of the oldest start event until ``cnt <= cap``; ``held``:
    a complete match is held (without one, the emit pass after each drop has no work)."""
    while cnt > cap:
        oldest = INT64_MAX
        for q in range(cnt):
            if sl[q, S_DONE] == 0 and sl[q, S_START_POS] < oldest:
                oldest = sl[q, S_START_POS]
        if oldest == INT64_MAX:
            break
        w = _drop_start(sl, 0, cnt, oldest, counters)
        cnt = w
        if held:
            cnt, n_out = _emit(sl, 0, w, sid, nd, o_meta, n_out, tmp_a, tmp_b, skip)
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
        taken = (bits >> tab[cur, T_TAKE]) & 1
        if taken:
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
        if (
            (taken == 0 or tab[cur, T_ANY] == 1)
            and tab[cur, T_STRICT] == 0
            and not is_start
            and (tab[cur, T_NOIGN] < 0 or not (bits >> tab[cur, T_NOIGN]) & 1)
        ):
            w = _put(sl, w, cur, 1 if proceed else kk, 0, start_ts, start_pos, n, head)
        if not proceed:
            break
        cur = tab[cur, T_NEXT]
        kk = 0
    return w, n_nodes


@_inline
def _is_fixed(state, flag, bits, tab, probe, nd, nd_val, counters):
    """A partial match in ``state`` with ``flag`` stays exactly as it is on a row whose
    conditions are ``bits``: ``_walk`` on a probe slot gives back that one slot, unchanged,
    taking nothing (so the match's own start, events and length do not matter)."""
    w, n_nodes = _walk(
        probe, 0, state, flag, 0, 0, 1, -1, False, bits, 0, 1, 0.0, tab, 2, nd, nd_val, 0,
        counters,
    )  # fmt: skip
    return (
        w == 1
        and n_nodes == 0
        and probe[0, S_STATE] == state
        and probe[0, S_FLAG] == flag
        and probe[0, S_DONE] == 0
    )


@_jit
def _idle_fixed_kernel(tab):
    """``fixed[state, flag]``: a partial match in ``state`` with ``flag`` stays exactly as
    it is on a row meeting no condition (``_is_fixed`` with no bit set). Found by running
    ``_walk`` itself, so it cannot disagree with it."""
    n_states = tab.shape[0]
    fixed = np.zeros((n_states, 2), np.uint8)
    probe = np.zeros((2 * n_states + 2, 7), np.int64)
    nd = np.zeros((n_states + 1, 4), np.int64)
    nd_val = np.zeros(n_states + 1, np.float64)
    counters = np.zeros(2, np.int64)
    for state in range(n_states):
        for flag in range(2):
            fixed[state, flag] = _is_fixed(
                state, flag, np.uint64(0), tab, probe, nd, nd_val, counters
            )
    return fixed


@_inline
def _idle_until(sl, lo, cnt, within, unit, fixed):
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
            until = min(until, _due(sl[q, S_START_TS], within, unit))
    return until


@_jit
def _pattern_run_kernel(
    skip_idle,
    idle_fixed,
    idle,
    skip_fixed,
    start,
    sid,
    ts,
    val,
    bits,
    pos0,
    tab,
    within,
    unit,
    skip,
    cap,
    L,
    chain,
    lookup,
    nslot,
    blk,
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

    With ``skip_fixed``, a row a sensor's rows do walk copies over each partial
    match the row leaves as it is (found per (state, flag) by ``_is_fixed`` for the
    row's condition bits, cached for the last ``_FIXED_CACHE`` distinct bits of the
    call) instead of walking it; the timeout pass runs only once a deadline is due
    (``idle[idx, 2]``, the earliest deadline, valid while ``idle[idx, 3]``: set by
    the kernel, cleared by the caller with ``known``), and the emit pass only when
    a complete match is held. Each of these passes would change nothing.

    Returns ``(row, n_nodes, n_out, status)``: ``status`` ST_DONE, or what to grow
    before resuming at ``row`` (``ST_KEYS``: the sensor has no ``KeyIndex`` slot, or
    no state at its slot, yet; ``ST_BLOCK``: it needs a block).
    """
    dense, h_key, h_slot = lookup
    n_keys = nslot.shape[0]
    n_rows = ts.shape[0]
    n_states = tab.shape[0]
    fx_bits = np.zeros(_FIXED_CACHE, np.uint64)
    fx = np.full((_FIXED_CACHE, n_states, 2), _EMPTY, np.uint8)  # 1 fixed, 0 not
    fx_next = 0
    fx_entry = -1
    fx_for = np.uint64(0)
    probe = np.zeros((2 * n_states + 2, 7), np.int64)
    probe_nd = np.zeros((n_states + 1, 4), np.int64)  # a walk takes once per state at most
    probe_val = np.zeros(n_states + 1, np.float64)
    probe_counters = np.zeros(2, np.int64)
    for i in range(np.uint64(start), np.uint64(n_rows)):  # unsigned: see _key_kernels
        s = sid[i]
        # The slot lookup written out, as _key_kernels says why.
        idx = -1
        if 0 <= s < dense.shape[0]:
            idx = dense[s]
        if idx < 0:
            idx = _slot_kernel(s, dense, h_key, h_slot)
        if idx < 0 or idx >= n_keys:
            return np.int64(i), n_nodes, n_out, ST_KEYS
        if skip_idle and bits[i] == 0 and nslot[idx] == 0:
            continue
        if blk[idx] < 0:
            return np.int64(i), n_nodes, n_out, ST_BLOCK
        base = blk[idx] * cap
        n = nslot[idx]
        if skip_idle and bits[i] == 0:
            if idle[idx, 0] == 0:
                idle[idx, 1] = _idle_until(block, base, n, within, unit, idle_fixed)
                idle[idx, 0] = 1
            if ts[i] < idle[idx, 1]:
                continue
        if n_nodes + (n + 1) * chain > nd.shape[0]:
            return np.int64(i), n_nodes, n_out, ST_NODES
        if n_out + cap + scratch.shape[0] > o_meta.shape[0]:
            return np.int64(i), n_nodes, n_out, ST_OUT
        t = ts[i]
        if n > 0 and within > 0 and not (skip_fixed and idle[idx, 3] == 1 and t < idle[idx, 2]):
            n = _timeout(block, base, n, t, within, unit, False, tab)
            n, n_out = _emit(block, base, n, s, nd, o_meta, n_out, tmp_a, tmp_b, skip)
        b = bits[i]
        if skip_fixed and (fx_entry < 0 or fx_for != b):
            fx_entry = -1
            for e in range(_FIXED_CACHE):
                if fx[e, 0, 0] != _EMPTY and fx_bits[e] == b:
                    fx_entry = e
                    break
            if fx_entry < 0:
                fx_entry = fx_next
                fx_next = (fx_next + 1) % _FIXED_CACHE
                fx[fx_entry, :, :] = _UNKNOWN
                fx_bits[fx_entry] = b
            fx_for = b
        pos = pos0 + np.int64(i)
        v = val[i]
        # The slots the row leaves as they are, up to the first it changes, stay in
        # ``block`` (``keep`` of them); the rest, walked or not, go to ``scratch`` (``w``)
        # in order. The order of slots matters: of two complete matches with the same
        # events under other steps, the one that came first wins (``_emit``).
        w = 0
        keep = 0
        walked = False
        due = INT64_MAX  # at most the earliest deadline (slots only leave after this)
        held = False  # a complete match is held: the emit pass has work
        for q in range(base, base + n):
            if block[q, S_DONE] == 1:
                held = True
                if skip_fixed and not walked:
                    keep += 1
                else:
                    scratch[w, :] = block[q, :]
                    w += 1
                continue
            if skip_fixed:
                state = block[q, S_STATE]
                flag = block[q, S_FLAG]
                f = fx[fx_entry, state, flag]
                if f == _UNKNOWN:
                    f = np.uint8(
                        _is_fixed(state, flag, b, tab, probe, probe_nd, probe_val, probe_counters)
                    )
                    fx[fx_entry, state, flag] = f
                if f == 1:
                    if walked:
                        scratch[w, :] = block[q, :]
                        w += 1
                    else:
                        due = min(due, _due(block[q, S_START_TS], within, unit))
                        keep += 1
                    continue
            walked = True
            w0 = w
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
            for j in range(w0, w):
                held |= scratch[j, S_DONE] == 1
        w0 = w
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
        for j in range(w0, w):
            held |= scratch[j, S_DONE] == 1
        if keep + w > cap and skip_fixed and not held:
            # Over the cap with no complete match held: the cap's drops (the partial
            # matches of the oldest start, until under it) are all it does, so they
            # are done here in place, in both parts.
            while keep + w > cap:
                oldest = INT64_MAX
                for q in range(base, base + keep):
                    oldest = min(oldest, block[q, S_START_POS])
                for j in range(w):
                    oldest = min(oldest, scratch[j, S_START_POS])
                keep = _drop_start(block, base, keep, oldest, counters) - base
                w = _drop_start(scratch, 0, w, oldest, counters)
        if keep + w <= cap:  # (always so with skip_fixed off: keep is 0)
            # Walked slots join the kept ones in ``block``: no cap to apply.
            for j in range(w):
                block[base + keep + j, :] = scratch[j, :]
                if scratch[j, S_DONE] == 0:
                    due = min(due, _due(scratch[j, S_START_TS], within, unit))
            w += keep
            if held or not skip_fixed:
                w, n_out = _emit(block, base, w, s, nd, o_meta, n_out, tmp_a, tmp_b, skip)
        else:
            for j in range(keep):
                scratch[w + j, :] = block[base + j, :]
            w += keep
            if held or not skip_fixed:
                w, n_out = _emit(scratch, 0, w, s, nd, o_meta, n_out, tmp_a, tmp_b, skip)
            w, n_out = _cap(
                scratch, w, cap, s, nd, o_meta, n_out, counters, tmp_a, tmp_b,
                held or not skip_fixed, skip,
            )  # fmt: skip
            due = INT64_MAX
            for j in range(w):
                block[base + j, :] = scratch[j, :]
                if scratch[j, S_DONE] == 0:
                    due = min(due, _due(scratch[j, S_START_TS], within, unit))
        nslot[idx] = w
        idle[idx, 0] = 0
        idle[idx, 2] = due
        idle[idx, 3] = 1
    return n_rows, n_nodes, n_out, ST_DONE


@_jit
def _pattern_advance_kernel(
    start,
    t,
    flush,
    tab,
    within,
    unit,
    skip,
    cap,
    key_sid,
    n_keys,
    nslot,
    blk,
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
        base = blk[idx] * cap
        n = _timeout(block, base, n, t, within, unit, flush, tab)
        n, n_out = _emit(block, base, n, key_sid[idx], nd, o_meta, n_out, tmp_a, tmp_b, skip)
        nslot[idx] = n
    return n_keys, n_out
