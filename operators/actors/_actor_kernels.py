"""Kernels of ``ActorStage``: the per-row driver of a vectorised actor, the order check,
activation and passivation between the active and the passive store.

The driver calls the actor type's own ``step`` and ``apply`` (``numba.njit``
functions passed as arguments: numba compiles one driver per actor type, inlining
both). Measured on the 2-core box: step + apply of the trivial counter over 10 M
rows of 100k entities in random order runs ~10 ns a row, most of it the cache miss
on the entity's state record; copying an event record per row costs ~1 ns.

The store (``store.EntityStore``) is a tuple of arrays (``Store``): per entity
number (KeyIndex slot) ``act`` (active slot or -1), ``pas`` (passive row or -1),
``status`` (0 running, 1 stopped), ``seq`` (events applied); per active slot
``state`` (records), ``owner`` (entity or -1), ``used`` (ts of its last row);
``free`` (a stack of free active slots); ``pstate``/``powner`` (passive rows, packed:
a reactivation moves the last row into the hole) and ``cnt`` (``N_FREE``,
``N_PASSIVE``, ``ACTIVATIONS``, ``REACTIVATIONS``, ``STOPPED_ROWS``).
"""

from __future__ import annotations

from numba import njit

N_FREE, N_PASSIVE, ACTIVATIONS, REACTIVATIONS, STOPPED_ROWS = range(5)
DONE, NEED_ACTIVE, FAILED = 0, 1, 2
STOPPED = 1


@njit(cache=True)
def _in_order_kernel(rows, last_ts, last_kind):
    """True when each entity's rows come in (ts, kind) order (``last_*``: scratch per
    entity number, left at each entity's largest)."""
    ok = True
    for i in range(len(rows)):
        e = rows[i].entity
        ts = rows[i].ts
        kind = rows[i].kind
        if ts < last_ts[e] or (ts == last_ts[e] and kind < last_kind[e]):
            ok = False
        else:
            last_ts[e] = ts
            last_kind[e] = kind
    return ok


@njit(cache=True)
def _activate(e, st, initial):
    """Activate entity ``e`` into a free slot (the caller checked there is one)."""
    act, pas, _status, _seq, state, owner, _used, free, pstate, powner, cnt = st
    cnt[N_FREE] -= 1
    a = free[cnt[N_FREE]]
    p = pas[e]
    if p >= 0:
        state[a] = pstate[p]
        last = cnt[N_PASSIVE] - 1
        if p != last:
            pstate[p] = pstate[last]
            powner[p] = powner[last]
            pas[powner[p]] = p
        cnt[N_PASSIVE] = last
        pas[e] = -1
        cnt[REACTIVATIONS] += 1
    else:
        state[a] = initial[0]
        cnt[ACTIVATIONS] += 1
    act[e] = a
    owner[a] = e
    return a


@njit  # not cached: a cache index of kernels taking dispatchers breaks ("underlying object has vanished")
def _run_kernel(step, apply, p, rows, start, st, initial, zero, out, n_out, keep, out_state):
    """Rows ``start..`` through ``step`` and ``apply`` (see ``spec``); each kept event
    (``keep[code]``) is written to ``out`` (and the state after it to ``out_state`` if
    that has rows). Returns ``(pos, n_out, status, code)``: ``DONE``; ``NEED_ACTIVE``
    at ``pos`` (no free slot); ``FAILED`` at ``pos`` with the step's error ``code``."""
    act, _pas, status, seq, state, _owner, used, _free, _pstate, _powner, cnt = st
    with_state = len(out_state) > 0
    for i in range(start, len(rows)):
        row = rows[i]
        e = row.entity
        if status[e] == STOPPED:
            cnt[STOPPED_ROWS] += 1
            continue
        a = act[e]
        if a < 0:
            if cnt[N_FREE] == 0:
                return i, n_out, NEED_ACTIVE, 0
            a = _activate(e, st, initial)
        used[a] = row.ts
        out[n_out] = zero[0]
        ev = out[n_out]
        code = step(state[a], row, p, ev)
        if code == 0:
            continue
        if code < 0 or code >= len(keep):
            return i, n_out, FAILED, code
        ev.entity = e
        ev.type = code
        seq[e] += 1
        ev.seq = seq[e]
        ev.ts = row.ts
        apply(state[a], ev)
        if keep[code]:
            if with_state:
                out_state[n_out] = state[a]
            n_out += 1
    return len(rows), n_out, DONE, 0


@njit(cache=True)
def _passivate_kernel(slots, st):
    """Move the entities in active ``slots`` to the passive store (room checked)."""
    act, pas, _status, _seq, state, owner, _used, free, pstate, powner, cnt = st
    for a in slots:
        e = owner[a]
        if e < 0:
            continue
        q = cnt[N_PASSIVE]
        pstate[q] = state[a]
        powner[q] = e
        pas[e] = q
        cnt[N_PASSIVE] = q + 1
        act[e] = -1
        owner[a] = -1
        free[cnt[N_FREE]] = a
        cnt[N_FREE] += 1


@njit(cache=True)
def _activate_kernel(entities, st, initial, slots):
    """Activate each entity of ``entities`` not active (room checked); its slot to ``slots``."""
    act = st[0]
    for i in range(len(entities)):
        e = entities[i]
        a = act[e]
        if a < 0:
            a = _activate(e, st, initial)
        slots[i] = a
