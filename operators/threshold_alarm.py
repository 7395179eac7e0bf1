"""``ThresholdAlarm``: per-sensor alarm on N consecutive readings above a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.operators._kernels import (
    _alarm_kernel,
    _alarm_rebuild_kernel,
)
from telepipe.operators.event_buffer import EventTimeBuffer
from telepipe.operators.stage import StageOperator
from telepipe.operators.tumbling_window import readings_arrays
from telepipe.schema import ALARMS

_NO_Q = np.empty(0, np.uint8)  # the merge's optional fourth column, unused here

_MIN_CAPACITY = 64
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ThresholdAlarm(StageOperator):
    """Alarm when a sensor's run of readings ``> threshold`` reaches ``consecutive``.

    Readings are taken in event-time order per sensor (ts, then arrival): they are
    buffered until the watermark passes them. One alarm per run (debounce): a
    reading ``<= threshold`` or NaN ends the run. Emits ``telepipe.schema.ALARMS``
    rows sorted by ``(ts, sensor_id)``. Rows below the watermark at arrival are
    late: dropped and counted in ``logic.late_rows``.
    """

    threshold: float
    consecutive: int = 3

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or math.isnan(t):
            raise ConfigError(f"ThresholdAlarm.threshold must be a number, got {t!r}")
        n = self.consecutive
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _INT32_MAX:
            raise ConfigError(f"ThresholdAlarm.consecutive must be an integer >= 1, got {n!r}")

    @property
    def output_schema(self) -> pa.Schema:
        return ALARMS

    def build(self) -> ThresholdAlarmLogic:
        return ThresholdAlarmLogic(float(self.threshold), self.consecutive)


class ThresholdAlarmLogic:
    """The ``BatchLogic`` of ``ThresholdAlarm``: a row buffer plus a numba table of open runs.

    The ``EventTimeBuffer`` holds the rows not yet below the watermark and
    releases them in the (ts, arrival) order the state machine needs.
    """

    def __init__(self, threshold: float, consecutive: int) -> None:
        self.threshold = threshold
        self.consecutive = consecutive
        self.buffer = EventTimeBuffer()
        # Alarm outputs of one watermark; alarms are rare, so these stay small.
        self._out_row = np.empty(1024, np.int64)
        self._out_start = np.empty(1024, np.int64)
        self._set_runs(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.int64))

    @property
    def watermark(self) -> int:
        return self.buffer.watermark

    @property
    def late_rows(self) -> int:
        return self.buffer.late_rows

    def _set_runs(self, sid: np.ndarray, run_len: np.ndarray, run_start: np.ndarray) -> None:
        cap = _MIN_CAPACITY
        while cap < 4 * len(sid):
            cap *= 2
        used = np.ones(len(sid), np.uint8)
        self._table, self._n_used = _alarm_rebuild_kernel(used, sid, run_len, run_start, cap)

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, val = readings_arrays(batch)
        self.buffer.admit(sid, ts, val, _NO_Q)
        return []

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        rows = self.buffer.release(watermark_ns)
        if rows is None:
            return []
        sid, ts, val, _ = rows
        return self._process(sid, ts, val)

    def _process(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray) -> list[pa.RecordBatch]:
        """Run the state machine over rows already in (ts, arrival) order."""
        n = len(ts)
        if n == 0:
            return []
        if len(self._out_row) < n:
            # At most one alarm per row. Untouched pages of np.empty are never faulted in.
            self._out_row = np.empty(n, np.int64)
            self._out_start = np.empty(n, np.int64)
        out_row, out_start = self._out_row, self._out_start
        pos = n_out = 0
        while True:
            pos, self._n_used, n_out = _alarm_kernel(
                sid,
                ts,
                val,
                pos,
                self.threshold,
                self.consecutive,
                *self._table,
                self._n_used,
                out_row,
                out_start,
                n_out,
            )
            if pos >= n:
                break
            self._table, self._n_used = _alarm_rebuild_kernel(*self._table, 2 * len(self._table[0]))
        if n_out == 0:
            return []
        rows = out_row[:n_out]
        a_sid, a_ts = sid[rows], ts[rows]
        by = np.lexsort((a_sid, a_ts))  # stable: equal (ts, sensor) keep event order
        columns = [
            pa.array(a_sid[by], pa.int32()),
            pa.array(a_ts[by], pa.timestamp("ns")),
            pa.array(out_start[:n_out][by], pa.timestamp("ns")),
            pa.array(val[rows][by], pa.float64()),
            pa.array(np.full(n_out, self.threshold), pa.float64()),
            pa.array(np.full(n_out, self.consecutive, np.int32), pa.int32()),
        ]
        return [pa.RecordBatch.from_arrays(columns, schema=ALARMS)]

    def snapshot(self) -> dict[str, object]:
        used, k_sid, run_len, run_start = self._table
        live = (used != 0) & (run_len != 0)
        return {
            "threshold": self.threshold,
            "consecutive": self.consecutive,
            "sensor_id": k_sid[live],
            "run_len": run_len[live],
            "run_start": run_start[live],
            **self.buffer.snapshot(),
        }

    def restore(self, snapshot: dict[str, object]) -> None:
        if (snapshot["threshold"], snapshot["consecutive"]) != (self.threshold, self.consecutive):
            raise ConfigError(
                f"snapshot threshold/consecutive {snapshot['threshold']}/"
                f"{snapshot['consecutive']} do not match {self.threshold}/{self.consecutive}"
            )
        self._set_runs(
            np.asarray(snapshot["sensor_id"], np.int32),
            np.asarray(snapshot["run_len"], np.int64),
            np.asarray(snapshot["run_start"], np.int64),
        )
        self.buffer.restore(snapshot)
