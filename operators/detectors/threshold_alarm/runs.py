"""``AlarmRuns``: what both ways of running ``ThresholdAlarm`` share.

Per-sensor runs in arrays indexed by ``KeyIndex`` slot (``_alarm_kernels``), the
alarms waiting for the watermark, the late side output, and the ALARMS output.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from telepipe.markers import State
from telepipe.operators.detectors.threshold_alarm._kernels import (
    _alarm_admit_kernel,
    _alarm_due_kernel,
)
from telepipe.operators.runtime._key_kernels import INT64_MAX, INT64_MIN
from telepipe.operators.runtime.key_index import KeyIndex, grown_state
from telepipe.operators.runtime.snapshot import as_array, as_int
from telepipe.schema import ALARMS, TS_NS, arrow_column


class AlarmRuns:
    def __init__(self, threshold: float, consecutive: int) -> None:
        self.threshold = threshold
        self.consecutive = consecutive
        self.watermark = INT64_MIN
        self.late_rows = 0
        self.repairs = 0  # sensors repaired after an out-of-order row
        self._keys = KeyIndex()
        self._state = _runs(0)
        self._repair = np.empty(0, np.int32)
        self._late: list[pa.RecordBatch] = []
        self._pending = _alarm_rows(1024)
        self._n_pend = 0
        self._due_from = INT64_MAX  # no waiting alarm has a smaller ts
        self._constants: tuple[pa.Array, pa.Array] | None = None

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

    def _run_rows(
        self, rows: tuple[np.ndarray, np.ndarray, np.ndarray], watermark: int, before
    ) -> tuple[int, int, int]:
        """Rows through the state machine in the order given (``_alarm_admit_kernel``);
        returns ``(late rows, largest on-time ts, sensors to repair)``."""
        n = len(rows[1])
        self._fit_pending(n)
        start, n_repair, high, n_late = 0, 0, INT64_MIN, 0
        while True:
            params = (self.threshold, self.consecutive, n_repair, high, self._due_from)
            start, self._n_pend, late, n_repair, high, self._due_from, _ = _alarm_admit_kernel(
                rows, start, watermark, params, self._keys.lookup, self._state, before,
                self._pending, self._n_pend, self._repair,
            )  # fmt: skip
            n_late += late
            if start >= n:
                return n_late, high, n_repair
            self._keys.slots(rows[0][start:])
            self._fit_state()

    def _emit_due(self, watermark_ns: int) -> list[pa.RecordBatch]:
        """The waiting alarms below the watermark, as one ALARMS batch."""
        if self._n_pend == 0 or (watermark_ns <= self._due_from and watermark_ns < INT64_MAX):
            return []  # (the kernel flushes every alarm at INT64_MAX)
        sid, ts, start, val, self._n_pend, self._due_from = _alarm_due_kernel(
            self._pending, self._n_pend, watermark_ns, self._keys.keys
        )
        n = len(ts)
        if n == 0:
            return []
        columns = [
            pa.array(sid, pa.int32()),
            arrow_column(ts, TS_NS),
            arrow_column(start, TS_NS),
            pa.array(val, pa.float64()),
            *(column.slice(0, n) for column in self._constant_columns(n)),
        ]
        return [pa.RecordBatch.from_arrays(columns, schema=ALARMS)]

    def _constant_columns(self, n: int) -> tuple[pa.Array, pa.Array]:
        """``threshold`` and ``consecutive`` columns of at least ``n`` rows: made once and
        sliced (np.full and pa.array for each batch were a third of the emit's cost)."""
        if self._constants is None or len(self._constants[0]) < n:
            size = max(n, 2 * len(self._constants[0]) if self._constants else 0)
            self._constants = (
                pa.array(np.full(size, self.threshold), pa.float64()),
                pa.array(np.full(size, self.consecutive, np.int32), pa.int32()),
            )
        return self._constants

    def _runs_snapshot(self, run_len: np.ndarray, run_start: np.ndarray) -> State:
        live = run_len != 0
        return {
            "sensor_id": self._keys.keys[: len(run_len)][live],
            "run_len": run_len[live],
            "run_start": run_start[live],
        }

    def _restore_runs(self, snapshot: State) -> None:
        """Start afresh and load the runs of a snapshot."""
        self.__init__(self.threshold, self.consecutive)  # type: ignore[misc]
        sid = as_array(snapshot["sensor_id"], np.int32)
        self._keys.reserve(sid)  # one key per row: sized once, not grown per key
        slots = self._keys.slots(sid)
        self._fit_state()
        self._state[0][slots] = as_array(snapshot["run_len"], np.int64)
        self._state[1][slots] = as_array(snapshot["run_start"], np.int64)
        self.watermark = as_int(snapshot["watermark"])
        self.late_rows = as_int(snapshot["late_rows"])


def _runs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slot ``(run_len, run_start, last_ts)``."""
    return np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, INT64_MIN, np.int64)


def _alarm_rows(n: int) -> tuple[np.ndarray, ...]:
    """Alarms waiting for the watermark: ``(slot, ts, run start, value)``."""
    return (np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n))
