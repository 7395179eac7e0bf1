"""A stable argsort for int64 event times, shared by the operators' kernels."""

from __future__ import annotations

import numpy as np

from telepipe.operators.runtime._key_kernels import _jit

_RADIX_MAX_BITS = 12
_RADIX_MAX_PASSES = 3


@_jit
def _stable_argsort_kernel(keys):
    """``np.argsort(keys, kind="stable")`` for int64, fast on a narrow range of keys.

    Event times of one batch span a few ms (~2**23 ns), so an LSD radix sort of
    ``key - min`` in two or three passes of <= 12 bits is linear and stable;
    sorted input returns at once, and a range wider than 2**36 falls back to a
    merge sort.
    """
    n = keys.shape[0]
    out = np.empty(n, np.int64)
    if n == 0:
        return out
    lo = keys[0]
    hi = keys[0]
    ordered = True
    for i in range(1, n):
        k = keys[i]
        if k < keys[i - 1]:
            ordered = False
        if k < lo:
            lo = k
        elif k > hi:
            hi = k
    if ordered:
        for i in range(n):
            out[i] = i
        return out
    span = np.uint64(hi) - np.uint64(lo)  # wraps correctly for any int64 pair
    bits = 0
    while span > 0:
        span >>= np.uint64(1)
        bits += 1
    passes = (bits + _RADIX_MAX_BITS - 1) // _RADIX_MAX_BITS
    if passes > _RADIX_MAX_PASSES:
        return np.argsort(keys, kind="mergesort")
    width = (bits + passes - 1) // passes
    radix = 1 << width
    mask = np.uint64(radix - 1)
    ulo = np.uint64(lo)
    for i in range(n):
        out[i] = i
    tmp = np.empty(n, np.int64)
    count = np.empty(radix + 1, np.int64)
    for p in range(passes):
        shift = np.uint64(p * width)
        count[:] = 0
        for i in range(n):
            count[(((np.uint64(keys[i]) - ulo) >> shift) & mask) + 1] += 1
        for d in range(radix):
            count[d + 1] += count[d]
        for i in range(n):
            j = out[i]
            d = ((np.uint64(keys[j]) - ulo) >> shift) & mask
            tmp[count[d]] = j
            count[d] += 1
        out, tmp = tmp, out
    return out
