"""``RateOfChange``: per-sensor alarm when a reading changes faster than a limit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.operators.detectors._detector_kernels import _rate_kernel
from telepipe.operators.detectors.base import (
    DetectorLogic,
    check_choice,
    check_number,
    event_batch,
)
from telepipe.operators.runtime.stage import StageOperator
from telepipe.schema import TS_NS

RATE_EVENTS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("ts", TS_NS, nullable=False),
        pa.field("prev_ts", TS_NS, nullable=False),
        pa.field("rate", pa.float64(), nullable=False),  # value units per second
        pa.field("value", pa.float64(), nullable=False),
    ]
)

_DIRECTIONS = ("both", "rise", "fall")


@dataclass(frozen=True)
class RateOfChange(StageOperator):
    """Alarm when ``(value - prev_value) / (ts - prev_ts)`` (per second) exceeds ``max_rate``.

    ``prev`` is the sensor's previous non-NaN reading in event-time order (ts,
    then arrival); NaN readings are skipped. ``direction``: ``both`` fires on
    ``|rate| > max_rate``, ``rise`` on ``rate > max_rate``, ``fall`` on
    ``-rate > max_rate``. A reading at the same ts as the previous one has no
    rate; it replaces the previous one. Every qualifying pair fires (no debounce;
    chain a ``HysteresisAlarm`` on ``rate`` for that). Emits ``RATE_EVENTS``
    sorted by ``(ts, sensor_id)``.
    """

    max_rate: float
    direction: str = "both"

    def __post_init__(self) -> None:
        rate = check_number("RateOfChange", "max_rate", self.max_rate)
        if rate < 0:
            raise ConfigError(f"RateOfChange.max_rate must be >= 0, got {self.max_rate!r}")
        check_choice("RateOfChange", "direction", self.direction, _DIRECTIONS)

    @property
    def output_schema(self) -> pa.Schema:
        return RATE_EVENTS

    def build(self) -> RateOfChangeLogic:
        return RateOfChangeLogic(self)


class RateOfChangeLogic(DetectorLogic):
    """State ints: ``[prev_ts]``, floats: ``[prev_value]``."""

    def __init__(self, options: RateOfChange) -> None:
        self._args = (float(options.max_rate), _DIRECTIONS.index(options.direction))
        super().__init__(options, n_ints=1, n_floats=1)

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        n = len(ts)
        if n == 0:
            return []
        rows, (rate, prev) = self._row_events(
            _rate_kernel, (sid, ts, val), self._args, (np.float64, np.int64)
        )
        return event_batch(
            RATE_EVENTS,
            [sid[rows], ts[rows], prev, rate, val[rows]],
        )
