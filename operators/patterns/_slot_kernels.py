"""numba helpers of ``CepPattern``'s kernels over a key's slots (partial and held matches).

Layouts shared by every pattern kernel:

- a slot: one int64 row of ``S_*`` columns (``block`` or ``scratch``);
- an event node: ``nd[i, N_*]`` + ``nd_val[i]`` (+ ``nd_agg[i]``, the match's running
  aggregates up to this event, see ``_cond_kernels``), linked to the match's previous
  event by ``N_PREV``;
- an output row: ``o_meta[i, O_*]``;
- a dead letter (a partial match dropped at a limit): ``dl[i, D_*]`` + ``dl_val[i]``
  (the value of its first reading);
- ``counters[C_*]``: totals the logic reports, and two registers the run kernel
  hands back (pending dead letters, the key whose block must grow).
"""

from __future__ import annotations

from telepipe.operators.patterns._compiler import K_TRAIL_NFB, T_KIND
from telepipe.operators.runtime._key_kernels import INT64_MAX, INT64_MIN, _inline
from telepipe.operators.runtime._time_kernels import _deadline

S_STATE, S_FLAG, S_DONE, S_START_TS, S_START_POS, S_N, S_HEAD = range(7)
N_POS, N_TS, N_STEP, N_PREV = range(4)
O_SID, O_START_TS, O_END_TS, O_N, O_HEAD = range(5)
D_REASON, D_SID, D_START_TS, D_START_POS, D_COUNT = range(5)
# Dead-letter reasons (``D_REASON``), named in ``pattern.DEAD_LETTER_REASONS``.
R_PARTIAL, R_EVENTS = range(2)
# counters: partial matches (slots) dropped at max_partial_matches, starts dropped
# there, starts dropped at max_match_events; pending dead letters in ``dl``; the key
# to grow (ST_GROW); complete matches held behind a partial match at the end of input
# (Flink's end, not reported).
C_DROPPED, C_DROPPED_STARTS, C_OVERFLOW, C_NDL, C_GROW_KEY, C_HELD_AT_END = range(6)
N_COUNTERS = 6
# After-match skip strategies (``skip[0]``; ``skip[1]``: the step of to_first/to_last).
SK_PAST_LAST, SK_TO_NEXT, SK_TO_FIRST, SK_TO_LAST, SK_NO_SKIP = range(5)


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
def _dead(dl, dl_val, counters, reason, sid, start_ts, start_pos, count, head, nd, nd_val):
    """Record a dead letter: ``count`` partial matches of the start reading ``start_pos``
    dropped for ``reason``; ``head``: one of their event chains (its first event's value
    is kept, NaN without one)."""
    k = counters[C_NDL]
    dl[k, D_REASON] = reason
    dl[k, D_SID] = sid
    dl[k, D_START_TS] = start_ts
    dl[k, D_START_POS] = start_pos
    dl[k, D_COUNT] = count
    value = float("nan")
    h = head
    while h >= 0:
        value = nd_val[h]
        h = nd[h, N_PREV]
    dl_val[k] = value
    counters[C_NDL] = k + 1


@_inline
def _drop_start(sl, lo, cnt, start_pos, done_too):
    """Drop the slots ``[lo, lo + cnt)`` of matches started at ``start_pos`` (partial
    ones; held complete ones too with ``done_too``), moving the others up; returns the
    new end."""
    w = lo
    for q in range(lo, lo + cnt):
        if sl[q, S_START_POS] == start_pos and (done_too or sl[q, S_DONE] == 0):
            continue
        if w != q:
            sl[w, :] = sl[q, :]
        w += 1
    return w


@_inline
def _find_start(sl, lo, cnt, start_pos, partial_only):
    """A slot of ``[lo, lo + cnt)`` started at ``start_pos`` (-1: none)."""
    for q in range(lo, lo + cnt):
        if sl[q, S_START_POS] == start_pos and not (partial_only and sl[q, S_DONE] != 0):
            return q
    return -1


@_inline
def _cap(
    sl, cnt, cap, sid, nd, nd_val, o_meta, n_out, counters, dl, dl_val, tmp_a, tmp_b, held, skip
):
    """Drop the partial matches of the oldest start event until ``cnt <= cap``, each
    start one dead letter (``R_PARTIAL``); ``held``: a complete match is held (without
    one, the emit pass after each drop has no work)."""
    while cnt > cap:
        oldest = INT64_MAX
        for q in range(cnt):
            if sl[q, S_DONE] == 0 and sl[q, S_START_POS] < oldest:
                oldest = sl[q, S_START_POS]
        if oldest == INT64_MAX:
            break
        one = _find_start(sl, 0, cnt, oldest, True)
        w = _drop_start(sl, 0, cnt, oldest, False)
        counters[C_DROPPED] += cnt - w
        counters[C_DROPPED_STARTS] += 1
        _dead(
            dl, dl_val, counters, R_PARTIAL, sid, sl[one, S_START_TS], oldest, cnt - w,
            sl[one, S_HEAD], nd, nd_val,
        )  # fmt: skip
        cnt = w
        if held:
            cnt, n_out = _emit(sl, 0, w, sid, nd, o_meta, n_out, tmp_a, tmp_b, skip)
    return cnt, n_out


@_inline
def _drop_poisoned(sl, cnt, poison, n_poison, sid, nd, nd_val, counters, dl, dl_val):
    """Drop every slot (partial or held) of the starts in ``poison[:n_poison]`` (a take
    of theirs passed ``max_match_events``), each start one dead letter (``R_EVENTS``:
    its partial matches, ``poison[k, 2]`` the chain of the one that overflowed)."""
    for k in range(n_poison):
        start_pos = poison[k, 0]
        w = _drop_start(sl, 0, cnt, start_pos, True)
        counters[C_OVERFLOW] += 1
        _dead(
            dl, dl_val, counters, R_EVENTS, sid, poison[k, 1], start_pos, cnt - w + 1,
            poison[k, 2], nd, nd_val,
        )  # fmt: skip
        cnt = w
    return cnt
