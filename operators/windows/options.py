"""What the sliding and session windows share: aggregate names, validation, output batches.

Both keep one accumulator per (sensor, window) as two rows of numpy arrays (see
``_window_kernels``); this module turns the accumulators a watermark fires into an
output ``RecordBatch`` of the requested aggregates.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, State
from telepipe.operators.runtime._key_kernels import INT64_MAX, INT64_MIN
from telepipe.operators.windows._accumulators import (
    F_FIRST,
    F_LAST,
    F_MAX,
    F_MEAN,
    F_MIN,
    F_STD,
    F_SUM,
    SKETCH_CODE_BITS,
    _finalize_kernel,
    _sketch_quantiles_kernel,
)
from telepipe.schema import TS_NS, arrow_column

#: Aggregate name -> column of the finalize kernel's float output (count is separate).
_FLOAT_COLUMNS = {
    "sum": F_SUM,
    "mean": F_MEAN,
    "min": F_MIN,
    "max": F_MAX,
    "std": F_STD,
    "first": F_FIRST,
    "last": F_LAST,
}
#: Approximate quantiles (DDSketch, relative accuracy ``SKETCH_ALPHA``).
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
AGGREGATES = ("count", *_FLOAT_COLUMNS, *QUANTILES)
DEFAULT_AGGREGATES = ("count", "mean", "min", "max")

MAX_MS = INT64_MAX // 4 // 1_000_000


def positive_ms(owner: str, field: str, value: object, zero_ok: bool = False) -> int:
    """``value`` as a duration in ms, or a one-line ``ConfigError`` naming the field."""
    low = 0 if zero_ok else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_MS:
        what = "an integer >= 0" if zero_ok else "a positive integer"
        raise ConfigError(f"{owner}.{field} must be {what} (ms, <= {MAX_MS}), got {value!r}")
    return value


def aggregates_tuple(owner: str, value: object) -> tuple[str, ...]:
    """The validated aggregate names (a YAML list arrives as a list)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{owner}.aggregates must be a list of names, got {value!r}")
    names = tuple(value)
    if not names:
        raise ConfigError(f"{owner}.aggregates must name at least one aggregate")
    for name in names:
        if name not in AGGREGATES:
            raise ConfigError(
                f"{owner}.aggregates: unknown aggregate {name!r} (known: {', '.join(AGGREGATES)})"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"{owner}.aggregates lists an aggregate twice: {list(names)}")
    return names


def windows_schema(aggregates: tuple[str, ...], revision: bool) -> pa.Schema:
    """sensor_id, window_start, window_end, one column per aggregate[, revision]."""
    fields = [
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("window_start", TS_NS, nullable=False),
        pa.field("window_end", TS_NS, nullable=False),
    ]
    for name in aggregates:
        fields.append(pa.field(name, pa.int64() if name == "count" else pa.float64(), False))
    if revision:
        fields.append(pa.field("revision", pa.int32(), nullable=False))
    return pa.schema(fields)


def wants_quantiles(aggregates: tuple[str, ...]) -> bool:
    return any(name in QUANTILES for name in aggregates)


def clamp64(value: int) -> int:
    """A Python int clamped to the int64 range (thresholds computed from watermarks)."""
    return max(INT64_MIN, min(INT64_MAX, value))


def dead_end(watermark: int, lateness_ns: int) -> int:
    """Windows with ``end <= dead_end`` are past ``end + allowed_lateness`` and dropped."""
    if watermark >= MAX_WATERMARK:
        return INT64_MAX
    return clamp64(watermark - lateness_ns)


def sketch_two(key: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """Sketch entries' second keys from their keys and bucket codes (``_sketch_two``)."""
    return (np.asarray(key, np.int64) << SKETCH_CODE_BITS) + bucket + (1 << (SKETCH_CODE_BITS - 1))


def sketch_split(two: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(key, bucket code)`` of sketch entries' second keys."""
    return two >> SKETCH_CODE_BITS, (two & ((1 << SKETCH_CODE_BITS) - 1)) - (
        1 << (SKETCH_CODE_BITS - 1)
    )


def sketch_state(keys: np.ndarray, sketch: tuple[np.ndarray, ...], what: str) -> State:
    """A sketch table as snapshot columns (``what``: the key's name, pane or session)."""
    s_slot, s_two, s_ints, _ = sketch
    live = s_slot >= 0
    key, bucket = sketch_split(s_two[live])
    return {
        "sketch_count": s_ints[live, 0],
        "sketch_sensor_id": keys[s_slot[live]],
        f"sketch_{what}": key,
        "sketch_bucket": bucket,
    }


def emit_batch(
    schema: pa.Schema,
    aggregates: tuple[str, ...],
    slots: np.ndarray,
    sid: np.ndarray,
    k_key: np.ndarray,
    ia: np.ndarray,
    fa: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    sketch: tuple[np.ndarray, ...] | None,
    key_slot: np.ndarray | None = None,
    panes: tuple[int, int] = (1, 1),
) -> tuple[pa.RecordBatch, np.ndarray]:
    """The output batch of accumulators ``slots`` of sensors ``sid`` (one per slot),
    sorted by window_start, sensor_id.

    ``key_slot``: each accumulator's sensor slot, the key of its sketches; ``panes``:
    how the sketch keys make up the windows (``_sketch_quantiles_kernel``).
    Returns the batch and the slots in output order (the caller marks them fired).
    """
    o_slots, o_sid, o_start, o_end, o_cnt, o_rev, o_f = _finalize_kernel(
        slots, sid, ia, fa, start, end
    )
    quantiles = None
    wanted = [QUANTILES[name] for name in aggregates if name in QUANTILES]
    if wanted and sketch is not None and key_slot is not None:
        quantiles = _sketch_quantiles_kernel(
            sketch,
            key_slot[o_slots],
            k_key[o_slots],
            np.asarray(wanted, np.float64),
            o_f[:, F_MIN].copy(),
            o_f[:, F_MAX].copy(),
            (np.int64(panes[0]), np.int64(panes[1])),
        )
    arrays: list[pa.Array] = [
        pa.array(o_sid, pa.int32()),
        arrow_column(o_start, TS_NS),
        arrow_column(o_end, TS_NS),
    ]
    q = 0
    for name in aggregates:
        if name == "count":
            arrays.append(pa.array(o_cnt, pa.int64()))
        elif name in QUANTILES:
            arrays.append(pa.array(quantiles[:, q], pa.float64()))  # type: ignore[index]
            q += 1
        else:
            arrays.append(pa.array(np.ascontiguousarray(o_f[:, _FLOAT_COLUMNS[name]])))
    if "revision" in schema.names:
        arrays.append(pa.array(o_rev.astype(np.int32), pa.int32()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema), o_slots
