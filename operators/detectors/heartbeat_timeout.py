"""``HeartbeatTimeout``: per-sensor alarm when a seen sensor falls silent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from telepipe.operators.detectors._detector_kernels import _heartbeat_kernel, _heartbeat_scan_kernel
from telepipe.operators.detectors.base import DetectorLogic, check_int, event_batch, out_buffer
from telepipe.operators.runtime._key_kernels import INT64_MAX
from telepipe.operators.runtime.stage import StageOperator
from telepipe.schema import TS_NS

HEARTBEAT_EVENTS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("last_ts", TS_NS, nullable=False),
        # last_ts + timeout: the event time the silence outgrew the timeout.
        pa.field("ts", TS_NS, nullable=False),
    ]
)


@dataclass(frozen=True)
class HeartbeatTimeout(StageOperator):
    """Alarm when a seen sensor sends nothing for more than ``timeout_ms`` of event time.

    A silence starts at a sensor's reading ``last_ts`` and fires when the
    watermark passes ``last_ts + timeout`` with no reading of that sensor in
    ``(last_ts, last_ts + timeout]``: on watermark progress, not on data. It
    fires once; the sensor's next reading re-arms it. The row is released by the
    first watermark above its ``ts = last_ts + timeout``, so the output does not
    depend on where the watermarks fall (the end of the stream, the maximal
    watermark, fires every open silence). Only sensors seen at least once are
    watched. Emits ``HEARTBEAT_EVENTS`` sorted by ``(ts, sensor_id)``.
    """

    timeout_ms: int = 5000

    def __post_init__(self) -> None:
        check_int("HeartbeatTimeout", "timeout_ms", self.timeout_ms, 1, INT64_MAX // 10**6)

    @property
    def output_schema(self) -> pa.Schema:
        return HEARTBEAT_EVENTS

    def build(self) -> HeartbeatTimeoutLogic:
        return HeartbeatTimeoutLogic(self)


class HeartbeatTimeoutLogic(DetectorLogic):
    """State ints: ``[last_ts]`` of each armed sensor; a fired sensor's state is taken."""

    def __init__(self, options: HeartbeatTimeout) -> None:
        self.timeout_ns = options.timeout_ms * 1_000_000
        super().__init__(options, n_ints=1, n_floats=0)

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        n = len(ts)
        timeout = self.timeout_ns
        out_sid, out_last = out_buffer(n, np.int32), out_buffer(n, np.int64)
        state, out = self.state, (out_sid, out_last)
        n_rows = state.run(
            lambda pos, n_out: _heartbeat_kernel(
                (sid, ts, val), pos, timeout, state.arrays, out, n_out
            ),
            sid,
        )
        keys = state.keys.keys
        scan_sid, scan_last = np.empty(len(keys), np.int32), np.empty(len(keys), np.int64)
        n_scan = _heartbeat_scan_kernel(
            keys, state.present, state.ints, watermark, timeout, scan_sid, scan_last
        )
        if n_rows + n_scan == 0:
            return []
        e_sid = np.concatenate((out_sid[:n_rows], scan_sid[:n_scan]))
        e_last = np.concatenate((out_last[:n_rows], scan_last[:n_scan]))
        e_ts = e_last + timeout  # fired deadlines fit: they are below the watermark
        by = np.lexsort((e_sid, e_ts))
        return event_batch(HEARTBEAT_EVENTS, [e_sid[by], e_last[by], e_ts[by]])
