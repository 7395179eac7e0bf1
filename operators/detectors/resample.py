"""``Resample``: per-sensor readings on a fixed time grid, with a gap fill policy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.markers import MAX_WATERMARK
from telepipe.operators.detectors._detector_kernels import (
    NEED_KEY,
    NEED_ROOM,
    _resample_kernel,
    _resample_scan_kernel,
)
from telepipe.operators.detectors.base import (
    DetectorLogic,
    check_choice,
    check_int,
    event_batch,
    out_buffer,
)
from telepipe.operators.runtime._key_kernels import INT64_MAX
from telepipe.operators.runtime._sort_kernels import _stable_argsort_kernel
from telepipe.operators.runtime.stage import StageOperator
from telepipe.schema import TS_NS

RESAMPLED = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("ts", TS_NS, nullable=False),  # the grid point: the bucket's start
        pa.field("value", pa.float64(), nullable=False),
        pa.field("filled", pa.bool_(), nullable=False),  # a gap row, not a bucket of readings
    ]
)

_HOW = ("last", "mean")
_FILL = ("none", "previous", "nan", "linear")


@dataclass(frozen=True)
class Resample(StageOperator):
    """Per-sensor values on the grid ``k * interval_ms``, one row per bucket with readings.

    The bucket ``[g, g + interval)`` is labelled ``g`` (polars ``group_by_dynamic``
    with ``closed="left", label="left"``); its value is the ``last`` reading
    (event-time order: ts, then arrival) or the ``mean``. A bucket is emitted
    once the watermark reaches its end ``g + interval`` (all its readings are
    in). ``fill`` sets the rows of empty grid points *between* two buckets of a
    sensor (as polars ``upsample``): ``none`` (no rows), ``previous`` (the
    earlier bucket's value), ``nan``, or ``linear`` (interpolated between the two
    buckets); they carry ``filled = true`` and are emitted with the bucket that
    ends the gap. A gap of more than ``max_gap`` grid points is not filled.
    Rows are sorted by (end of the bucket that released them, sensor_id, ts),
    so the output does not depend on where the watermarks fall.
    """

    interval_ms: int = 1000
    how: str = "last"
    fill: str = "none"
    max_gap: int = 1000

    def __post_init__(self) -> None:
        check_int("Resample", "interval_ms", self.interval_ms, 1, INT64_MAX // 10**6 // 4)
        check_choice("Resample", "how", self.how, _HOW)
        check_choice("Resample", "fill", self.fill, _FILL)
        check_int("Resample", "max_gap", self.max_gap, 0, 10**7)

    @property
    def output_schema(self) -> pa.Schema:
        return RESAMPLED

    def build(self) -> ResampleLogic:
        return ResampleLogic(self)


class ResampleLogic(DetectorLogic):
    """State ints: ``[bucket, count, prev_bucket, has_prev]``, floats: ``[sum, last, prev]``.

    ``count == 0``: no open bucket.
    """

    def __init__(self, options: Resample) -> None:
        self.interval_ns = options.interval_ms * 1_000_000
        self._args = (options.how == "mean", _FILL.index(options.fill), options.max_gap)
        self._max_rows = 1 + (options.max_gap if options.fill != "none" else 0)
        super().__init__(options, n_ints=4, n_floats=3)
        self._grow_out(4096)

    def _grow_out(self, n: int) -> None:
        self._out = (
            out_buffer(n, np.int32),
            out_buffer(n, np.int64),
            out_buffer(n, np.float64),
            out_buffer(n, np.uint8),
            out_buffer(n, np.int64),
        )

    def _more_room(self, n_out: int) -> None:
        """Twice the room, keeping the first ``n_out`` rows."""
        old = self._out
        self._grow_out(2 * len(old[0]) + self._max_rows)
        for new, prev in zip(self._out, old, strict=True):
            new[:n_out] = prev[:n_out]

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        n = len(ts)
        if len(self._out[0]) < n:
            self._grow_out(n + self._max_rows)
        state = self.state
        pos = n_out = 0
        while pos < n:
            pos, n_out, need = _resample_kernel(
                (sid, ts, val), pos, self.interval_ns, self._args, state.arrays, self._out, n_out
            )
            if need == NEED_KEY:
                state.add(sid[pos:])
            elif need == NEED_ROOM:
                self._more_room(n_out)
        below = INT64_MAX if watermark >= MAX_WATERMARK else watermark // self.interval_ns
        slot = 0
        keys = state.keys.keys
        while True:
            slot, n_out = _resample_scan_kernel(
                slot, below, keys, state.arrays, self._args, self._out, n_out
            )
            if slot >= len(keys):
                break
            self._more_room(n_out)
        if n_out == 0:
            return []
        o_sid, o_k, o_val, o_filled, o_trig = (a[:n_out] for a in self._out)
        # A sensor closes one bucket per trigger, its gap rows first: within (trigger,
        # sensor) the kernel already wrote rows in ts order, so two stable sorts do.
        by = _stable_argsort_kernel(o_sid.astype(np.int64))
        by = by[_stable_argsort_kernel(o_trig[by])]
        return event_batch(
            RESAMPLED,
            [o_sid[by], o_k[by] * self.interval_ns, o_val[by], o_filled[by].view(np.bool_)],
        )
