"""``ThresholdAlarm``: per-sensor alarm on N consecutive readings above a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK
from telepipe.operators._alarm_kernels import (
    _alarm_admit_kernel,
    _alarm_replay_kernel,
    _alarm_waiting_rows_kernel,
)
from telepipe.operators._kernels import INT64_MIN, _stable_argsort_kernel
from telepipe.operators.key_index import KeyIndex, grown_state
from telepipe.operators.stage import StageOperator
from telepipe.operators.tumbling_window import readings_arrays
from telepipe.schema import ALARMS

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ThresholdAlarm(StageOperator):
    """Alarm when a sensor's run of readings ``> threshold`` reaches ``consecutive``.

    Readings are taken in event-time order per sensor (ts, then arrival): they are
    buffered until the watermark passes them. One alarm per run (debounce): a
    reading ``<= threshold`` or NaN ends the run. Emits ``telepipe.schema.ALARMS``
    rows sorted by ``(ts, sensor_id)``. Rows below the watermark at arrival are
    late: counted in ``logic.late_rows`` and kept for ``logic.take_late()``.
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


class _Retained(NamedTuple):
    """An admitted batch that may still hold rows at or above the watermark."""

    sid: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    r_before: np.ndarray  # the row's sensor's run length before it (-1: late or waiting)
    s_before: np.ndarray  # ... and run start
    high: int  # largest on-time ts


class ThresholdAlarmLogic:
    """The ``BatchLogic`` of ``ThresholdAlarm``: runs per ``KeyIndex`` slot, taken eagerly.

    Rows go through the state machine as they arrive and alarms wait for the
    watermark; a sensor whose rows arrive out of ts order is repaired from the
    rows still at or above the watermark (see ``_alarm_kernels``). The admitted
    batches are kept, by reference, until the watermark passes their last row.
    """

    def __init__(self, threshold: float, consecutive: int) -> None:
        self.threshold = threshold
        self.consecutive = consecutive
        self.watermark = INT64_MIN
        self.late_rows = 0
        self.repairs = 0  # sensors repaired after an out-of-order row
        self._keys = KeyIndex()
        self._state = _runs(0)
        self._repair = np.empty(0, np.int32)
        self._retained: list[_Retained] = []
        # ``before`` arrays of dropped batches, reused: fresh ones page-fault on write.
        self._spare: list[tuple[np.ndarray, np.ndarray]] = []
        self._late: list[pa.RecordBatch] = []
        self._pending = _alarm_rows(1024)
        self._n_pend = 0

    def _fit_state(self) -> None:
        run_len, run_start, last_ts = self._state
        if len(run_len) < self._keys.n:
            n = self._keys.n
            self._state = (
                grown_state(run_len, n, 0),
                grown_state(run_start, n, 0),
                grown_state(last_ts, n, INT64_MIN),
            )
            self._repair = np.empty(len(self._state[0]), np.int32)

    def _fit_pending(self, more: int) -> None:
        need = self._n_pend + more
        if len(self._pending[0]) < need:
            # At most one alarm per row. Untouched pages of np.empty are never faulted in.
            grown = _alarm_rows(max(need, 2 * len(self._pending[0])))
            for new, old in zip(grown, self._pending, strict=True):
                new[: self._n_pend] = old[: self._n_pend]
            self._pending = grown

    def take_late(self) -> list[pa.RecordBatch]:
        """The late rows (input schema) since the last call."""
        late, self._late = self._late, []
        return late

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, val = readings_arrays(batch)
        late_before = self.late_rows
        self._admit(sid, ts, val)
        if self.late_rows > late_before:
            late = ts < self.watermark if self.watermark < MAX_WATERMARK else np.ones(len(ts), bool)
            self._late.append(batch.filter(pa.array(late)))
        return []

    def _admit(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray) -> None:
        n = len(ts)
        if n == 0:
            return
        if self.watermark >= MAX_WATERMARK:
            self.late_rows += n
            return
        self._fit_pending(n)
        before = self._before_arrays(n)
        start, n_repair, high, n_late = 0, 0, INT64_MIN, 0
        while True:
            params = (self.threshold, self.consecutive, n_repair, high)
            start, self._n_pend, late, n_repair, high, _ = _alarm_admit_kernel(
                (sid, ts, val), start, self.watermark, params, self._keys.lookup,
                self._state, before, self._pending, self._n_pend, self._repair,
            )  # fmt: skip
            n_late += late
            if start >= n:
                break
            self._keys.slots(sid[start:])
            self._fit_state()
        self.late_rows += n_late
        if n_late < n:
            self._retained.append(_Retained(sid, ts, val, *before, high))
        if n_repair:
            self._repair_sensors(n_repair)

    def _before_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        for i, (r, s) in enumerate(self._spare):
            if len(r) >= n:
                del self._spare[i]
                return r[:n], s[:n]
        return np.empty(n, np.int32), np.empty(n, np.int64)

    def _drop_retained(self, watermark_ns: int) -> None:
        """Forget the batches whose rows are all below the watermark."""
        keep = []
        for b in self._retained:
            if b.high >= watermark_ns:
                keep.append(b)
            elif len(self._spare) < 4:
                self._spare.append((_whole(b.r_before), _whole(b.s_before)))
        self._retained = keep

    def _repair_sensors(self, n_repair: int) -> None:
        """Run the waiting sensors' rows at or above the watermark again, in event order."""
        self.repairs += n_repair
        waiting = self._state[2] == np.iinfo(np.int64).max
        n = self._n_pend
        keep = ~waiting[self._pending[0][:n]]
        kept = int(np.count_nonzero(keep))
        for column in self._pending:
            column[:kept] = column[:n][keep]
        self._n_pend = kept
        rows = self._waiting_rows(only_repair=True)
        slots, ts, val, r_before, s_before, where = rows
        order = np.lexsort((where[1], where[0], ts, slots))
        ordered = [a[order] for a in (slots, ts, val, r_before, s_before)]
        self._fit_pending(len(order))
        self._n_pend = _alarm_replay_kernel(
            *ordered, (self.threshold, self.consecutive), self._state, self._pending, self._n_pend
        )
        # The rows' new states before them, back into their batches.
        r_new, s_new = np.empty_like(r_before), np.empty_like(s_before)
        r_new[order], s_new[order] = ordered[3], ordered[4]
        for j, b in enumerate(self._retained):
            mine = where[0] == j
            b.r_before[where[1][mine]] = r_new[mine]
            b.s_before[where[1][mine]] = s_new[mine]

    def _waiting_rows(self, only_repair: bool) -> tuple[np.ndarray, ...]:
        """Retained rows at or above the watermark in arrival order: ``(slot, ts, value,
        r_before, s_before, (batch, row))``."""
        parts = []
        for j, b in enumerate(self._retained):
            rows = _alarm_waiting_rows_kernel(
                b.sid, b.ts, self.watermark, self._keys.lookup, self._state, only_repair
            )
            parts.append(
                (
                    self._keys.slots(b.sid[rows]),
                    b.ts[rows],
                    b.value[rows],
                    b.r_before[rows],
                    b.s_before[rows],
                    np.full(len(rows), j, np.int64),
                    rows,
                )
            )
        if not parts:
            parts.append(tuple(np.empty(0, t) for t in _ROW_TYPES))
        slots, ts, val, r_before, s_before, batch, row = (
            np.concatenate(c) for c in zip(*parts, strict=True)
        )
        return slots, ts, val, r_before, s_before, np.stack([batch, row])

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        if watermark_ns <= self.watermark:
            return []
        self.watermark = watermark_ns
        self._drop_retained(watermark_ns)
        n = self._n_pend
        p_ts = self._pending[1][:n]
        due = p_ts < watermark_ns if watermark_ns < MAX_WATERMARK else np.ones(n, bool)
        if not due.any():
            return []
        out = [column[:n][due] for column in self._pending]
        kept = n - len(out[0])
        for column in self._pending:
            column[:kept] = column[:n][~due]
        self._n_pend = kept
        if watermark_ns >= MAX_WATERMARK:
            self._drop_retained(MAX_WATERMARK + 1)
        return self._alarms(*out)

    def _alarms(self, slot, ts, start, val) -> list[pa.RecordBatch]:
        a_sid = self._keys.keys[slot]
        # Sorted by (ts, sensor), stable: equal (ts, sensor) keep event order.
        by = _stable_argsort_kernel(a_sid.astype(np.int64))
        by = by[_stable_argsort_kernel(ts[by])]
        n = len(ts)
        columns = [
            pa.array(a_sid[by], pa.int32()),
            _timestamps(ts[by]),
            _timestamps(start[by]),
            pa.array(val[by], pa.float64()),
            pa.array(np.full(n, self.threshold), pa.float64()),
            pa.array(np.full(n, self.consecutive, np.int32), pa.int32()),
        ]
        return [pa.RecordBatch.from_arrays(columns, schema=ALARMS)]

    def snapshot(self) -> dict[str, object]:
        """The runs as of the watermark and the rows at or above it, in arrival order
        (as a buffering implementation would hold them)."""
        n = self._keys.n
        run_len = self._state[0][:n].copy()
        run_start = self._state[1][:n].copy()
        slots, ts, val, r_before, s_before, where = self._waiting_rows(only_repair=False)
        order = np.lexsort((where[1], where[0], ts, slots))
        first = order[np.r_[True, slots[order][1:] != slots[order][:-1]]] if len(order) else order
        run_len[slots[first]] = r_before[first]
        run_start[slots[first]] = s_before[first]
        live = run_len != 0
        return {
            "threshold": self.threshold,
            "consecutive": self.consecutive,
            "sensor_id": self._keys.keys[live],
            "run_len": run_len[live],
            "run_start": run_start[live],
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "buffer_sensor_id": self._keys.keys[slots],
            "buffer_ts": ts,
            "buffer_value": val,
        }

    def restore(self, snapshot: dict[str, object]) -> None:
        if (snapshot["threshold"], snapshot["consecutive"]) != (self.threshold, self.consecutive):
            raise ConfigError(
                f"snapshot threshold/consecutive {snapshot['threshold']}/"
                f"{snapshot['consecutive']} do not match {self.threshold}/{self.consecutive}"
            )
        self.__init__(self.threshold, self.consecutive)  # type: ignore[misc]
        slots = self._keys.slots(np.asarray(snapshot["sensor_id"], np.int32))
        self._fit_state()
        self._state[0][slots] = np.asarray(snapshot["run_len"], np.int64)
        self._state[1][slots] = np.asarray(snapshot["run_start"], np.int64)
        self.watermark = int(snapshot["watermark"])  # type: ignore[call-overload]
        self.late_rows = int(snapshot["late_rows"])  # type: ignore[call-overload]
        self._admit(
            np.asarray(snapshot["buffer_sensor_id"], np.int32),
            np.asarray(snapshot["buffer_ts"], np.int64),
            np.asarray(snapshot["buffer_value"], np.float64),
        )


def _timestamps(ns: np.ndarray) -> pa.Array:
    """A ``timestamp[ns]`` array over int64 ``ns`` without a copy (``pa.array`` casts)."""
    return pa.Array.from_buffers(pa.timestamp("ns"), len(ns), [None, pa.py_buffer(ns)])


def _whole(view: np.ndarray) -> np.ndarray:
    return view if view.base is None else view.base  # type: ignore[return-value]


def _runs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slot ``(run_len, run_start, last_ts)``."""
    return np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, INT64_MIN, np.int64)


_ROW_TYPES = (np.int32, np.int64, np.float64, np.int32, np.int64, np.int64, np.int64)


def _alarm_rows(n: int) -> tuple[np.ndarray, ...]:
    """Alarms waiting for the watermark: ``(slot, ts, run start, value)``."""
    return (np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n))
