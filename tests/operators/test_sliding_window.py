"""SlidingWindow against polars, under random batch splits and watermarks."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from unittest.mock import patch

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
    frame_to_dict,
    latest,
    resplit,
    run,
    sliding_reference,
)

from telepipe.config import build
from telepipe.errors import ConfigError
from telepipe.markers import MAX_WATERMARK, Watermark
from telepipe.operators.windows.sliding import SlidingWindow
from telepipe.schema import WINDOWS

MS = 1_000_000
CONF = Path(__file__).resolve().parents[2] / "conf" / "operator" / "sliding_window.yaml"
VALUES = st.floats(-1e6, 1e6) | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0])
SHAPES = st.sampled_from([(4, 2), (3, 1), (5, 2), (2, 3), (1, 1), (6, 4)])


@st.composite
def cases(draw, values=VALUES):
    size_ms, slide_ms = draw(SHAPES)
    unit = MS // draw(st.sampled_from([1, 2, 3]))
    sid, ts, value = draw(readings(unit, values, max_rows=80))
    return size_ms, slide_ms, sid, ts, value


@settings(max_examples=80, deadline=None)
@given(cases(), st.data())
def test_matches_polars_under_any_batching(case, data) -> None:
    size_ms, slide_ms, sid, ts, value = case
    plan = data.draw(schedules(ts))
    op = SlidingWindow(size_ms=size_ms, slide_ms=slide_ms, aggregates=ALL)
    logic = op.build()
    emitted, late = run(logic, sid, ts, value, plan)
    assert late == [] and logic.late_rows == 0
    got = fired_output(op, emitted, plan)
    ref = sliding_reference(sid, ts, value, size_ms * MS, slide_ms * MS)
    if got:
        order = np.lexsort((got["sensor_id"], got["window_start"]))
        got = {k: v[order] for k, v in got.items()}
    assert_matches(got, frame_to_dict(ref), ALL)


@settings(max_examples=60, deadline=None)
@given(cases().flatmap(disordered), st.integers(0, 3), st.data())
def test_lateness_is_split_invariant(case, lateness_ms, data) -> None:
    """Watermarks anywhere (rows may be late or update fired windows): only the
    positions of watermarks matter, not how rows between them are batched."""
    size_ms, slide_ms, sid, ts, value = case
    plan = data.draw(any_schedules(ts, size_ms * MS))
    other = data.draw(resplit(plan))
    op = SlidingWindow(size_ms, slide_ms, ALL, allowed_lateness_ms=lateness_ms)
    a, b = op.build(), op.build()
    out_a, late_a = run(a, sid, ts, value, plan)
    out_b, late_b = run(b, sid, ts, value, other)
    assert_same_runs(out_a, out_b)
    assert a.late_rows == b.late_rows == sum(x.num_rows for x in late_a)
    late_a, late_b = columns(late_a), columns(late_b)
    assert late_a.keys() == late_b.keys()
    for name in late_a:
        np.testing.assert_array_equal(late_a[name], late_b[name])
    # Revisions count up per window; first firings come once per window.
    got = columns([x for bs in out_a for x in bs])
    if got and lateness_ms:
        seen: dict[tuple[int, int], int] = {}
        for s, w, r in zip(got["sensor_id"], got["window_start"], got["revision"], strict=True):
            assert r == seen.get((s, w), -1) + 1
            seen[(s, w)] = r


@settings(max_examples=40, deadline=None)
@given(cases().flatmap(disordered), st.integers(0, 2), st.data())
def test_snapshot_restore_mid_stream(case, lateness_ms, data) -> None:
    size_ms, slide_ms, sid, ts, value = case
    plan = data.draw(any_schedules(ts, size_ms * MS))
    cut = data.draw(st.integers(0, len(plan)))
    op = SlidingWindow(size_ms, slide_ms, ("count", "std", "last", "p90"), lateness_ms)
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


@settings(max_examples=60, deadline=None)
@given(
    cases(st.floats(-1e6, 1e6) | st.floats(0.5, 2.0) | st.sampled_from([math.nan, 0.0])).flatmap(
        disordered
    ),
    st.integers(0, 2),
    st.data(),
)
def test_staged_pane_sketches_change_nothing(case, lateness_ms, data) -> None:
    """Quantiles counted through each sensor's staged pane equal those counted row by
    row into the table (no sensor staged): values inside and outside a staged pane's
    codes, rows of older panes, late rows, any batching."""
    size_ms, slide_ms, sid, ts, value = case
    plan = data.draw(any_schedules(ts, size_ms * MS))
    op = SlidingWindow(size_ms, slide_ms, ("count", "p50", "p90", "p99"), lateness_ms)
    staged = op.build()
    out_a, _ = run(staged, sid, ts, value, plan)
    with patch("telepipe.operators.windows.sliding.STAGE_SLOTS", 0):
        direct = op.build()
        out_b, _ = run(direct, sid, ts, value, plan)
    assert len(direct._stage[0]) == 0
    assert_same_runs(out_a, out_b)


def test_allowed_lateness_updates_and_late_rows() -> None:
    op = SlidingWindow(size_ms=2, slide_ms=1, aggregates=("count", "sum"), allowed_lateness_ms=1)
    assert op.output_schema.names[-1] == "revision"
    logic = op.build()
    logic.on_batch(readings_batch([1, 1], [0, MS + 1], [1.0, 2.0]))
    (out,) = logic.on_watermark(2 * MS)  # windows [-1,1) and [0,2) fire
    got = columns([out])
    assert got["window_start"].tolist() == [-MS, 0]
    assert got["count"].tolist() == [1, 2] and got["revision"].tolist() == [0, 0]
    # ts 0.5 ms: [0,2) has fired but is kept until 3 ms; [-1,1) is gone at 2 ms
    # (end 1 + lateness 1 <= 2), so it is skipped, not updated.
    logic.on_batch(readings_batch([1, 1], [MS // 2, MS // 2], [10.0, 20.0]))
    assert logic.late_rows == 0
    (out,) = logic.on_watermark(2 * MS + 1)
    got = columns([out])
    assert got["window_start"].tolist() == [0]
    assert got["count"].tolist() == [4] and got["sum"].tolist() == [33.0]
    assert got["revision"].tolist() == [1]
    (out,) = logic.on_watermark(3 * MS)  # [1,3) fires; [0,2) is gone
    assert columns([out])["window_start"].tolist() == [MS]
    logic.on_batch(readings_batch([1, 2], [MS - 1, 5 * MS], [7.0, 8.0]))  # first one: late
    assert logic.late_rows == 1
    (late,) = logic.take_late()
    assert late.schema == readings_batch([], [], []).schema
    assert late.column("ts").cast("int64").to_pylist() == [MS - 1]
    assert logic.take_late() == []


def test_default_schema_is_the_demo_windows_schema() -> None:
    assert SlidingWindow().output_schema == WINDOWS


def test_quantiles_within_relative_accuracy() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    sid = rng.integers(0, 5, n)
    ts = np.sort(rng.integers(0, 20 * MS, n))
    value = rng.lognormal(3, 2, n) * rng.choice([-1, 1], n)
    op = SlidingWindow(size_ms=4, slide_ms=2, aggregates=("count", "p50", "p90", "p99"))
    logic = op.build()
    for lo in range(0, n, 3000):
        logic.on_batch(
            readings_batch(sid[lo : lo + 3000], ts[lo : lo + 3000], value[lo : lo + 3000])
        )
    got = columns(logic.on_watermark(MAX_WATERMARK))
    ref = sliding_reference(sid.tolist(), ts.tolist(), value.tolist(), 4 * MS, 2 * MS)
    assert_matches(got, frame_to_dict(ref), ("count", "p50", "p90", "p99"))


def test_many_keys_grow_and_purge() -> None:
    rng = np.random.default_rng(7)
    n = 60_000
    sid = rng.integers(-(2**31), 2**31 - 1, 20_000)[rng.integers(0, 20_000, n)]
    ts = rng.integers(0, 3 * MS, n)
    value = rng.normal(size=n)
    logic = SlidingWindow(size_ms=2, slide_ms=1, aggregates=("count", "mean", "p50")).build()
    logic.on_batch(readings_batch(sid, ts, value))
    # Every row is in two windows: held there, or in its sensor's open pane (of one ms).
    snap = logic.snapshot()
    assert snap["acc_int"][:, 0].sum() + 2 * snap["pane_acc_int"][:, 0].sum() == 2 * n
    got = columns(logic.on_watermark(MAX_WATERMARK))
    ref = sliding_reference(sid.tolist(), ts.tolist(), value.tolist(), 2 * MS, MS)
    assert_matches(got, frame_to_dict(ref), ("count", "mean", "p50"))
    snap = logic.snapshot()
    assert snap["window"].size == snap["sketch_count"].size == snap["pane"].size == 0


def test_rx_pipe() -> None:
    items, errors = [], []
    src = [readings_batch([1, 2], [0, 10], [1.0, 2.0]), Watermark(MS)]
    reactivex.from_iterable(src).pipe(SlidingWindow(size_ms=2, slide_ms=1)).subscribe(
        items.append, errors.append
    )
    assert errors == []
    assert [type(i).__name__ for i in items] == ["RecordBatch", "Watermark", "RecordBatch"]
    assert items[0].column("window_start").cast("int64").to_pylist() == [-MS, -MS]
    assert items[2].column("window_start").cast("int64").to_pylist() == [0, 0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"size_ms": 0}, "size_ms"),
        ({"size_ms": 1.5}, "size_ms"),
        ({"slide_ms": -1}, "slide_ms"),
        ({"slide_ms": True}, "slide_ms"),
        ({"size_ms": 100_000, "slide_ms": 1}, "slide_ms"),
        ({"aggregates": ("count", "median")}, "aggregates"),
        ({"aggregates": ()}, "aggregates"),
        ({"aggregates": "count"}, "aggregates"),
        ({"aggregates": ("min", "min")}, "aggregates"),
        ({"allowed_lateness_ms": -1}, "allowed_lateness_ms"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as error:
        SlidingWindow(**kwargs)
    assert "\n" not in str(error.value)


def test_yaml_example_builds() -> None:
    op = build(OmegaConf.load(CONF), "operator")
    assert isinstance(op, SlidingWindow)
    assert isinstance(op.aggregates, tuple) and "p99" in op.aggregates
    assert op.output_schema.names[:3] == ["sensor_id", "window_start", "window_end"]
    bad = OmegaConf.merge(OmegaConf.load(CONF), {"aggregates": ["count", "nope"]})
    with pytest.raises(ConfigError, match=r"^operator: SlidingWindow.aggregates"):
        build(bad, "operator")


@settings(max_examples=40, deadline=None)
@given(cases().flatmap(disordered), st.data())
def test_latest_revisions_match_polars_when_nothing_is_too_late(case, data) -> None:
    size_ms, slide_ms, sid, ts, value = case
    plan = data.draw(any_schedules(ts, size_ms * MS))
    logic = SlidingWindow(size_ms, slide_ms, ALL, allowed_lateness_ms=10**6).build()
    emitted, late = run(logic, sid, ts, value, plan)
    assert late == []
    got = latest(columns([b for bs in emitted for b in bs]), sessions=False)
    ref = sliding_reference(sid, ts, value, size_ms * MS, slide_ms * MS)
    assert_matches(got, frame_to_dict(ref), ALL)
