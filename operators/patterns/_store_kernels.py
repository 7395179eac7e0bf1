"""numba kernels of ``CepPattern``'s stores: the event node pool and its entries.

The layouts are ``_slot_kernels``'s (``N_*`` columns of a node, ``S_HEAD`` of a
slot); these kernels read out, collect and rebuild them between the run kernels.
"""

from __future__ import annotations

import numpy as np

from telepipe.operators.patterns._slot_kernels import N_PREV, S_HEAD
from telepipe.operators.runtime._key_kernels import _jit


@_jit
def _pattern_chain_nodes_kernel(heads, lens, nd):
    """The nodes of chains ``heads`` (first to last event), flat, and their offsets."""
    m = heads.shape[0]
    offsets = np.zeros(m + 1, np.int64)
    for r in range(m):
        offsets[r + 1] = offsets[r] + lens[r]
    nodes = np.empty(offsets[m], np.int64)
    for r in range(m):
        h = heads[r]
        for j in range(offsets[r + 1] - 1, offsets[r] - 1, -1):
            nodes[j] = h
            h = nd[h, N_PREV]
    return offsets, nodes


@_jit
def _pattern_gc_kernel(nd, nd_val, nd_agg, n_nodes, n_keys, nslot, blk, block):
    """Compact the node pool in place to the nodes some slot reaches; returns the count."""
    mark = np.zeros(n_nodes, np.uint8)
    for idx in range(n_keys):
        base = blk[idx]
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
        nd_agg[w, :] = nd_agg[j, :]
        w += 1
    for idx in range(n_keys):
        base = blk[idx]
        for q in range(base, base + nslot[idx]):
            h = block[q, S_HEAD]
            if h >= 0:
                block[q, S_HEAD] = new[h]
    return w
