"""TumblingWindow against a polars group_by, under random batch splits and watermarks."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pyarrow as pa
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import (
    assert_same_outputs,
    columns,
    drive,
    readings,
    readings_batch,
    schedules,
    windows_reference,
)

from telepipe.errors import ConfigError, SchemaError
from telepipe.markers import MAX_WATERMARK, CheckpointBarrier, Watermark
from telepipe.operators.windows.tumbling import TumblingWindow
from telepipe.schema import WINDOWS

MS = 1_000_000
VALUES = st.floats(-1e6, 1e6) | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0])


def assert_windows_equal(got: dict[str, np.ndarray], ref) -> None:
    if ref.height == 0:
        assert got == {}
        return
    for name in ("sensor_id", "window_start", "window_end", "count"):
        np.testing.assert_array_equal(got[name], ref[name].to_numpy(), err_msg=name)
    for name in ("min", "max"):  # exact, NaN == NaN
        np.testing.assert_array_equal(got[name], ref[name].to_numpy(), err_msg=name)
    # Summation order differs from polars: tolerance relative to the mean magnitude.
    mean, ref_mean, scale = got["mean"], ref["mean"].to_numpy(), ref["abs_mean"].to_numpy()
    same_nan = np.isnan(mean) == np.isnan(ref_mean)
    assert same_nan.all(), (mean, ref_mean)
    finite = ~np.isnan(mean) & np.isfinite(scale)
    assert (mean[~finite & ~np.isnan(mean)] == ref_mean[~finite & ~np.isnan(mean)]).all()
    err = np.abs(mean[finite] - ref_mean[finite])
    assert (err <= 1e-12 * np.maximum(np.abs(ref_mean[finite]), scale[finite])).all()


@st.composite
def cases(draw):
    size_ms = draw(st.sampled_from([1, 3, 1000]))
    unit = size_ms * MS // draw(st.sampled_from([1, 4, 7]))
    sid, ts, value = draw(readings(unit, VALUES))
    return size_ms, sid, ts, value, draw(schedules(ts))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_matches_polars_under_any_batching(case) -> None:
    size_ms, sid, ts, value, plan = case
    size_ns = size_ms * MS
    logic = TumblingWindow(size_ms=size_ms).build()
    emitted = drive(logic, sid, ts, value, plan)
    assert logic.late_rows == 0
    ref = windows_reference(sid, ts, value, size_ns)
    outputs, marks = [], []
    current = -(2**63)
    for watermark, batches in emitted:
        advanced = watermark > current
        current = max(current, watermark)
        marks += [current] if advanced else []
        assert len(batches) <= (1 if advanced else 0)
        for batch in batches:
            assert batch.schema == WINDOWS and batch.num_rows > 0
        outputs += [(current, b) for b in batches]
    assert_windows_equal(columns([b for _, b in outputs]), ref)
    # Each window fires at the first watermark that reaches its end, not earlier or later.
    emitted_at = [w for w, b in outputs for _ in range(b.num_rows)]
    for end, at in zip(ref["window_end"].to_list(), emitted_at, strict=True):
        assert at == min(w for w in marks if w >= end)


@settings(max_examples=60, deadline=None)
@given(cases(), st.data())
def test_snapshot_restore_mid_stream(case, data) -> None:
    size_ms, sid, ts, value, plan = case
    cut = data.draw(st.integers(0, len(plan)))
    first = TumblingWindow(size_ms=size_ms).build()
    drive_part = plan[:cut]
    for lo, hi, watermark in drive_part:
        first.on_batch(readings_batch(sid[lo:hi], ts[lo:hi], value[lo:hi]))
        if watermark is not None:
            first.on_watermark(watermark)
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    second = TumblingWindow(size_ms=size_ms).build()
    second.restore(snap)
    rest = plan[cut:]
    a = [b for _, bs in drive(first, sid, ts, value, rest) for b in bs]
    b = [b for _, bs in drive(second, sid, ts, value, rest) for b in bs]
    assert_same_outputs(a, b)
    assert first.late_rows == second.late_rows == 0


def test_late_rows_counted_and_excluded() -> None:
    logic = TumblingWindow(size_ms=1).build()
    logic.on_batch(readings_batch([1, 1], [0, MS + 5], [1.0, 2.0]))
    (out,) = logic.on_watermark(MS + 500_000)
    assert out.column("count").to_pylist() == [1]
    # [0, 1ms) has fired: late. [1ms, 2ms) has not, so ts below the watermark is fine.
    logic.on_batch(readings_batch([1, 2, 1], [10, -5, MS + 1], [100.0, 100.0, 4.0]))
    assert logic.late_rows == 2
    (out,) = logic.on_watermark(MAX_WATERMARK)
    assert out.column("count").to_pylist() == [2]
    assert out.column("mean").to_pylist() == [3.0]
    logic.on_batch(readings_batch([1], [10 * MS], [1.0]))  # after the final flush
    assert logic.late_rows == 3
    assert logic.on_watermark(MAX_WATERMARK) == []


def test_nan_and_negative_time() -> None:
    logic = TumblingWindow(size_ms=1).build()
    logic.on_batch(readings_batch([3, 3, 3, 4], [-1, -MS, -2, -1], [math.nan, 2.0, -1.0, math.nan]))
    (out,) = logic.on_watermark(0)
    got = columns([out])
    assert got["window_start"].tolist() == [-MS, -MS]
    assert got["window_end"].tolist() == [0, 0]
    assert got["count"].tolist() == [3, 1]
    assert math.isnan(got["mean"][0]) and math.isnan(got["mean"][1])
    assert got["min"][0] == -1.0 and got["max"][0] == 2.0  # NaN skipped, as polars
    assert math.isnan(got["min"][1]) and math.isnan(got["max"][1])  # all NaN


def test_growth_past_many_thousands_of_keys() -> None:
    rng = np.random.default_rng(7)
    n = 120_000
    sid = rng.integers(-(2**31), 2**31 - 1, 30_000, dtype=np.int64)[rng.integers(0, 30_000, n)]
    ts = rng.integers(0, 4 * MS, n)
    value = rng.normal(size=n)
    logic = TumblingWindow(size_ms=1).build()
    logic.on_batch(readings_batch(sid, ts, value))
    snap = logic.snapshot()
    assert len(snap["count"]) > 60_000
    assert snap["count"].sum() == n
    out = logic.on_watermark(MAX_WATERMARK)
    assert_windows_equal(
        columns(out), windows_reference(sid.tolist(), ts.tolist(), value.tolist(), MS)
    )
    assert logic.snapshot()["count"].size == 0


def test_empty_batch_and_non_advancing_watermark() -> None:
    logic = TumblingWindow(size_ms=1).build()
    assert logic.on_batch(readings_batch([], [], [])) == []
    logic.on_batch(readings_batch([1], [5], [1.0]))
    assert len(logic.on_watermark(MS)) == 1
    logic.on_batch(readings_batch([1], [MS], [1.0]))
    assert logic.on_watermark(MS) == []
    assert logic.on_watermark(MS - 1) == []
    assert len(logic.on_watermark(MAX_WATERMARK)) == 1


def test_rx_pipe_forwards_markers_after_outputs() -> None:
    b1 = readings_batch([1, 2], [0, 10], [1.0, 2.0])
    b2 = readings_batch([1], [MS + 1], [5.0])
    barrier = CheckpointBarrier(1, {"s": 3})
    items, done, errors = [], [], []
    reactivex.from_iterable([b1, Watermark(MS), barrier, b2]).pipe(
        TumblingWindow(size_ms=1)
    ).subscribe(items.append, errors.append, lambda: done.append(True))
    assert errors == [] and done == [True]
    assert [type(i).__name__ for i in items] == [
        "RecordBatch",
        "Watermark",
        "CheckpointBarrier",
        "RecordBatch",
    ]
    assert items[0].column("sensor_id").to_pylist() == [1, 2]
    assert items[1] == Watermark(MS) and items[2] == barrier  # (equal: state aside)
    assert items[2].state["tumbling_window"].operator == "TumblingWindow"
    assert items[3].column("mean").to_pylist() == [5.0]


def test_rx_error_in_logic_reaches_on_error() -> None:
    bad = pa.RecordBatch.from_pydict(
        {
            "sensor_id": pa.array([1], pa.int32()),
            "ts": pa.array([0], pa.timestamp("ns")),
            "value": pa.array([1], pa.int64()),
        }
    )
    items, done, errors = [], [], []
    reactivex.from_iterable([bad, Watermark(MS)]).pipe(TumblingWindow(size_ms=1)).subscribe(
        items.append, errors.append, lambda: done.append(True)
    )
    assert items == [] and done == []
    assert len(errors) == 1 and isinstance(errors[0], SchemaError)
    assert "'value'" in str(errors[0])


@pytest.mark.parametrize("size_ms", [0, -1, 1.5, True, "1000", 2**62])
def test_config_errors_name_the_field(size_ms: object) -> None:
    with pytest.raises(ConfigError, match="size_ms"):
        TumblingWindow(size_ms=size_ms)  # type: ignore[arg-type]


def test_hydra_instantiate() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    op = instantiate(
        {"_target_": "telepipe.operators.windows.tumbling.TumblingWindow", "size_ms": 250}
    )
    assert op == TumblingWindow(size_ms=250)
    assert OmegaConf.structured(TumblingWindow).size_ms == 1000


def test_out_of_order_windows_and_restore_are_exact() -> None:
    """Rows of a sensor's older window (after it moved on) are folded into the same
    window, and a restore mid-window continues the same sums bit for bit."""
    rng = np.random.default_rng(11)
    n = 30_000
    sid = rng.integers(0, 40, n)
    ts = np.arange(n, dtype=np.int64) * 100 * MS // 1000 - rng.integers(0, 3, n) * 40 * MS
    value = rng.normal(0, 1e6, n)
    ref = windows_reference(sid.tolist(), ts.tolist(), value.tolist(), 100 * MS)

    def run(cut: int | None):
        logic = TumblingWindow(size_ms=100).build()
        out = []
        for lo in range(0, n, 997):
            if lo == cut:
                snap = pickle.loads(pickle.dumps(logic.snapshot()))
                logic = TumblingWindow(size_ms=100).build()
                logic.restore(snap)
            hi = lo + 997
            logic.on_batch(readings_batch(sid[lo:hi], ts[lo:hi], value[lo:hi]))
            out += logic.on_watermark(int(ts[hi:].min()) if hi < n else MAX_WATERMARK)
        assert logic.late_rows == 0
        return out

    straight = run(None)
    assert_windows_equal(columns(straight), ref)
    for cut in (997 * 3, 997 * 17):
        assert_same_outputs(run(cut), straight)
