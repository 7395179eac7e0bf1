"""``HysteresisAlarm``: per-sensor alarm state with enter/exit levels and debounce."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.operators.detectors._detector_kernels import _hysteresis_kernel
from telepipe.operators.detectors.base import (
    DetectorLogic,
    check_choice,
    check_int,
    check_number,
    event_batch,
)
from telepipe.operators.runtime.stage import StageOperator
from telepipe.schema import TS_NS

HYSTERESIS_EVENTS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("ts", TS_NS, nullable=False),
        pa.field("state", pa.int8(), nullable=False),  # 1 entered the alarm, 0 left it
        pa.field("value", pa.float64(), nullable=False),
    ]
)

_DIRECTIONS = ("above", "below")


@dataclass(frozen=True)
class HysteresisAlarm(StageOperator):
    """Alarm state per sensor with hysteresis: enter beyond ``enter``, leave beyond ``exit``.

    ``direction: above``: a sensor enters the alarm after ``consecutive`` readings
    in a row ``> enter`` and leaves it after ``exit_consecutive`` readings in a row
    ``< exit`` (``exit <= enter``). ``below`` mirrors both (``< enter`` to enter,
    ``> exit`` to leave, ``exit >= enter``). A reading that is not beyond the level
    of the current state, or NaN, restarts the count. Readings are taken per
    sensor in event-time order (ts, then arrival), released by the watermark.
    Emits ``HYSTERESIS_EVENTS`` (state 1 enter / 0 exit, at the reading that
    completed the count), sorted by ``(ts, sensor_id)``.
    """

    enter: float
    exit: float
    direction: str = "above"
    consecutive: int = 1
    exit_consecutive: int = 1

    def __post_init__(self) -> None:
        enter = check_number("HysteresisAlarm", "enter", self.enter)
        exit_ = check_number("HysteresisAlarm", "exit", self.exit)
        sign = 1 - 2 * check_choice("HysteresisAlarm", "direction", self.direction, _DIRECTIONS)
        if exit_ * sign > enter * sign:
            rel = "<=" if sign > 0 else ">="
            raise ConfigError(
                f"HysteresisAlarm.exit must be {rel} enter for direction {self.direction}, "
                f"got exit={exit_} enter={enter}"
            )
        check_int("HysteresisAlarm", "consecutive", self.consecutive, 1)
        check_int("HysteresisAlarm", "exit_consecutive", self.exit_consecutive, 1)

    @property
    def output_schema(self) -> pa.Schema:
        return HYSTERESIS_EVENTS

    def build(self) -> HysteresisAlarmLogic:
        return HysteresisAlarmLogic(self)


class HysteresisAlarmLogic(DetectorLogic):
    """State ints: ``[active, run]``."""

    def __init__(self, options: HysteresisAlarm) -> None:
        sign = 1.0 if options.direction == "above" else -1.0
        self._args = (
            float(options.enter) * sign,
            float(options.exit) * sign,
            sign,
            options.consecutive,
            options.exit_consecutive,
        )
        super().__init__(options, n_ints=2, n_floats=0)

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        n = len(ts)
        if n == 0:
            return []
        rows, (states,) = self._row_events(
            _hysteresis_kernel, (sid, ts, val), self._args, (np.int8,)
        )
        return event_batch(HYSTERESIS_EVENTS, [sid[rows], ts[rows], states, val[rows]])
