"""ThresholdAlarm against a pure-Python reference, under random batch splits and watermarks."""

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
    alarms_reference,
    assert_same_outputs,
    columns,
    drive,
    readings,
    readings_batch,
    schedules,
)

from telepipe.errors import ConfigError, SchemaError
from telepipe.markers import MAX_WATERMARK, Watermark
from telepipe.operators.detectors.threshold_alarm.alarm import BufferedAlarmLogic, ThresholdAlarm
from telepipe.operators.detectors.threshold_alarm.eager import EagerAlarmLogic
from telepipe.schema import ALARMS, TS_MAX

VALUES = st.sampled_from([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 7.5, math.nan, math.inf, -math.inf])


@st.composite
def cases(draw):
    consecutive = draw(st.integers(1, 4))
    unit = draw(st.sampled_from([1, 1000, 10**9]))
    sid, ts, value = draw(readings(unit, VALUES, max_rows=150))
    return consecutive, sid, ts, value, draw(schedules(ts))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_matches_reference_under_any_batching(case) -> None:
    consecutive, sid, ts, value, plan = case
    logic = ThresholdAlarm(threshold=1.0, consecutive=consecutive).build()
    emitted = drive(logic, sid, ts, value, plan)
    assert logic.late_rows == 0
    outputs, marks = [], []
    current = -(2**63)
    for watermark, batches in emitted:
        advanced = watermark > current
        current = max(current, watermark)
        marks += [current] if advanced else []
        assert len(batches) <= (1 if advanced else 0)
        for batch in batches:
            assert batch.schema == ALARMS and batch.num_rows > 0
        outputs += [(current, b) for b in batches]
    got = columns([b for _, b in outputs])
    want = alarms_reference(sid, ts, value, 1.0, consecutive)
    if not want:
        assert got == {}
        return
    s, t, start, v = (np.array(c) for c in zip(*want, strict=True))
    np.testing.assert_array_equal(got["sensor_id"], s)
    np.testing.assert_array_equal(got["ts"], t)
    np.testing.assert_array_equal(got["start_ts"], start)
    np.testing.assert_array_equal(got["value"], v)
    assert (got["threshold"] == 1.0).all() and (got["consecutive"] == consecutive).all()
    # An alarm is released by the first watermark above its ts.
    emitted_at = [w for w, b in outputs for _ in range(b.num_rows)]
    for alarm_ts, at in zip(t.tolist(), emitted_at, strict=True):
        assert at == min(w for w in marks if w > alarm_ts or w == MAX_WATERMARK)


@settings(max_examples=60, deadline=None)
@given(cases(), st.data())
def test_snapshot_restore_mid_stream(case, data) -> None:
    consecutive, sid, ts, value, plan = case
    cut = data.draw(st.integers(0, len(plan)))
    op = ThresholdAlarm(threshold=1.0, consecutive=consecutive)
    first = op.build()
    for lo, hi, watermark in plan[:cut]:
        first.on_batch(readings_batch(sid[lo:hi], ts[lo:hi], value[lo:hi]))
        if watermark is not None:
            first.on_watermark(watermark)
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    second = op.build()
    second.restore(snap)
    a = [b for _, bs in drive(first, sid, ts, value, plan[cut:]) for b in bs]
    b = [b for _, bs in drive(second, sid, ts, value, plan[cut:]) for b in bs]
    assert_same_outputs(a, b)


def test_debounce_event_time_order_and_nan() -> None:
    logic = ThresholdAlarm(threshold=10.0, consecutive=2).build()
    # Arrives out of order; in event time sensor 5 reads 11, 12, 13 (one alarm), NaN, 14, 15.
    logic.on_batch(readings_batch([5, 5, 5, 5], [30, 10, 20, 50], [13.0, 11.0, 12.0, 14.0]))
    logic.on_batch(readings_batch([5, 5, 9], [40, 60, 60], [math.nan, 15.0, 10.0]))
    (out,) = logic.on_watermark(MAX_WATERMARK)
    got = columns([out])
    assert got["ts"].tolist() == [20, 60]
    assert got["start_ts"].tolist() == [10, 50]
    assert got["value"].tolist() == [12.0, 15.0]


def test_late_rows_counted_and_excluded() -> None:
    logic = ThresholdAlarm(threshold=0.0, consecutive=2).build()
    logic.on_batch(readings_batch([1, 1], [100, 300], [1.0, 1.0]))
    assert logic.on_watermark(200) == []
    logic.on_batch(readings_batch([1, 1, 1], [150, 199, 200], [-1.0, 5.0, 1.0]))
    assert logic.late_rows == 2
    (out,) = logic.on_watermark(MAX_WATERMARK)
    assert columns([out])["ts"].tolist() == [200]  # the late -1.0 did not end the run
    logic.on_batch(readings_batch([1], [TS_MAX - 1], [1.0]))  # after the flush: late
    assert logic.late_rows == 3


def test_rows_at_or_above_watermark_stay_buffered() -> None:
    logic = ThresholdAlarm(threshold=0.0, consecutive=1).build()
    logic.on_batch(readings_batch([1, 2], [10, 20], [1.0, 1.0]))
    (out,) = logic.on_watermark(20)
    assert columns([out])["sensor_id"].tolist() == [1]
    assert logic.snapshot()["buffer_ts"].tolist() == [20]
    (out,) = logic.on_watermark(21)
    assert columns([out])["sensor_id"].tolist() == [2]


def test_growth_past_many_thousands_of_sensors() -> None:
    rng = np.random.default_rng(3)
    n = 100_000
    sid = rng.integers(-(2**31), 2**31 - 1, 25_000)[rng.integers(0, 25_000, n)]
    ts = rng.integers(0, 1000, n)
    value = rng.choice([0.0, 2.0, 2.0, 2.0], n)
    logic = ThresholdAlarm(threshold=1.0, consecutive=2).build()
    logic.on_batch(readings_batch(sid, ts, value))
    out = logic.on_watermark(500)
    assert len(logic.snapshot()["sensor_id"]) > 1000
    out += logic.on_watermark(MAX_WATERMARK)
    got = columns(out)
    want = alarms_reference(sid.tolist(), ts.tolist(), value.tolist(), 1.0, 2)
    assert len(want) > 10_000
    assert list(
        zip(got["sensor_id"].tolist(), got["ts"].tolist(), got["start_ts"].tolist(), strict=True)
    ) == [a[:3] for a in want]


def test_rx_pipe_and_error() -> None:
    b1 = readings_batch([1, 1, 1], [1, 2, 3], [5.0, 5.0, 5.0])
    items, done, errors = [], [], []
    reactivex.from_iterable([b1, Watermark(3), Watermark(10)]).pipe(
        ThresholdAlarm(threshold=1.0)
    ).subscribe(items.append, errors.append, lambda: done.append(True))
    assert errors == [] and done == [True]
    assert [type(i).__name__ for i in items] == ["Watermark", "RecordBatch", "Watermark"]
    assert items[1].column("ts").cast(pa.int64()).to_pylist() == [3]

    bad = b1.drop_columns(["ts"])
    items, errors = [], []
    reactivex.from_iterable([b1, bad, Watermark(10)]).pipe(ThresholdAlarm(threshold=1.0)).subscribe(
        items.append, errors.append, lambda: done.append(True)
    )
    assert items == [] and len(errors) == 1 and isinstance(errors[0], SchemaError)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"threshold": math.nan}, "threshold"),
        ({"threshold": math.inf}, "threshold must be a finite number"),
        ({"threshold": -math.inf}, "threshold must be a finite number"),
        ({"threshold": "1"}, "threshold"),
        ({"threshold": 1.0, "consecutive": 0}, "consecutive"),
        ({"threshold": 1.0, "consecutive": 2**31}, "consecutive"),
        ({"threshold": 1.0, "consecutive": 2.0}, "consecutive"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ThresholdAlarm(**kwargs)  # type: ignore[arg-type]


def _disordered(rng: np.random.Generator, n: int, sensors: int, disorder: int):
    """Rows of ``sensors`` sensors at 1 tick each, in arrival order, each row up to
    ``disorder`` ticks late (so each sensor's rows arrive out of ts order)."""
    sid = rng.integers(0, sensors, n).astype(np.int32)
    ts = np.arange(n, dtype=np.int64) * 1000
    ts -= rng.integers(0, disorder + 1, n) * 1000
    value = rng.choice([0.0, 2.0, 2.0, 2.0, math.nan], n)
    return sid, ts, value


@pytest.mark.parametrize("disorder", [0, 3, 400])
def test_out_of_order_sensors_repaired_at_scale(disorder: int) -> None:
    rng = np.random.default_rng(disorder)
    sid, ts, value = _disordered(rng, 40_000, 50, disorder)
    logic = ThresholdAlarm(threshold=1.0, consecutive=3).build()
    out = []
    for lo in range(0, len(ts), 1_111):
        hi = lo + 1_111
        logic.on_batch(readings_batch(sid[lo:hi], ts[lo:hi], value[lo:hi]))
        # The bound the source would use: every later row is at or above it.
        out += logic.on_watermark(int(ts[hi:].min()) if hi < len(ts) else MAX_WATERMARK)
    out += logic.on_watermark(MAX_WATERMARK)
    assert logic.late_rows == 0
    assert (logic.repairs > 0) == (disorder > 0)
    got = columns(out)
    want = alarms_reference(sid.tolist(), ts.tolist(), value.tolist(), 1.0, 3)
    assert len(want) > 500
    assert list(
        zip(got["sensor_id"].tolist(), got["ts"].tolist(), got["start_ts"].tolist(), strict=True)
    ) == [a[:3] for a in want]


def test_state_is_bounded_on_an_endless_stream() -> None:
    """Batches are kept only while the watermark has not passed them."""
    rng = np.random.default_rng(1)
    logic = ThresholdAlarm(threshold=1.0, consecutive=3).build()
    for k in range(300):
        sid, ts, value = _disordered(rng, 1_000, 20, 5)
        ts += k * 1_000_000
        logic.on_batch(readings_batch(sid, ts, value))
        logic.on_watermark(int(ts.max()) - 200_000)
        inner = logic.logic
        if isinstance(inner, EagerAlarmLogic):
            assert len(inner._retained) <= 2
        assert inner._n_pend <= 1_000
        assert len(logic.snapshot()["buffer_ts"]) <= 1_000


def test_a_far_future_reading_keeps_only_its_own_batch() -> None:
    """One on-time reading a year ahead keeps its batch until the watermark passes it,
    and not the batches that came after it."""
    logic = EagerAlarmLogic(threshold=1.0, consecutive=3)
    year = 365 * 86_400 * 10**9
    for k in range(200):
        ts = np.arange(k * 1_000, (k + 1) * 1_000, 10, dtype=np.int64)
        if k == 1:
            ts[-1] += year
        logic.on_batch(readings_batch(np.arange(len(ts)) % 7, ts, np.full(len(ts), 2.0)))
        logic.on_watermark(int(ts[0]))
        assert len(logic._retained) <= 3
    assert 2 in logic._retained  # the batch of the far reading, still above the watermark
    logic.on_watermark(MAX_WATERMARK)
    assert logic._retained == {} and logic._by_high == []


@settings(max_examples=100, deadline=None)
@given(cases(), st.sampled_from([EagerAlarmLogic, BufferedAlarmLogic]))
def test_both_ways_of_running_it_match_the_reference(case, kind) -> None:
    consecutive, sid, ts, value, plan = case
    logic = kind(1.0, consecutive)
    got = columns([b for _, bs in drive(logic, sid, ts, value, plan) for b in bs])
    want = alarms_reference(sid, ts, value, 1.0, consecutive)
    assert list(
        zip(
            got.get("sensor_id", np.empty(0)).tolist(),
            got.get("ts", np.empty(0)).tolist(),
            got.get("start_ts", np.empty(0)).tolist(),
            strict=True,
        )
    ) == [a[:3] for a in want]


def test_moves_to_buffered_under_jitter_and_back_with_the_same_output() -> None:
    """Every sensor jittered: the eager logic would repair every batch, so the state
    moves to the buffered one; in-order data moves it back. Outputs are the same
    batches as either logic alone gives."""
    rng = np.random.default_rng(2)
    jittered = _disordered(rng, 30_000, 40, 6)
    in_order = _disordered(rng, 30_000, 40, 0)
    sid = np.concatenate([jittered[0], in_order[0]])
    ts = np.concatenate([jittered[1], in_order[1] + 40_000_000])
    value = np.concatenate([jittered[2], in_order[2]])
    plan = []
    for lo in range(0, len(ts), 1_000):
        hi = lo + 1_000
        plan.append((lo, hi, int(ts[hi:].min()) if hi < len(ts) else None))
    outputs = {}
    switching = ThresholdAlarm(threshold=1.0, consecutive=3).build()
    for name, logic in [
        ("switching", switching),
        ("eager", EagerAlarmLogic(1.0, 3)),
        ("buffered", BufferedAlarmLogic(1.0, 3)),
    ]:
        outputs[name] = [b for _, bs in drive(logic, sid, ts, value, plan) for b in bs]
    assert switching.switches >= 2 and switching.eager
    assert_same_outputs(outputs["switching"], outputs["eager"])
    assert_same_outputs(outputs["switching"], outputs["buffered"])
    want = alarms_reference(sid.tolist(), ts.tolist(), value.tolist(), 1.0, 3)
    assert columns(outputs["switching"])["ts"].tolist() == [a[1] for a in want]
