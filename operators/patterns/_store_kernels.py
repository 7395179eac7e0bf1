"""numba kernels of ``CepPattern``'s stores: the event node pool and its entries.

The layouts are ``_pattern_kernels``'s (``N_*`` columns of a node, ``S_HEAD`` of a
slot); these kernels read out, collect and rebuild them between the run kernels.
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.patterns._nfa_kernels import N_POS, N_PREV, N_STEP, N_TS, S_HEAD
from telepipe.operators.runtime._key_kernels import _jit


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
def _pattern_gc_kernel(nd, nd_val, n_nodes, cap, n_keys, nslot, blk, block):
    """Compact the node pool in place to the nodes some slot reaches; returns the count."""
    mark = np.zeros(n_nodes, np.uint8)
    for idx in range(n_keys):
        base = blk[idx] * cap
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
        base = blk[idx] * cap
        for q in range(base, base + nslot[idx]):
            h = block[q, S_HEAD]
            if h >= 0:
                block[q, S_HEAD] = new[h]
    return w
