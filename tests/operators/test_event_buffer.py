"""SensorOrderBuffer releases each sensor's rows as EventTimeBuffer does."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import readings, schedules

from telepipe.markers import MAX_WATERMARK
from telepipe.operators.runtime.event_buffer import EventTimeBuffer
from telepipe.operators.runtime.sensor_order_buffer import SensorOrderBuffer


def per_sensor(rows) -> dict[int, list[tuple[int, float, int]]]:
    sid, ts, val, q = rows
    out: dict[int, list[tuple[int, float, int]]] = {}
    for s, t, v, x in zip(sid.tolist(), ts.tolist(), val.tolist(), q.tolist(), strict=True):
        out.setdefault(s, []).append((t, v, x))
    return out


@settings(max_examples=150, deadline=None)
@given(
    readings(1000, st.floats(-10, 10), max_rows=150).flatmap(
        lambda r: st.tuples(st.just(r), schedules(r[1]))
    ),
    # 8: rows moved back along their sensor's rows; -64: always the sort of them all
    # (what a release needing more than a few moves a row gets).
    st.sampled_from([8, -64]),
)
def test_sensor_order_releases_what_event_order_releases(case, moves_per_row) -> None:
    (sid, ts, val), plan = case
    q = np.arange(len(ts), dtype=np.uint8)  # the arrival number rides along
    sid, ts, val = np.asarray(sid, np.int32), np.asarray(ts, np.int64), np.asarray(val)
    a, b = EventTimeBuffer(True), SensorOrderBuffer(True)
    b.moves_per_row = moves_per_row
    for lo, hi, watermark in [*plan, (len(ts), len(ts), MAX_WATERMARK)]:
        for buf in (a, b):
            buf.admit(sid[lo:hi], ts[lo:hi], val[lo:hi], q[lo:hi])
        if watermark is None:
            continue
        got_a, got_b = a.release(watermark), b.release(watermark)
        if got_a is None:
            assert got_b is None
            continue
        assert per_sensor(got_a) == per_sensor(got_b)
        assert a.live_rows == b.live_rows
    assert a.late_rows == b.late_rows == 0


def test_sorts_only_when_a_sensor_is_out_of_order() -> None:
    buf = SensorOrderBuffer()
    none = np.empty(0, np.uint8)
    # Sensors interleaved out of global ts order, each in its own ts order: no sort.
    buf.admit(np.array([1, 2, 1, 2], np.int32), np.array([10, 5, 11, 6]), np.zeros(4), none)
    sid, ts, _, _ = buf.release(100)
    assert sid.tolist() == [1, 2, 1, 2] and ts.tolist() == [10, 5, 11, 6]
    assert buf.sorted_releases == 0
    # Sensor 1 goes back in time: its rows are put in order where they are.
    buf.admit(np.array([1, 2, 1], np.int32), np.array([120, 110, 115]), np.zeros(3), none)
    sid, ts, _, _ = buf.release(200)
    assert sid.tolist() == [1, 2, 1] and ts.tolist() == [115, 110, 120]
    assert buf.sorted_releases == 1


def test_a_sensor_far_out_of_order_is_sorted_with_the_others() -> None:
    """Sensor 7 arrives backwards (n^2/2 moves): the release sorts all rows by ts; each
    sensor's rows still come in (ts, arrival) order, equal ts by arrival."""
    n = 300
    sid = np.r_[np.full(n, 7), np.arange(n) % 5].astype(np.int32)
    ts = np.r_[np.arange(n, 0, -1) // 2, np.arange(n) // 3].astype(np.int64)
    order = np.random.default_rng(3).permutation(2 * n)
    sid, ts = sid[order], ts[order]
    buf = SensorOrderBuffer()
    buf.admit(sid, ts, np.arange(2 * n, dtype=np.float64), np.empty(0, np.uint8))
    got_sid, got_ts, got_arrival, _ = buf.release(MAX_WATERMARK)
    assert buf.sorted_releases == 1
    assert np.all(np.diff(got_ts) >= 0)  # the fallback: one stable sort by ts
    for s in (7, 0, 1, 2, 3, 4):
        want = sorted(zip(ts[sid == s].tolist(), np.flatnonzero(sid == s).tolist(), strict=True))
        mine = got_sid == s
        got = zip(got_ts[mine].tolist(), got_arrival[mine].astype(int).tolist(), strict=True)
        assert list(got) == want
