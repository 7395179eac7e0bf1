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
from telepipe.operators.patterns._cond_kernels import _agg_update, _holds
from telepipe.operators.patterns._slot_kernels import (
    C_DROPPED,
    C_DROPPED_STARTS,
    C_GROW_KEY,
    C_HELD_AT_END,
    C_NDL,
    N_POS,
    N_PREV,
    N_STEP,
    N_TS,
    R_PARTIAL,
    S_DONE,
    S_FLAG,
    S_HEAD,
    S_N,
    S_START_POS,
    S_START_TS,
    S_STATE,
    _cap,
    _dead,
    _drop_poisoned,
    _drop_start,
    _due,
    _emit,
    _find_start,
    _put,
    _timeout,
)
from telepipe.operators.runtime._key_kernels import (
    INT64_MAX,
    INT64_MIN,
    _inline,
    _jit,
    _slot_kernel,
)

ST_DONE, ST_KEYS, ST_NODES, ST_OUT, ST_BLOCK, ST_GROW = range(6)
# ``idle[idx]``: (known, until, earliest deadline, deadline known) and the key's fixed
# prefix (known, for which bits, its slots, their earliest deadline, flags: 1 a held
# complete match in it, 2 its partial matches all idle-fixed). See the run kernel.
I_PFX, I_PFX_BITS, I_PFX_N, I_PFX_DUE, I_PFX_FLAGS = range(4, 9)
IDLE_COLS = 9
FLUSH_ALL, FLUSH_FLINK = 1, 2  # _pattern_advance_kernel's end-of-input modes
# ``_pattern_run_kernel``'s cache of which (state, flag) a row's condition bits leave as
# they are: entries, and the marks of an entry's cells.
_FIXED_CACHE = 8
_UNKNOWN = 2
_EMPTY = 3


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
    poison,
    n_poison,
    progs_on,
    P,
    nd_agg,
    rowf,
    ri,
):
    """Branches of one partial match (or of the start state) on one event, from ``w``.

    Returns ``(w, n_nodes, n_poison)``; a kill condition discards every branch of the
    match. A take past ``L`` events adds the match's start to ``poison`` (start pos,
    start ts, head; each start once): the caller drops all of that start's matches.
    A condition holds when its bit is set and, with ``progs_on`` (some condition refers
    to the match), ``_holds`` says so (its program over the match's aggregates
    ``nd_agg[head]``); a taken reading's node then carries the aggregates one event
    later. (Those calls are not inlined: binding the arrays they take at each state
    cost the benchmark pattern a third of its speed.)
    """
    w0 = w
    cur = state
    kk = flag
    while cur >= 0:
        kill = tab[cur, T_KILL]
        if (
            kill >= 0
            and (bits >> kill) & 1
            and (
                not progs_on
                or _holds(
                    kill,
                    P,
                    nd_agg,
                    head,
                    start_ts,
                    t,
                    v,
                    rowf,
                    ri,
                )
            )
        ):
            return w0, n_nodes, n_poison
        kind = tab[cur, T_KIND]
        if kind == K_NOTNEXT:
            cur = tab[cur, T_NEXT]
            kk = 0
            continue
        if kind == K_TRAIL_NN:
            return _put(sl, w, -1, 0, 1, start_ts, start_pos, n, head), n_nodes, n_poison
        if kind == K_TRAIL_NFB:
            return _put(sl, w, cur, 0, 0, start_ts, start_pos, n, head), n_nodes, n_poison
        proceed = tab[cur, T_PROCEED] == 1 and kk == 0
        k = tab[cur, T_TAKE]
        taken = (bits >> k) & 1 == 1
        if taken and progs_on:
            taken = _holds(k, P, nd_agg, head, start_ts, t, v, rowf, ri)
        if taken:
            if n + 1 > L:
                known = False
                for k in range(n_poison):
                    known |= poison[k, 0] == start_pos
                if not known:
                    poison[n_poison, 0] = start_pos
                    poison[n_poison, 1] = start_ts
                    poison[n_poison, 2] = head
                    n_poison += 1
            else:
                node = n_nodes
                n_nodes += 1
                nd[node, N_POS] = pos
                nd[node, N_TS] = t
                nd[node, N_STEP] = tab[cur, T_STEP]
                nd[node, N_PREV] = head
                nd_val[node] = v
                if progs_on:
                    step = tab[cur, T_STEP]
                    _agg_update(P, nd_agg, node, head, step, t, start_ts, v, rowf, ri)
                to = tab[cur, T_TO]
                if to < 0:
                    w = _put(sl, w, -1, 0, 1, start_ts, start_pos, n + 1, node)
                else:
                    w = _put(sl, w, to, 0, 0, start_ts, start_pos, n + 1, node)
                    if tab[cur, T_FIN] == 1:
                        w = _put(sl, w, -1, 0, 1, start_ts, start_pos, n + 1, node)
        if (
            (not taken or tab[cur, T_ANY] == 1)
            and tab[cur, T_STRICT] == 0
            and not is_start
            and (
                tab[cur, T_NOIGN] < 0
                or not (bits >> tab[cur, T_NOIGN]) & 1
                or (
                    progs_on
                    and not _holds(
                        tab[cur, T_NOIGN],
                        P,
                        nd_agg,
                        head,
                        start_ts,
                        t,
                        v,
                        rowf,
                        ri,
                    )
                )
            )
        ):
            w = _put(sl, w, cur, 1 if proceed else kk, 0, start_ts, start_pos, n, head)
        if not proceed:
            break
        cur = tab[cur, T_NEXT]
        kk = 0
    return w, n_nodes, n_poison


@_inline
def _is_fixed(state, flag, bits, tab, probe, nd, nd_val, poison, mask, P, nd_agg, rowf):
    """A partial match in ``state`` with ``flag`` stays exactly as it is on a row whose
    conditions are ``bits``: ``_walk`` on a probe slot gives back that one slot, unchanged,
    taking nothing (so the match's own start, events and length do not matter). A row
    setting the bit of a condition with a program is never taken as leaving a match as
    it is (the program decides, per match)."""
    if np.uint64(bits) & mask:
        return False
    w, n_nodes, n_poison = _walk(
        probe, 0, state, flag, 0, 0, 1, -1, False, bits, 0, 1, 0.0, tab, 2, nd, nd_val, 0,
        poison, 0, False, P, nd_agg, rowf, 0,
    )  # fmt: skip
    return (
        w == 1
        and n_poison == 0
        and n_nodes == 0
        and probe[0, S_STATE] == state
        and probe[0, S_FLAG] == flag
        and probe[0, S_DONE] == 0
    )


@_jit
def _idle_fixed_kernel(tab, cx):
    """``fixed[state, flag]``: a partial match in ``state`` with ``flag`` stays exactly as
    it is on a row meeting no condition (``_is_fixed`` with no bit set). Found by running
    ``_walk`` itself, so it cannot disagree with it."""
    n_states = tab.shape[0]
    fixed = np.zeros((n_states, 2), np.uint8)
    probe = np.zeros((2 * n_states + 2, 7), np.int64)
    nd = np.zeros((n_states + 1, 4), np.int64)
    nd_val = np.zeros(n_states + 1, np.float64)
    poison = np.zeros((1, 3), np.int64)
    nd_agg = np.zeros((n_states + 1, int(cx[0][3])), np.float64)
    rowf = np.zeros((1, 3))
    mask = cx[1][0]
    for state in range(n_states):
        for flag in range(2):
            fixed[state, flag] = _is_fixed(
                state, flag, np.uint64(0), tab, probe, nd, nd_val, poison, mask, cx[0], nd_agg, rowf
            )
    return fixed


def run_work(n_states: int, n_aggs: int, scratch_rows: int) -> tuple:
    """``_pattern_run_kernel``'s working arrays: the fixed cache (bits, marks, next
    entry), the probes of ``_is_fixed`` and the poisoned starts of one row."""
    return (
        np.zeros(_FIXED_CACHE, np.uint64),
        np.full((_FIXED_CACHE, n_states, 2), _EMPTY, np.uint8),  # 1 fixed, 0 not
        np.zeros(1, np.int64),
        np.zeros((2 * n_states + 2, 7), np.int64),
        np.zeros((n_states + 1, 4), np.int64),  # a walk takes once per state at most
        np.zeros(n_states + 1, np.float64),
        np.zeros((n_states + 1, n_aggs), np.float64),
        np.empty((scratch_rows + 1, 3), np.int64),
    )


@_inline
def _prepend(scratch, w, block, base, keep):
    """The ``keep`` slots kept in ``block`` ahead of the ``w`` walked ones in ``scratch``,
    in their order (the kept ones came first: the order decides between complete
    matches of the same events, ``_emit``); returns the count."""
    for j in range(w - 1, -1, -1):
        scratch[j + keep, :] = scratch[j, :]
    for j in range(keep):
        scratch[j, :] = block[base + j, :]
    return w + keep


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
    kcap,
    maxcap,
    L,
    chain,
    lookup,
    nslot,
    blk,
    block,
    used,
    scratch,
    nd,
    nd_val,
    nd_agg,
    n_nodes,
    o_meta,
    n_out,
    counters,
    dl,
    dl_val,
    tmp_a,
    tmp_b,
    cx,
    rowf,
    work,
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
    a complete match is held. Each of these passes would change nothing. The cache
    and the probes live in ``work`` (``run_work``), kept from call to call: the cache
    depends on the table only. A row whose walks left the key's first ``keep`` slots
    in place and emitted nothing records them as the key's fixed prefix
    (``idle[idx, I_PFX:]``: the row's bits, ``keep``, their earliest deadline, held /
    idle-fixed flags) and the key's ``_idle_until`` (known from the same loop): the
    next row with the same bits starts past the prefix (it is fixed for those bits,
    unchanged since), and the next idle row needs no pass. On the benchmark pattern a
    high reading changes only the newest starts' slots, so a row costs what it
    changes, not the sensor's hundreds of partial matches. Whatever else changes a
    key's slots clears ``idle[idx, I_PFX]`` (here: the timeout pass, the cap, the
    emit pass; the caller: ``idle[:] = 0``).

    Returns ``(row, n_nodes, n_out, status)``: ``status`` ST_DONE, or what to grow
    before resuming at ``row`` (``ST_KEYS``: the sensor has no ``KeyIndex`` slot, or
    no state at its slot, yet; ``ST_BLOCK``: it needs a block; ``ST_GROW``: see below,
    the row is undone and the caller resumes at it; ``ST_OUT``: room for output or dead
    letters, ``counters[C_NDL]`` of them in ``dl``). A full block grows here while
    ``block`` has room past ``used[0]`` (its rows handed out); ``ST_GROW`` asks the
    caller for room (``counters[C_GROW_KEY]``: the key; -1: a larger scratch).

    Limits never change a match: beyond ``maxcap`` slots a key drops the partial
    matches of its oldest start (``_cap``), beyond ``L`` events a match drops every
    slot of its start (``_drop_poisoned``); each dropped start is one dead letter.
    """
    dense, h_key, h_slot = lookup
    n_keys = nslot.shape[0]
    n_rows = ts.shape[0]
    n_states = tab.shape[0]
    fx_bits, fx, fx_next, probe, probe_nd, probe_val, probe_agg, poison = work
    fx_entry = -1
    fx_for = np.uint64(0)
    per_row = rowf.shape[0] > 1  # (one row: no condition reads the row's other columns)
    P, mask_arr = cx
    mask = mask_arr[0]
    progs_on = mask != 0
    ri = 0
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
        base = blk[idx]
        cap = kcap[idx]
        n = nslot[idx]
        if skip_idle and bits[i] == 0:
            if idle[idx, 0] == 0:
                idle[idx, 1] = _idle_until(block, base, n, within, unit, idle_fixed)
                idle[idx, 0] = 1
            if ts[i] < idle[idx, 1]:
                continue
        if n + (n + 1) * (2 * n_states + 1) > scratch.shape[0]:
            counters[C_GROW_KEY] = -1  # the scratch, for a key grown by this kernel
            return np.int64(i), n_nodes, n_out, ST_GROW
        if n_nodes + (n + 1) * chain > nd.shape[0]:
            return np.int64(i), n_nodes, n_out, ST_NODES
        if (
            n_out + cap + scratch.shape[0] > o_meta.shape[0]
            or counters[C_NDL] + scratch.shape[0] + 1 > dl.shape[0]
        ):
            return np.int64(i), n_nodes, n_out, ST_OUT
        t = ts[i]
        if n > 0 and within > 0 and not (skip_fixed and idle[idx, 3] == 1 and t < idle[idx, 2]):
            n = _timeout(block, base, n, t, within, unit, False, tab)
            n, n_out = _emit(block, base, n, s, nd, o_meta, n_out, tmp_a, tmp_b, skip)
            nslot[idx] = n  # kept if the row is undone (ST_GROW)
            idle[idx, 0] = 0
            idle[idx, I_PFX] = 0
        b = bits[i]
        if skip_fixed and (fx_entry < 0 or fx_for != b):
            fx_entry = -1
            for e in range(_FIXED_CACHE):
                if fx[e, 0, 0] != _EMPTY and fx_bits[e] == b:
                    fx_entry = e
                    break
            if fx_entry < 0:
                fx_entry = fx_next[0]
                fx_next[0] = (fx_entry + 1) % _FIXED_CACHE
                fx[fx_entry, :, :] = _UNKNOWN
                fx_bits[fx_entry] = b
            fx_for = b
        pos = pos0 + np.int64(i)
        v = val[i]
        if per_row:
            ri = np.int64(i)
        n_nodes0 = n_nodes
        n_poison = 0
        # The slots the row leaves as they are, up to the first it changes, stay in
        # ``block`` (``keep`` of them); the rest, walked or not, go to ``scratch`` (``w``)
        # in order. The order of slots matters: of two complete matches with the same
        # events under other steps, the one that came first wins (``_emit``).
        # The fixed prefix: the first slots of the key that the last row it walked
        # (with the same bits) left in place, unchanged since (anything else that
        # changes a key's slots clears ``idle[idx, I_PFX]``), so fixed for these bits
        # again: the row starts past them, with their deadline and flags.
        w = 0
        keep = 0
        walked = False
        due = INT64_MAX  # at most the earliest deadline (slots only leave after this)
        held = False  # a complete match is held: the emit pass has work
        held_keep = False  # ... in the kept slots
        idle_keep = True  # the kept partial matches are all idle-fixed
        q0 = base
        if (
            skip_fixed
            and idle[idx, I_PFX] == 1
            and idle[idx, I_PFX_BITS] == np.int64(b)
            and idle[idx, I_PFX_N] <= n
        ):
            keep = idle[idx, I_PFX_N]
            due = idle[idx, I_PFX_DUE]
            held_keep = idle[idx, I_PFX_FLAGS] & 1 == 1
            idle_keep = idle[idx, I_PFX_FLAGS] & 2 == 2
            held = held_keep
            q0 = base + keep
        for q in range(q0, base + n):
            if block[q, S_DONE] == 1:
                held = True
                if skip_fixed and not walked:
                    keep += 1
                    held_keep = True
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
                        _is_fixed(
                            state, flag, b, tab, probe, probe_nd, probe_val, poison, mask, P,
                            probe_agg, rowf,
                        )
                    )  # fmt: skip
                    fx[fx_entry, state, flag] = f
                if f == 1:
                    if walked:
                        scratch[w, :] = block[q, :]
                        w += 1
                    else:
                        due = min(due, _due(block[q, S_START_TS], within, unit))
                        keep += 1
                        idle_keep &= idle_fixed[state, flag] == 1
                    continue
            walked = True
            w0 = w
            w, n_nodes, n_poison = _walk(
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
                poison,
                n_poison,
                progs_on,
                P,
                nd_agg,
                rowf,
                ri,
            )
            for j in range(w0, w):
                held |= scratch[j, S_DONE] == 1
        w0 = w
        w, n_nodes, n_poison = _walk(
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
            poison,
            n_poison,
            progs_on,
            P,
            nd_agg,
            rowf,
            ri,
        )
        for j in range(w0, w):
            held |= scratch[j, S_DONE] == 1
        if keep + w > cap and cap < maxcap:
            # The block is full: a block twice as large (or as large as needed) at
            # the end of ``block``, if it has room; else undo the row (its walks only
            # wrote scratch and new nodes) and have the caller make room.
            size = cap
            while size < keep + w and size < maxcap:
                size = min(2 * size, maxcap)
            if used[0] + size > block.shape[0]:
                counters[C_GROW_KEY] = idx
                return np.int64(i), n_nodes0, n_out, ST_GROW
            new = used[0]
            for q in range(n):
                block[new + q, :] = block[base + q, :]
            used[0] = new + size
            blk[idx] = new
            kcap[idx] = size
            base = new
            cap = size
        if n_poison > 0:
            # A take passed max_match_events: every slot of its start goes (kept ones
            # too), so all of them join the walked ones in scratch first.
            w = _prepend(scratch, w, block, base, keep)
            keep = 0
            w = _drop_poisoned(scratch, w, poison, n_poison, s, nd, nd_val, counters, dl, dl_val)
            for j in range(w):
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
                q = _find_start(block, base, keep, oldest, True)
                if q >= 0:
                    one_ts, one_head = block[q, S_START_TS], block[q, S_HEAD]
                else:
                    q = _find_start(scratch, 0, w, oldest, True)
                    one_ts, one_head = scratch[q, S_START_TS], scratch[q, S_HEAD]
                keep1 = _drop_start(block, base, keep, oldest, False) - base
                w1 = _drop_start(scratch, 0, w, oldest, False)
                gone = keep - keep1 + w - w1
                keep, w = keep1, w1
                counters[C_DROPPED] += gone
                counters[C_DROPPED_STARTS] += 1
                _dead(
                    dl, dl_val, counters, R_PARTIAL, s, one_ts, oldest, gone, one_head, nd,
                    nd_val,
                )  # fmt: skip
        idle[idx, 0] = 0
        idle[idx, I_PFX] = 0
        if keep + w <= cap:  # (always so with skip_fixed off: keep is 0)
            # Walked slots join the kept ones in ``block``: no cap to apply.
            due_keep = due
            idle_all = idle_keep
            for j in range(w):
                block[base + keep + j, :] = scratch[j, :]
                if scratch[j, S_DONE] == 0:
                    due = min(due, _due(scratch[j, S_START_TS], within, unit))
                    idle_all &= idle_fixed[scratch[j, S_STATE], scratch[j, S_FLAG]] == 1
            if held or not skip_fixed:
                w, n_out = _emit(block, base, w + keep, s, nd, o_meta, n_out, tmp_a, tmp_b, skip)
            else:
                # Nothing left the kept slots: they are the next row's fixed prefix;
                # and ``_idle_until`` of the key is known without another pass.
                idle[idx, I_PFX] = 1
                idle[idx, I_PFX_BITS] = np.int64(b)
                idle[idx, I_PFX_N] = keep
                idle[idx, I_PFX_DUE] = due_keep
                idle[idx, I_PFX_FLAGS] = (1 if held_keep else 0) + (2 if idle_keep else 0)
                if skip_idle:
                    idle[idx, 0] = 1
                    idle[idx, 1] = (INT64_MAX if within <= 0 else due) if idle_all else INT64_MIN
                w += keep
        else:
            w = _prepend(scratch, w, block, base, keep)
            if held or not skip_fixed:
                w, n_out = _emit(scratch, 0, w, s, nd, o_meta, n_out, tmp_a, tmp_b, skip)
            w, n_out = _cap(
                scratch, w, cap, s, nd, nd_val, o_meta, n_out, counters, dl, dl_val, tmp_a,
                tmp_b, held or not skip_fixed, skip,
            )  # fmt: skip
            due = INT64_MAX
            for j in range(w):
                block[base + j, :] = scratch[j, :]
                if scratch[j, S_DONE] == 0:
                    due = min(due, _due(scratch[j, S_START_TS], within, unit))
        nslot[idx] = w
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
    kcap,
    key_sid,
    n_keys,
    nslot,
    blk,
    block,
    nd,
    o_meta,
    n_out,
    counters,
    tmp_a,
    tmp_b,
):
    """Time reaches ``t`` for every key from ``start``: timeouts, then held matches.

    ``flush``: 0 (a watermark), ``FLUSH_ALL`` (the end of input ends every partial
    match, then held matches are reported) or ``FLUSH_FLINK`` (as Flink: time moves
    to the end, so only ``within`` ends partial matches; what is then still held
    behind one is not reported, counted in ``counters[C_HELD_AT_END]``, and all goes).

    Returns ``(next_key, n_out)``; ``next_key < n_keys`` means: grow the output.
    """
    for idx in range(start, n_keys):
        n = nslot[idx]
        if n == 0:
            continue
        if n_out + kcap[idx] > o_meta.shape[0]:
            return idx, n_out
        base = blk[idx]
        n = _timeout(block, base, n, t, within, unit, flush == FLUSH_ALL, tab)
        n, n_out = _emit(block, base, n, key_sid[idx], nd, o_meta, n_out, tmp_a, tmp_b, skip)
        if flush == FLUSH_FLINK:
            for q in range(base, base + n):
                counters[C_HELD_AT_END] += block[q, S_DONE]
            n = 0
        nslot[idx] = n
    return n_keys, n_out
