"""The detectors against plain references, under random batch splits, watermarks and restores."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pyarrow as pa
import pytest
import reactivex
from detector_reference import (
    REFERENCES,
    ewma_means_polars,
    ewma_reference,
    resample_polars,
    resample_reference,
)
from helpers import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from reference import columns, drive, readings, readings_batch, schedules

from telepipe.config import build
from telepipe.errors import ConfigError, SchemaError, SnapshotError
from telepipe.markers import MAX_WATERMARK, Watermark
from telepipe.operators.detectors.dedup import Dedup
from telepipe.operators.detectors.ewma_zscore import EwmaZScore
from telepipe.operators.detectors.flatline import Flatline
from telepipe.operators.detectors.heartbeat_timeout import HeartbeatTimeout
from telepipe.operators.detectors.hysteresis_alarm import HysteresisAlarm
from telepipe.operators.detectors.rate_of_change import RateOfChange
from telepipe.operators.detectors.resample import Resample
from telepipe.operators.runtime.snapshot import Snapshot, restore

LEVELS = [0.0, 1.0, 2.0, 7.5]
VALUES = st.sampled_from([*LEVELS, 1.0, 2.0, math.nan, math.inf, -math.inf])
NUMBERS = st.sampled_from([math.nan, math.inf]) | st.floats(-100, 100, allow_nan=False)


@st.composite
def hysteresis(draw):
    lo, hi = sorted(draw(st.lists(st.sampled_from(LEVELS), min_size=2, max_size=2)))
    direction = draw(st.sampled_from(["above", "below"]))
    enter, exit_ = (hi, lo) if direction == "above" else (lo, hi)
    n, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return HysteresisAlarm(enter, exit_, direction, n, m)


OPTIONS = {
    "hysteresis_alarm": (hysteresis(), VALUES),
    "rate_of_change": (
        st.builds(
            RateOfChange,
            st.sampled_from([0.0, 0.5, 1e9, 1e12]),
            st.sampled_from(["both", "rise", "fall"]),
        ),
        VALUES | NUMBERS,
    ),
    "flatline": (
        st.builds(
            Flatline,
            st.integers(2, 4),
            st.sampled_from([0, 1, 1000, 5000]),
            st.sampled_from([0.0, 0.5, 1.0]),
        ),
        VALUES,
    ),
    "heartbeat_timeout": (st.builds(HeartbeatTimeout, st.sampled_from([1, 1000, 3000])), VALUES),
    "ewma_zscore": (
        st.builds(
            EwmaZScore,
            st.sampled_from([0.1, 0.5, 1.0]),
            st.sampled_from([0.0, 0.5, 2.0]),
            st.integers(1, 3),
        ),
        VALUES | NUMBERS,
    ),
    "dedup": (st.builds(Dedup, st.sampled_from(["first", "last"])), NUMBERS),
    "resample": (
        st.builds(
            Resample,
            st.sampled_from([1, 1000, 3000]),
            st.sampled_from(["last", "mean"]),
            st.sampled_from(["none", "previous", "nan", "linear"]),
            st.sampled_from([0, 2, 100]),
        ),
        VALUES | NUMBERS,
    ),
}
NAMES = sorted(OPTIONS)


@st.composite
def cases(draw, name: str):
    options, values = OPTIONS[name]
    op = draw(options)
    unit = draw(st.sampled_from([1, 1000, 10**9]))
    sid, ts, value = draw(readings(unit, values, max_rows=100))
    return op, sid, ts, value, draw(schedules(ts))


def as_rows(batches: list[pa.RecordBatch]) -> list[tuple]:
    """Output rows as tuples, NaN replaced by a marker so rows compare with ``==``."""
    got = columns(batches)
    if not got:
        return []
    cols = [[_plain(x) for x in got[name].tolist()] for name in got]
    return list(zip(*cols, strict=True))


def _plain(x: object) -> object:
    return "nan" if isinstance(x, float) and math.isnan(x) else x


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_matches_reference_under_any_batching(name: str, data: st.DataObject) -> None:
    op, sid, ts, value, plan = data.draw(cases(name))
    logic = op.build()
    emitted = drive(logic, sid, ts, value, plan)
    assert logic.late_rows == 0
    current = -(2**63)
    outputs = []
    for watermark, batches in emitted:
        advanced = watermark > current
        current = max(current, watermark)
        assert len(batches) <= (1 if advanced else 0)
        for batch in batches:
            assert batch.schema == op.output_schema and batch.num_rows > 0
        outputs += batches
    want = [tuple(_plain(x) for x in row) for row in REFERENCES[name](sid, ts, value, op)]
    assert as_rows(outputs) == want


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_snapshot_restore_mid_stream(name: str, data: st.DataObject) -> None:
    op, sid, ts, value, plan = data.draw(cases(name))
    cut = data.draw(st.integers(0, len(plan)))
    first = op.build()
    for lo, hi, watermark in plan[:cut]:
        first.on_batch(readings_batch(sid[lo:hi], ts[lo:hi], value[lo:hi]))
        if watermark is not None:
            first.on_watermark(watermark)
    second = op.build()
    second.restore(pickle.loads(pickle.dumps(first.snapshot())))
    a = [b for _, bs in drive(first, sid, ts, value, plan[cut:]) for b in bs]
    b = [b for _, bs in drive(second, sid, ts, value, plan[cut:]) for b in bs]
    assert as_rows(a) == as_rows(b)
    assert first.snapshot().keys() == second.snapshot().keys()


def test_restore_refuses_other_options() -> None:
    snap = Snapshot.take(Resample(interval_ms=10).build())
    message = r"^step 'r': the Resample snapshot was taken with interval_ms=10, the step has interval_ms=20$"
    with pytest.raises(SnapshotError, match=message):
        restore(Resample(interval_ms=20).build(), snap, "r")


@pytest.mark.parametrize("name", NAMES)
def test_state_stays_bounded_on_an_endless_stream(name: str) -> None:
    logic = {
        "hysteresis_alarm": HysteresisAlarm(1.0, 0.0),
        "rate_of_change": RateOfChange(1.0),
        "flatline": Flatline(3),
        "heartbeat_timeout": HeartbeatTimeout(1),
        "ewma_zscore": EwmaZScore(),
        "dedup": Dedup(),
        "resample": Resample(1, "mean", "linear"),
    }[name].build()
    rng = np.random.default_rng(1)
    sensors = rng.integers(-(2**31), 2**31 - 1, 20)
    n, step = 2000, 1_000_000  # 2000 readings per ms of event time
    for k in range(60):
        ts = k * step + rng.integers(0, step, n)
        sid = sensors[rng.integers(0, 20 if k % 7 else 10, n)]  # some sensors fall silent
        logic.on_batch(readings_batch(sid, ts, rng.choice([0.0, 2.0, 2.0], n)))
        logic.on_watermark(k * step)
        state = logic.state
        assert state.keys.n <= 20 and len(state.present) <= 64 and state.ints.shape[0] <= 64
        assert logic.buffer.live_rows <= 2 * n and logic.buffer.capacity <= 8 * n


@pytest.mark.parametrize("name", NAMES)
def test_yaml_example_builds_and_runs(name: str) -> None:
    op = build(OmegaConf.load(ROOT / "conf" / "operator" / f"{name}.yaml"), "operator")
    assert type(op).__module__ == f"telepipe.operators.detectors.{name}"
    batch = readings_batch([1, 2, 1, 1], [0, 1, 10**9, 10**10], [90.0, 1.0, 95.0, 10.0])
    items, errors = [], []
    reactivex.from_iterable([batch, Watermark(5), batch.slice(0, 0)]).pipe(op).subscribe(
        items.append, errors.append
    )
    assert errors == []
    assert Watermark(5) in items
    for item in items:
        assert isinstance(item, Watermark) or item.schema == op.output_schema


@pytest.mark.parametrize("name", NAMES)
def test_errors_in_the_logic_reach_on_error(name: str) -> None:
    op = build(OmegaConf.load(ROOT / "conf" / "operator" / f"{name}.yaml"), "operator")
    good = readings_batch([1], [1], [1.0])
    items, errors = [], []
    reactivex.from_iterable([good, good.drop_columns(["ts"]), Watermark(10)]).pipe(op).subscribe(
        items.append, errors.append
    )
    assert items == [] and len(errors) == 1 and isinstance(errors[0], SchemaError)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: HysteresisAlarm(1.0, 2.0), "exit"),
        (lambda: HysteresisAlarm(2.0, 1.0, "below"), "exit"),
        (lambda: HysteresisAlarm(math.nan, 1.0), "enter"),
        (lambda: HysteresisAlarm(1.0, 0.0, "up"), "direction"),
        (lambda: HysteresisAlarm(1.0, 0.0, consecutive=0), "consecutive"),
        (lambda: HysteresisAlarm(1.0, 0.0, exit_consecutive=1.5), "exit_consecutive"),
        (lambda: RateOfChange(-1.0), "max_rate"),
        (lambda: RateOfChange(1.0, "down"), "direction"),
        (lambda: Flatline(1), "min_readings"),
        (lambda: Flatline(3, -1), "min_duration_ms"),
        (lambda: Flatline(3, 0, math.inf), "tolerance"),
        (lambda: HeartbeatTimeout(0), "timeout_ms"),
        (lambda: EwmaZScore(alpha=0.0), "alpha"),
        (lambda: EwmaZScore(threshold=-1.0), "threshold"),
        (lambda: EwmaZScore(warmup=True), "warmup"),
        (lambda: Dedup("any"), "keep"),
        (lambda: Resample(0), "interval_ms"),
        (lambda: Resample(how="max"), "how"),
        (lambda: Resample(fill="zero"), "fill"),
        (lambda: Resample(max_gap=-1), "max_gap"),
    ],
)
def test_config_errors_name_the_field(make, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"\.{field} must") as error:
        make()
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- semantics


def run(op, sid, ts, value, watermarks=(MAX_WATERMARK,)) -> list[tuple]:
    logic = op.build()
    logic.on_batch(readings_batch(sid, ts, value))
    return as_rows([b for w in watermarks for b in logic.on_watermark(w)])


def test_hysteresis_below_with_debounce() -> None:
    op = HysteresisAlarm(enter=10.0, exit=20.0, direction="below", consecutive=2)
    got = run(op, [1] * 7, [5, 1, 2, 3, 4, 6, 7], [5.0, 9.0, 15.0, 9.0, 8.0, 21.0, 9.0])
    # 9 | 15 (neither) | 9, 8 -> enter at 4 | 5 (still active) | 21 -> exit at 6 | 9
    assert got == [(1, 4, 1, 8.0), (1, 6, 0, 21.0)]


def test_heartbeat_fires_on_watermark_progress_alone() -> None:
    logic = HeartbeatTimeout(timeout_ms=1).build()
    logic.on_batch(readings_batch([1, 2], [0, 500_000], [1.0, 1.0]))
    assert logic.on_watermark(1_000_000) == []  # 1 ms of silence is not more than 1 ms
    assert as_rows(logic.on_watermark(1_000_001)) == [(1, 0, 1_000_000)]
    assert as_rows(logic.on_watermark(3_000_000)) == [(2, 500_000, 1_500_000)]
    assert logic.on_watermark(9_000_000) == [] and not logic.state.present.any()  # fired once
    logic.on_batch(readings_batch([1], [9_000_000], [1.0]))  # re-armed
    assert as_rows(logic.on_watermark(10_000_001)) == [(1, 9_000_000, 10_000_000)]


def test_flatline_needs_count_and_duration() -> None:
    op = Flatline(min_readings=3, min_duration_ms=1, tolerance=0.1)
    ms = 1_000_000
    got = run(
        op, [4] * 6, [0, ms // 2, ms // 2 + 1, ms, 2 * ms, 3 * ms], [5, 5.05, 4.98, 5.1, 9, 9]
    )
    # run 5, 5.05, 4.98 (3 readings, 0.5 ms) then 5.1 widens the band to 0.12: new run.
    assert got == []
    got = run(op, [4] * 4, [0, 1, 2, ms], [5.0, 5.05, 4.98, 5.0])
    assert got == [(4, 0, ms, 5.0, 4)]


def test_dedup_counts_and_late_copies() -> None:
    logic = Dedup(keep="last").build()
    logic.on_batch(readings_batch([1, 1, 2, 1], [5, 5, 5, 6], [1.0, 2.0, 3.0, 4.0]))
    assert as_rows(logic.on_watermark(6)) == [(1, 5, 2.0, 0), (2, 5, 3.0, 0)]
    logic.on_batch(readings_batch([1, 1], [5, 6], [9.0, 5.0]))
    assert logic.late_rows == 1 and logic.duplicates == 1
    assert as_rows(logic.on_watermark(MAX_WATERMARK)) == [(1, 6, 5.0, 0)]
    assert logic.duplicates == 2


def test_resample_fill_policies() -> None:
    ms = 1_000_000
    sid, ts, value = [3, 3, 3, 3], [0, 200_000, 3 * ms, 3 * ms + 1], [1.0, 2.0, 8.0, 6.0]
    base = [(3, 0, 1.5, False), (3, 3 * ms, 7.0, False)]
    for fill, gap in [
        ("previous", [1.5, 1.5]),
        ("linear", [1.5 + 5.5 / 3, 1.5 + 5.5 * 2 / 3]),
        ("none", []),
    ]:
        got = run(Resample(1, "mean", fill), sid, ts, value)
        want = [base[0], *[(3, (i + 1) * ms, v, True) for i, v in enumerate(gap)], base[1]]
        assert got == want, fill
    got = run(Resample(1, "last", "nan", max_gap=1), sid, ts, value)
    assert got == [(3, 0, 2.0, False), (3, 3 * ms, 6.0, False)]  # a gap of 2 > max_gap
    logic = Resample(1).build()
    logic.on_batch(readings_batch(sid, ts, value))
    assert as_rows(logic.on_watermark(ms - 1)) == []  # the bucket [0, 1 ms) is not complete
    assert as_rows(logic.on_watermark(ms)) == [(3, 0, 2.0, False)]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_resample_buckets_match_polars_group_by_dynamic(data: st.DataObject) -> None:
    op = data.draw(
        st.builds(Resample, st.sampled_from([1000, 3000]), st.sampled_from(["last", "mean"]))
    )
    sid, ts, value = data.draw(readings(10**9, st.floats(-100, 100), max_rows=80))
    ours = sorted(
        (s, t // (op.interval_ms * 1_000_000), v)
        for s, t, v, _ in resample_reference(sid, ts, value, op)
    )
    theirs = resample_polars(sid, ts, value, op)
    assert [(s, k) for s, k, _ in ours] == list(
        zip(theirs["sensor_id"], (theirs["ts"] // (op.interval_ms * 1_000_000)), strict=True)
    )
    np.testing.assert_allclose(
        [v for *_, v in ours], theirs["value"].to_numpy(), rtol=1e-9, atol=1e-9
    )


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([0.1, 0.5, 1.0]), readings(1000, NUMBERS, max_rows=80))
def test_ewma_reference_means_match_polars_ewm_mean(alpha: float, rows) -> None:
    sid, ts, value = rows
    means: dict[int, list[float]] = {}
    ewma_reference(sid, ts, value, EwmaZScore(alpha=alpha), means)
    theirs = ewma_means_polars(sid, ts, value, alpha)
    assert means.keys() == theirs.keys()
    for s, m in means.items():
        np.testing.assert_allclose(m, theirs[s], rtol=1e-9, atol=1e-9)
