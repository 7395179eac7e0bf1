"""``Flatline``: per-sensor alarm on a stuck sensor (values that stop moving)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.operators.detectors._detector_kernels import _flatline_kernel
from telepipe.operators.detectors.base import (
    DetectorLogic,
    check_int,
    check_number,
    event_batch,
)
from telepipe.operators.runtime._key_kernels import INT64_MAX
from telepipe.operators.runtime.stage import StageOperator
from telepipe.schema import TS_NS

FLATLINE_EVENTS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("start_ts", TS_NS, nullable=False),
        pa.field("ts", TS_NS, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("readings", pa.int64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Flatline(StageOperator):
    """Alarm when a sensor's values stay within a band of width ``tolerance``.

    A run is the longest stretch of a sensor's readings (event-time order) whose
    values all lie in a band no wider than ``tolerance`` (0: identical values;
    repeated infinities count). A reading that would widen the band past
    ``tolerance`` starts a new run with itself; NaN ends the run. A run fires once,
    at the first reading where it holds ``>= min_readings`` readings and spans
    ``>= min_duration_ms`` (``ts - start_ts``). Emits ``FLATLINE_EVENTS``
    (``value``: the firing reading, ``readings``: the run's length so far),
    sorted by ``(ts, sensor_id)``.
    """

    min_readings: int = 10
    min_duration_ms: int = 0
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        check_int("Flatline", "min_readings", self.min_readings, 2)
        check_int("Flatline", "min_duration_ms", self.min_duration_ms, 0, INT64_MAX // 10**6)
        if check_number("Flatline", "tolerance", self.tolerance) < 0:
            raise ConfigError(f"Flatline.tolerance must be >= 0, got {self.tolerance!r}")

    @property
    def output_schema(self) -> pa.Schema:
        return FLATLINE_EVENTS

    def build(self) -> FlatlineLogic:
        return FlatlineLogic(self)


class FlatlineLogic(DetectorLogic):
    """State ints: ``[start_ts, count, fired]``, floats: ``[min, max]``."""

    def __init__(self, options: Flatline) -> None:
        self._args = (
            options.min_readings,
            options.min_duration_ms * 1_000_000,
            float(options.tolerance),
        )
        super().__init__(options, n_ints=3, n_floats=2)

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        n = len(ts)
        if n == 0:
            return []
        rows, (start, count) = self._row_events(
            _flatline_kernel, (sid, ts, val), self._args, (np.int64, np.int64)
        )
        return event_batch(
            FLATLINE_EVENTS,
            [sid[rows], start, ts[rows], val[rows], count],
        )
