"""``EagerAlarmLogic``: ``ThresholdAlarm`` run as rows arrive, repaired when a sensor's
rows arrive out of ts order (see ``_alarm_kernels``)."""

from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from telepipe.markers import MAX_WATERMARK, State
from telepipe.operators.detectors.threshold_alarm._kernels import _alarm_waiting_rows_kernel
from telepipe.operators.detectors.threshold_alarm.runs import AlarmRuns
from telepipe.operators.runtime._key_kernels import INT64_MIN
from telepipe.operators.runtime.readings import readings_arrays
from telepipe.operators.runtime.snapshot import as_array


class _Retained(NamedTuple):
    """An admitted batch that may still hold rows at or above the watermark."""

    sid: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    r_before: np.ndarray  # the row's sensor's run length before it (-1: late or waiting)
    s_before: np.ndarray  # ... and run start
    high: int  # largest on-time ts


class EagerAlarmLogic(AlarmRuns):
    """``ThresholdAlarm`` taken eagerly: runs per ``KeyIndex`` slot.

    Rows go through the state machine as they arrive and alarms wait for the
    watermark; a sensor whose rows arrive out of ts order is repaired from the
    rows still at or above the watermark (see ``_alarm_kernels``). The admitted
    batches are kept, by reference, until the watermark passes their last row.
    """

    def __init__(self, threshold: float, consecutive: int) -> None:
        super().__init__(threshold, consecutive)
        # In arrival order (dicts keep it), and a heap of (high, key) to drop them by:
        # a scan of them all at each watermark cost ~60 ns a batch held.
        self._retained: dict[int, _Retained] = {}
        self._by_high: list[tuple[int, int]] = []
        self._n_admitted = 0
        # ``before`` arrays of dropped batches, reused: fresh ones page-fault on write.
        self._spare: list[tuple[np.ndarray, np.ndarray]] = []
        self.last_rerun_rows = 0  # rows the last batch's repairs ran again

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
        self.last_rerun_rows = 0
        if n == 0:
            return
        if self.watermark >= MAX_WATERMARK:
            self.late_rows += n
            return
        before = self._before_arrays(n)
        n_late, high, n_repair = self._run_rows((sid, ts, val), self.watermark, before)
        self.late_rows += n_late
        if n_late < n:
            self._n_admitted += 1
            self._retained[self._n_admitted] = _Retained(sid, ts, val, *before, high)
            heapq.heappush(self._by_high, (high, self._n_admitted))
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
        by_high = self._by_high
        while by_high and by_high[0][0] < watermark_ns:
            b = self._retained.pop(heapq.heappop(by_high)[1])
            if len(self._spare) < 4:
                self._spare.append((_whole(b.r_before), _whole(b.s_before)))

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
        self.last_rerun_rows += len(ts)
        order = np.lexsort((where[1], where[0], ts, slots))
        o_slot, o_ts, o_val, o_r, o_s = (a[order] for a in (slots, ts, val, r_before, s_before))
        # Each sensor starts again from its run at the watermark; its sorted rows go
        # through the kernel arriving rows go through (in order now: nothing to repair).
        first, r0, s0 = _runs_at_watermark(o_slot, o_r, o_s)
        self._state[0][first], self._state[1][first] = r0, s0
        self._state[2][o_slot] = INT64_MIN
        rows = (self._keys.keys[o_slot], o_ts, o_val)
        _, _, again = self._run_rows(rows, INT64_MIN, (o_r, o_s))
        assert again == 0, "rows sorted by (sensor, ts, arrival) are in order"
        ordered = (o_slot, o_ts, o_val, o_r, o_s)
        # The rows' new states before them, back into their batches.
        r_new, s_new = np.empty_like(r_before), np.empty_like(s_before)
        r_new[order], s_new[order] = ordered[3], ordered[4]
        for j, b in enumerate(self._retained.values()):
            mine = where[0] == j
            b.r_before[where[1][mine]] = r_new[mine]
            b.s_before[where[1][mine]] = s_new[mine]

    def _waiting_rows(self, only_repair: bool) -> tuple[np.ndarray, ...]:
        """Retained rows at or above the watermark in arrival order: ``(slot, ts, value,
        r_before, s_before, (batch, row))``."""
        parts: list[tuple[np.ndarray, ...]] = []
        for j, b in enumerate(self._retained.values()):
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
        out = self._emit_due(watermark_ns)
        if watermark_ns >= MAX_WATERMARK:
            self._drop_retained(MAX_WATERMARK + 1)
        return out

    def snapshot(self) -> State:
        """The runs as of the watermark and the rows at or above it, in arrival order
        (as a buffering implementation would hold them)."""
        n = self._keys.n
        run_len = self._state[0][:n].copy()
        run_start = self._state[1][:n].copy()
        slots, ts, val, r_before, s_before, where = self._waiting_rows(only_repair=False)
        order = np.lexsort((where[1], where[0], ts, slots))
        first, r0, s0 = _runs_at_watermark(slots[order], r_before[order], s_before[order])
        run_len[first], run_start[first] = r0, s0
        return {
            **self._runs_snapshot(run_len, run_start),
            "watermark": self.watermark,
            "late_rows": self.late_rows,
            "buffer_sensor_id": self._keys.keys[slots],
            "buffer_ts": ts,
            "buffer_value": val,
        }

    def restore(self, snapshot: State) -> None:
        self._restore_runs(snapshot)
        self._admit(
            as_array(snapshot["buffer_sensor_id"], np.int32),
            as_array(snapshot["buffer_ts"], np.int64),
            as_array(snapshot["buffer_value"], np.float64),
        )


def _runs_at_watermark(
    slots: np.ndarray, r_before: np.ndarray, s_before: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(slots, run_len, run_start)``: each sensor's run at the watermark, the one
    recorded before its first taken row (``r_before >= 0``) of rows sorted by
    (slot, ts, arrival); sensors with none keep their current run."""
    taken = r_before >= 0
    t_slot = slots[taken]
    first = np.flatnonzero(np.r_[True, t_slot[1:] != t_slot[:-1]]) if len(t_slot) else t_slot
    return t_slot[first], r_before[taken][first], s_before[taken][first]


def _whole(view: np.ndarray) -> np.ndarray:
    return view if view.base is None else view.base


_ROW_TYPES = (np.int32, np.int64, np.float64, np.int32, np.int64, np.int64, np.int64)
