"""Kernels of the event store's recovery (``recovery``): the apply-only fold.

The fold calls the actor type's own ``apply`` (a ``numba.njit`` function passed as
an argument, as ``_actor_kernels._run_kernel`` does), the only thing that changes
state, so what recovery folds is what the stage folded live.
"""

from __future__ import annotations

from numba import njit

IN_ORDER, OUT_OF_ORDER = 0, 1


@njit(cache=True, nogil=True)
def _order_kernel(slot, seq, base, last):
    """Whether each slot's events after its snapshot (``seq > base[slot]``) come as
    ``base + 1, base + 2, ...`` in this order (``last``: scratch, from ``base``)."""
    for i in range(len(slot)):
        s = slot[i]
        q = seq[i]
        if q <= base[s]:
            continue
        if q != last[s] + 1:
            return OUT_OF_ORDER
        last[s] = q
    return IN_ORDER


@njit(nogil=True)  # not cached: numba's cache index of kernels taking a dispatcher breaks
def _fold_kernel(apply, events, slot, base, group, part, parts, state, seq):
    """``apply`` each event after its entity's snapshot, in order, to ``state[slot]``;
    only events of key groups ``group % parts == part`` (one thread's share)."""
    for i in range(len(events)):
        s = slot[i]
        if group[i] % parts != part or events[i].seq <= base[s]:
            continue
        apply(state[s], events[i])
        seq[s] = events[i].seq
