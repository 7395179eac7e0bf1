"""SessionWindow against a pure-Python reference, under random batch splits and watermarks."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from reference import columns, readings, readings_batch, schedules
from window_reference import (
    ALL,
    any_schedules,
    assert_matches,
    assert_same_runs,
    disordered,
    fired_output,
    latest,
    resplit,
    rows_to_dict,
    run,
    session_reference,
)

from telepipe.config import build
from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, Watermark
from telepipe.operators.windows.session import SessionWindow
from telepipe.schema import WINDOWS

MS = 1_000_000
CONF = Path(__file__).resolve().parents[2] / "conf" / "operator" / "session_window.yaml"
VALUES = st.floats(-1e6, 1e6) | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0])


@st.composite
def cases(draw, values=VALUES):
    gap_ms = draw(st.sampled_from([1, 2, 5]))
    unit = MS * draw(st.sampled_from([1, 2, 3])) // 2
    sid, ts, value = draw(readings(unit, values, max_rows=80))
    return gap_ms, sid, ts, value


@settings(max_examples=80, deadline=None)
@given(cases(), st.data())
def test_matches_reference_under_any_batching(case, data) -> None:
    gap_ms, sid, ts, value = case
    plan = data.draw(schedules(ts))
    op = SessionWindow(gap_ms=gap_ms, aggregates=ALL)
    logic = op.build()
    emitted, late = run(logic, sid, ts, value, plan)
    assert late == [] and logic.late_rows == 0
    got = fired_output(op, emitted, plan)
    if got:
        order = np.lexsort((got["sensor_id"], got["window_start"]))
        got = {k: v[order] for k, v in got.items()}
    assert_matches(got, rows_to_dict(session_reference(sid, ts, value, gap_ms * MS)), ALL)


@settings(max_examples=80, deadline=None)
@given(cases().flatmap(disordered), st.integers(0, 12), st.data())
def test_lateness_is_split_invariant(case, lateness_ms, data) -> None:
    """Watermarks anywhere: only their positions matter, not how rows are batched."""
    gap_ms, sid, ts, value = case
    plan = data.draw(any_schedules(ts, gap_ms * MS))
    other = data.draw(resplit(plan))
    op = SessionWindow(gap_ms, ALL, allowed_lateness_ms=lateness_ms)
    a, b = op.build(), op.build()
    out_a, late_a = run(a, sid, ts, value, plan)
    out_b, late_b = run(b, sid, ts, value, other)
    assert_same_runs(out_a, out_b, close=True)
    assert a.late_rows == b.late_rows == sum(x.num_rows for x in late_a)
    late_a, late_b = columns(late_a), columns(late_b)
    assert late_a.keys() == late_b.keys()
    for name in late_a:
        np.testing.assert_array_equal(late_a[name], late_b[name])
    # Everything not late is in exactly one final (highest revision) session per
    # sensor-time range: counts add up.
    got = columns([x for bs in out_a for x in bs])
    accepted = len(ts) - a.late_rows
    if lateness_ms == 0:
        assert (got["count"].sum() if got else 0) == accepted


@settings(max_examples=40, deadline=None)
@given(cases().flatmap(disordered), st.integers(0, 2), st.data())
def test_snapshot_restore_mid_stream(case, lateness_ms, data) -> None:
    gap_ms, sid, ts, value = case
    plan = data.draw(any_schedules(ts, gap_ms * MS))
    cut = data.draw(st.integers(0, len(plan)))
    op = SessionWindow(gap_ms, ("count", "std", "first", "p50"), lateness_ms)
    first = op.build()
    run(first, sid, ts, value, plan[:cut], flush=False)
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    second = op.build()
    second.restore(snap)
    out_a, late_a = run(first, sid, ts, value, plan[cut:])
    out_b, late_b = run(second, sid, ts, value, plan[cut:])
    assert_same_runs(out_a, out_b)
    assert first.late_rows == second.late_rows
    assert [x.num_rows for x in late_a] == [x.num_rows for x in late_b]


def test_out_of_order_row_joins_two_sessions() -> None:
    op = SessionWindow(gap_ms=2, aggregates=("count", "first", "last", "p50"))
    logic = op.build()
    logic.on_batch(readings_batch([1, 1], [0, 3 * MS], [1.0, 3.0]))
    assert logic.on_watermark(MS) == []
    logic.on_batch(readings_batch([1, 1], [int(1.5 * MS), 3 * MS], [2.0, 4.0]))  # bridges
    (out,) = logic.on_watermark(MAX_WATERMARK)
    got = columns([out])
    assert got["window_start"].tolist() == [0] and got["window_end"].tolist() == [5 * MS]
    assert got["count"].tolist() == [4]
    assert got["first"].tolist() == [1.0] and got["last"].tolist() == [4.0]  # ties: arrival
    assert abs(got["p50"][0] - 2.0) <= 0.02 * 2.0


def test_allowed_lateness_updates_and_late_rows() -> None:
    op = SessionWindow(gap_ms=1, aggregates=("count", "sum"), allowed_lateness_ms=2)
    assert op.output_schema.names[-1] == "revision"
    logic = op.build()
    logic.on_batch(readings_batch([1, 2], [0, 0], [1.0, 5.0]))
    (out,) = logic.on_watermark(MS)
    assert columns([out])["revision"].tolist() == [0, 0]
    # Sensor 1's session [0, 1ms) fired; a row at 0.5 ms updates it to [0, 1.5ms):
    # emitted again (revision 1) once the watermark passes the new end.
    logic.on_batch(readings_batch([1], [MS // 2], [2.0]))
    assert logic.on_watermark(MS + 1) == []
    (out,) = logic.on_watermark(MS + MS // 2)
    got = columns([out])
    assert got["sensor_id"].tolist() == [1] and got["revision"].tolist() == [1]
    assert got["count"].tolist() == [2] and got["window_end"].tolist() == [MS + MS // 2]
    logic.on_batch(readings_batch([1], [1_200_000], [3.0]))  # extends it to 2.2 ms
    (out,) = logic.on_watermark(3 * MS)
    got = columns([out])
    assert got["count"].tolist() == [3] and got["revision"].tolist() == [2]
    assert got["sum"].tolist() == [6.0] and got["window_end"].tolist() == [2_200_000]
    # Sensor 2's session [0, 1ms) is gone at 3 ms; a row at 0 would only make a
    # session ending at 1 ms + 2 ms <= 3 ms: late, decided at the next watermark.
    logic.on_batch(readings_batch([2, 2], [0, 4 * MS], [9.0, 9.0]))
    assert logic.late_rows == 0
    assert logic.on_watermark(4 * MS) == []
    assert logic.late_rows == 1
    (late,) = logic.take_late()
    assert late.column("ts").cast("int64").to_pylist() == [0]


def test_lateish_row_joining_a_later_row_of_same_interval_is_kept() -> None:
    """A row past lateness on its own is kept if a row before the next watermark
    brings a session it joins, whatever the order of the two."""
    for order in ([0, 1], [1, 0]):
        logic = SessionWindow(gap_ms=2, aggregates=("count",)).build()
        logic.on_watermark(5 * MS)
        rows = [(1, 3 * MS, 1.0), (1, 4 * MS + MS // 2, 2.0)]  # 3ms + 2ms <= 5ms alone
        for i in order:
            logic.on_batch(readings_batch(*[[x] for x in rows[i]]))
        logic.on_watermark(5 * MS + 1)
        assert logic.late_rows == 0
        (out,) = logic.on_watermark(MAX_WATERMARK)
        assert columns([out])["count"].tolist() == [2]


def test_default_schema_is_the_demo_windows_schema() -> None:
    assert SessionWindow().output_schema == WINDOWS


def test_many_sensors() -> None:
    rng = np.random.default_rng(5)
    n = 50_000
    sid = rng.integers(-(2**31), 2**31 - 1, 5_000)[rng.integers(0, 5_000, n)]
    ts = np.sort(rng.integers(0, 500 * MS, n)) + rng.integers(0, MS, n)
    value = rng.normal(size=n)
    aggs = ("count", "mean", "std", "p90")
    logic = SessionWindow(gap_ms=20, aggregates=aggs).build()
    out = []
    for lo in range(0, n, 7000):
        logic.on_batch(
            readings_batch(sid[lo : lo + 7000], ts[lo : lo + 7000], value[lo : lo + 7000])
        )
        out += logic.on_watermark(int(ts[lo : lo + 7000].max()) - MS)
    out += logic.on_watermark(MAX_WATERMARK)
    got = columns(out)
    order = np.lexsort((got["sensor_id"], got["window_start"]))
    got = {k: v[order] for k, v in got.items()}
    ref = session_reference(sid.tolist(), ts.tolist(), value.tolist(), 20 * MS)
    assert_matches(got, rows_to_dict(ref), aggs)
    assert logic.snapshot()["sensor_id"].size == 0 and logic.snapshot()["sketch_count"].size == 0


def test_rx_pipe() -> None:
    items, errors = [], []
    src = [readings_batch([1, 2], [0, 10], [1.0, 2.0]), Watermark(MS)]
    reactivex.from_iterable(src).pipe(SessionWindow(gap_ms=1)).subscribe(
        items.append, errors.append
    )
    assert errors == []
    assert [type(i).__name__ for i in items] == ["RecordBatch", "Watermark", "RecordBatch"]
    assert items[0].column("sensor_id").to_pylist() == [1]
    assert items[2].column("sensor_id").to_pylist() == [2]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gap_ms": 0}, "gap_ms"),
        ({"gap_ms": "5"}, "gap_ms"),
        ({"aggregates": ("p50", "p75")}, "aggregates"),
        ({"aggregates": []}, "aggregates"),
        ({"allowed_lateness_ms": 0.5}, "allowed_lateness_ms"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as error:
        SessionWindow(**kwargs)
    assert "\n" not in str(error.value)


def test_yaml_example_builds() -> None:
    op = build(OmegaConf.load(CONF), "operator")
    assert isinstance(op, SessionWindow) and op.allowed_lateness_ms == 1000
    assert isinstance(op.aggregates, tuple) and len(op.aggregates) == 11
    bad = OmegaConf.merge(OmegaConf.load(CONF), {"gap_ms": -3})
    with pytest.raises(ConfigError, match=r"^operator: SessionWindow.gap_ms"):
        build(bad, "operator")


@settings(max_examples=40, deadline=None)
@given(cases().flatmap(disordered), st.data())
def test_latest_revisions_match_reference_when_nothing_is_too_late(case, data) -> None:
    gap_ms, sid, ts, value = case
    plan = data.draw(any_schedules(ts, gap_ms * MS))
    logic = SessionWindow(gap_ms, ALL, allowed_lateness_ms=10**6).build()
    emitted, late = run(logic, sid, ts, value, plan)
    assert late == []
    got = latest(columns([b for bs in emitted for b in bs]), sessions=True)
    ref = session_reference(sid, ts, value, gap_ms * MS)
    assert_matches(got, rows_to_dict(ref), ALL)
