"""``EwmaZScore``: per-sensor anomaly score against an exponentially weighted mean/std."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.operators.detectors._detector_kernels import _ewma_kernel
from telepipe.operators.detectors.base import (
    DetectorLogic,
    check_int,
    check_number,
    event_batch,
)
from telepipe.operators.runtime.stage import StageOperator
from telepipe.schema import TS_NS

EWMA_EVENTS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("ts", TS_NS, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("std", pa.float64(), nullable=False),
        pa.field("z", pa.float64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class EwmaZScore(StageOperator):
    """Alarm when a reading is more than ``threshold`` EW standard deviations off the EW mean.

    Per sensor, in event-time order: the first finite reading sets ``mean``;
    each later finite reading ``v`` updates ``d = v - mean; mean += alpha*d;
    var = (1 - alpha) * (var + alpha*d*d)`` (the ``adjust=False`` recursion of
    polars ``ewm_mean``, with its exponentially weighted variance). Once
    ``warmup`` finite readings came before it, a reading is scored against the
    mean/std *before* it: ``z = (v - mean) / std`` (``±inf`` when std is 0 and v
    differs); it fires when ``|z| > threshold``. Non-finite readings are scored
    (infinity fires, NaN never) but do not update the state. Emits
    ``EWMA_EVENTS`` sorted by ``(ts, sensor_id)``.
    """

    alpha: float = 0.1
    threshold: float = 3.0
    warmup: int = 10

    def __post_init__(self) -> None:
        alpha = check_number("EwmaZScore", "alpha", self.alpha)
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"EwmaZScore.alpha must be in (0, 1], got {self.alpha!r}")
        if check_number("EwmaZScore", "threshold", self.threshold) < 0:
            raise ConfigError(f"EwmaZScore.threshold must be >= 0, got {self.threshold!r}")
        check_int("EwmaZScore", "warmup", self.warmup, 1)

    @property
    def output_schema(self) -> pa.Schema:
        return EWMA_EVENTS

    def build(self) -> EwmaZScoreLogic:
        return EwmaZScoreLogic(self)


class EwmaZScoreLogic(DetectorLogic):
    """State ints: ``[count capped at warmup]``, floats: ``[mean, var]``."""

    def __init__(self, options: EwmaZScore) -> None:
        self._args = (float(options.alpha), float(options.threshold), options.warmup)
        super().__init__(options, n_ints=1, n_floats=2)

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        n = len(ts)
        if n == 0:
            return []
        rows, (mean, std, z) = self._row_events(
            _ewma_kernel, (sid, ts, val), self._args, (np.float64, np.float64, np.float64)
        )
        return event_batch(
            EWMA_EVENTS,
            [
                sid[rows],
                ts[rows],
                val[rows],
                mean,
                std,
                z,
            ],
        )
