"""Naive references the numba operators are checked against: polars and pure Python."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pyarrow as pa
from hypothesis import strategies as st

from telepipe.markers import MAX_WATERMARK
from telepipe.schema import READINGS


def windows_reference(
    sensor_id: list[int], ts: list[int], value: list[float], size_ns: int
) -> pl.DataFrame:
    """Tumbling windows by a polars group_by on ``(sensor_id, floor(ts / size))``.

    Columns: sensor_id, window, window_start, window_end, count, mean, min, max,
    abs_mean (for the mean's tolerance), sorted by (window_start, sensor_id).
    """
    df = pl.DataFrame(
        {"sensor_id": sensor_id, "ts": ts, "value": value},
        schema={"sensor_id": pl.Int32, "ts": pl.Int64, "value": pl.Float64},
    )
    return (
        df.with_columns(window=pl.col("ts") // size_ns)
        .group_by("sensor_id", "window")
        .agg(
            count=pl.len().cast(pl.Int64),
            mean=pl.col("value").mean(),
            min=pl.col("value").min(),
            max=pl.col("value").max(),
            abs_mean=pl.col("value").abs().mean(),
        )
        .with_columns(
            window_start=pl.col("window") * size_ns,
            window_end=(pl.col("window") + 1) * size_ns,
        )
        .sort("window_start", "sensor_id")
    )


def alarms_reference(
    sensor_id: list[int], ts: list[int], value: list[float], threshold: float, consecutive: int
) -> list[tuple[int, int, int, float]]:
    """Alarms ``(sensor_id, ts, start_ts, value)`` sorted by (ts, sensor_id, event order).

    Each sensor's readings are taken in (ts, arrival) order; a run of readings
    ``> threshold`` alarms once when it reaches ``consecutive`` readings.
    """
    order = sorted(range(len(ts)), key=lambda i: ts[i])  # stable: ties in arrival order
    run_len: dict[int, int] = {}
    run_start: dict[int, int] = {}
    alarms = []
    for i in order:
        s = sensor_id[i]
        if value[i] > threshold:
            n = run_len.get(s, 0) + 1
            run_len[s] = n
            if n == 1:
                run_start[s] = ts[i]
            if n == consecutive:
                alarms.append((s, ts[i], run_start[s], value[i]))
        else:
            run_len[s] = 0
    alarms.sort(key=lambda a: (a[1], a[0]))  # stable
    return alarms


# ------------------------------------------------------------ test support


def readings_batch(sensor_id, ts, value) -> pa.RecordBatch:
    """A ``READINGS`` batch from plain sequences (quality 0)."""
    n = len(ts)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.asarray(sensor_id, np.int32)),
            pa.array(np.asarray(ts, np.int64), pa.timestamp("ns")),
            pa.array(np.asarray(value, np.float64)),
            pa.array(np.zeros(n, np.uint8)),
        ],
        schema=READINGS,
    )


def columns(batches: list[pa.RecordBatch]) -> dict[str, np.ndarray]:
    """Concatenated columns of output batches as numpy, timestamps as int64 ns."""
    table = pa.Table.from_batches(batches) if batches else None
    if table is None:
        return {}
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        out[name] = column.to_numpy()
    return out


def assert_same_outputs(a: list[pa.RecordBatch], b: list[pa.RecordBatch]) -> None:
    """Same batch boundaries, schemas and values (NaN equal to NaN)."""
    assert [x.num_rows for x in a] == [y.num_rows for y in b]
    assert all(x.schema == y.schema for x, y in zip(a, b, strict=True))
    got, want = columns(a), columns(b)
    assert got.keys() == want.keys()
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


SENSORS = st.sampled_from([0, 1, 7, -1, -5, 2**31 - 1, -(2**31), 123456789]) | st.integers(
    -(2**31), 2**31 - 1
)


@st.composite
def readings(draw, unit: int, values: st.SearchStrategy[float], max_rows: int = 120):
    """``(sensor_id, ts, value)`` lists in arrival order: ts on a grid of ``unit`` ns
    (duplicates, negative ts) with +-1 ns nudges, out of order within a drawn bound."""
    n = draw(st.integers(0, max_rows))
    sensors = draw(st.lists(SENSORS, min_size=1, max_size=6, unique=True))
    sid = draw(st.lists(st.sampled_from(sensors), min_size=n, max_size=n))
    base = sorted(draw(st.lists(st.integers(-24, 24), min_size=n, max_size=n)))
    disorder = draw(st.integers(0, 6))
    jitter = draw(st.lists(st.integers(0, disorder), min_size=n, max_size=n))
    nudge = draw(st.lists(st.sampled_from([0, 0, 0, -1, 1]), min_size=n, max_size=n))
    ts = [(b + j) * unit + d for b, j, d in zip(base, jitter, nudge, strict=True)]
    value = draw(st.lists(values, min_size=n, max_size=n))
    return sid, ts, value


@st.composite
def schedules(draw, ts: list[int]):
    """A random split of rows ``0..n`` into batches, each followed by an optional
    watermark that never makes a later row late: ``[(lo, hi, watermark | None)]``."""
    n = len(ts)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=12))) | {0, n})
    # min_rest[i] = min(ts[i:]): the highest watermark allowed after row i-1.
    min_rest = [MAX_WATERMARK] * (n + 1)
    for i in range(n - 1, -1, -1):
        min_rest[i] = min(ts[i], min_rest[i + 1])
    plan = []
    for lo, hi in itertools.pairwise(cuts):
        kind = draw(st.sampled_from(["none", "max", "max", "below", "low"]))
        allowed = min_rest[hi]
        if kind == "max" or (allowed == MAX_WATERMARK and kind != "none"):
            plan.append((lo, hi, allowed if allowed < MAX_WATERMARK else None))
        elif kind == "below":
            plan.append((lo, hi, allowed - draw(st.integers(1, 10**6))))
        elif kind == "low":  # usually not advancing: must be ignored
            plan.append((lo, hi, -(2**62)))
        else:
            plan.append((lo, hi, None))
    return plan


def drive(logic, sid, ts, value, plan):
    """Run ``logic`` over the plan, then flush with MAX. Returns ``[(watermark, outputs)]``."""
    emitted = []
    for lo, hi, watermark in plan:
        assert logic.on_batch(readings_batch(sid[lo:hi], ts[lo:hi], value[lo:hi])) == []
        if watermark is not None:
            emitted.append((watermark, logic.on_watermark(watermark)))
    emitted.append((MAX_WATERMARK, logic.on_watermark(MAX_WATERMARK)))
    return emitted
