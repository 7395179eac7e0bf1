"""numba helpers of event time shared by the operators' kernels."""

from __future__ import annotations

from telepipe.operators.runtime._key_kernels import INT64_MAX, _inline


@_inline
def _deadline(start, span):
    """``start + span`` (``span >= 0``), or INT64_MAX (never passed) when it does not fit."""
    return INT64_MAX if start > INT64_MAX - span else start + span
