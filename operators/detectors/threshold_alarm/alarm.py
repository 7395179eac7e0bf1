"""``ThresholdAlarm``: per-sensor alarm on N consecutive readings above a threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import State, as_watermark_ns
from telepipe.operators.detectors.base import check_number
from telepipe.operators.detectors.threshold_alarm.eager import EagerAlarmLogic
from telepipe.operators.detectors.threshold_alarm.runs import AlarmRuns
from telepipe.operators.runtime._key_kernels import INT64_MIN
from telepipe.operators.runtime.readings import readings_arrays
from telepipe.operators.runtime.sensor_order_buffer import SensorOrderBuffer
from telepipe.operators.runtime.stage import StageOperator
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
        check_number("ThresholdAlarm", "threshold", self.threshold)
        n = self.consecutive
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _INT32_MAX:
            raise ConfigError(f"ThresholdAlarm.consecutive must be an integer >= 1, got {n!r}")

    @property
    def output_schema(self) -> pa.Schema:
        return ALARMS

    def build(self) -> ThresholdAlarmLogic:
        return ThresholdAlarmLogic(self)


class BufferedAlarmLogic(AlarmRuns):
    """``ThresholdAlarm`` over a ``SensorOrderBuffer``: rows wait for the watermark and
    are released in each sensor's event order (sorted when they arrived out of it)."""

    def __init__(self, threshold: float, consecutive: int) -> None:
        super().__init__(threshold, consecutive)
        self.buffer = SensorOrderBuffer()
        self._before = (np.empty(0, np.int32), np.empty(0, np.int64))

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        sid, ts, val = readings_arrays(batch)
        buffer = self.buffer
        late = buffer.admit(sid, ts, val, _NO_QUALITY)
        self.late_rows = buffer.late_rows
        if late is not None:
            self._late.append(batch.filter(pa.array(late)))
        return []

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        rows = self.buffer.release(watermark_ns)
        if rows is None:
            return []
        self.watermark = watermark_ns
        sid, ts, val, _ = rows
        if len(self._before[0]) < len(ts):
            self._before = (np.empty(len(ts), np.int32), np.empty(len(ts), np.int64))
        before = (self._before[0][: len(ts)], self._before[1][: len(ts)])
        # In each sensor's event order: no row is behind its sensor's last one.
        _, _, n_repair = self._run_rows((sid, ts, val), INT64_MIN, before)
        assert n_repair == 0, "released rows are in each sensor's event order"
        return self._emit_due(watermark_ns)

    def snapshot(self) -> State:
        n = self._keys.n
        return {
            **self._runs_snapshot(self._state[0][:n].copy(), self._state[1][:n].copy()),
            **self.buffer.snapshot(),
        }

    def restore(self, snapshot: State) -> None:
        self._restore_runs(snapshot)
        self.buffer.restore(snapshot)


class ThresholdAlarmLogic:
    """The ``BatchLogic`` of ``ThresholdAlarm``: eager while sensors arrive in order,
    buffered while they do not.

    ``EagerAlarmLogic`` costs one pass per row as long as each sensor's rows arrive
    in ts order; each sensor that does not is repaired, which costs more than
    buffering when most do (a publisher that jitters every reading). So a batch
    whose repairs ran more than ``_TO_BUFFERED`` of its rows again moves the state
    to a ``BufferedAlarmLogic``, and ``_TO_EAGER`` releases in a row that needed
    no sort move it back. Both compute the exact event-time result and emit each
    alarm at the first watermark above it, so the move changes no output; it goes
    through the snapshot, which both read and write.
    """

    snapshot_version: ClassVar[int] = 1
    _TO_BUFFERED = 0.05
    _TO_EAGER = 16

    def __init__(self, options: ThresholdAlarm) -> None:
        self.options = options
        self.threshold = float(options.threshold)
        self.consecutive = options.consecutive
        self.logic: EagerAlarmLogic | BufferedAlarmLogic = EagerAlarmLogic(
            self.threshold, self.consecutive
        )
        self.switches = 0
        self._repairs = 0  # of the logics before the current one
        self._in_order = 0
        self._sorted = 0

    @property
    def watermark(self) -> int:
        return self.logic.watermark

    @property
    def late_rows(self) -> int:
        return self.logic.late_rows

    @property
    def repairs(self) -> int:
        return self._repairs + self.logic.repairs

    @property
    def eager(self) -> bool:
        return isinstance(self.logic, EagerAlarmLogic)

    def take_late(self) -> list[pa.RecordBatch]:
        return self.logic.take_late()

    def on_batch(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        out = self.logic.on_batch(batch)
        logic = self.logic
        if isinstance(logic, EagerAlarmLogic) and (
            logic.last_rerun_rows > self._TO_BUFFERED * max(batch.num_rows, 1)
        ):
            self._move_to(BufferedAlarmLogic)
        return out

    def on_watermark(self, watermark_ns: int) -> list[pa.RecordBatch]:
        watermark_ns = as_watermark_ns(watermark_ns)
        out = self.logic.on_watermark(watermark_ns)
        logic = self.logic
        if isinstance(logic, BufferedAlarmLogic):
            sorted_now = logic.buffer.sorted_releases
            self._in_order = self._in_order + 1 if sorted_now == self._sorted else 0
            self._sorted = sorted_now
            if self._in_order >= self._TO_EAGER:
                self._move_to(EagerAlarmLogic)
        return out

    def _move_to(self, kind: type[EagerAlarmLogic] | type[BufferedAlarmLogic]) -> None:
        old = self.logic
        new = kind(self.threshold, self.consecutive)
        new.restore(old.snapshot())
        new._late = old.take_late()
        self._repairs += old.repairs
        self.logic = new
        self.switches += 1
        self._in_order = self._sorted = 0

    def snapshot(self) -> State:
        return self.logic.snapshot()

    def restore(self, snapshot: State) -> None:
        self.logic.restore(snapshot)


_NO_QUALITY = np.empty(0, np.uint8)
