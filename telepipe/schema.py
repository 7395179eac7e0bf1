"""Arrow schemas of the data that flows through a pipeline.

A flow carries ``pyarrow.RecordBatch`` es; these are the column layouts that
sources produce and operators emit. Event time is always ``ts`` in ns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

TS_NS = pa.timestamp("ns")

# The event times telepipe takes: [-2**62, 2**62) ns, 1823-12-07 to 2116-01-26 UTC.
# Window ends, session gaps, deadlines and lateness bounds added to (or taken from)
# such a ts stay inside int64; a reading outside it is a dead letter at the source
# and a ``SchemaError`` at an operator.
TS_MIN = -(2**62)
TS_MAX = 2**62


def arrow_column(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """An Arrow array of ``type_`` over a numpy column the caller will not write again.

    A ``timestamp[ns]`` column (int64 ns) is wrapped without a copy: ``pa.array``
    casts it, ~10 us however short (an operator's output batch has two or three).
    """
    if type_ == TS_NS:
        ns = np.ascontiguousarray(values, np.int64)
        return pa.Array.from_buffers(TS_NS, len(ns), [None, pa.py_buffer(ns)])
    return pa.array(values, type_)


READINGS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("ts", TS_NS, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("quality", pa.uint8(), nullable=False),
    ]
)

WINDOWS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("window_start", TS_NS, nullable=False),
        pa.field("window_end", TS_NS, nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("min", pa.float64(), nullable=False),
        pa.field("max", pa.float64(), nullable=False),
    ]
)

ALARMS = pa.schema(
    [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("ts", TS_NS, nullable=False),
        pa.field("start_ts", TS_NS, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("threshold", pa.float64(), nullable=False),
        pa.field("consecutive", pa.int32(), nullable=False),
    ]
)

DEAD_LETTERS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("stream_id", pa.int32(), nullable=False),
        pa.field("session_id", pa.int32(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("received_ns", pa.int64(), nullable=False),
        pa.field("payload", pa.binary(), nullable=False),
    ]
)
