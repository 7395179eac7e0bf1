"""SensorOrderBuffer releases each sensor's rows as EventTimeBuffer does."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import readings, schedules

from telepipe.markers import MAX_WATERMARK
from telepipe.operators.event_buffer import EventTimeBuffer
from telepipe.operators.sensor_order_buffer import SensorOrderBuffer


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
    )
)
def test_sensor_order_releases_what_event_order_releases(case) -> None:
    (sid, ts, val), plan = case
    q = np.arange(len(ts), dtype=np.uint8)  # the arrival number rides along
    sid, ts, val = np.asarray(sid, np.int32), np.asarray(ts, np.int64), np.asarray(val)
    a, b = EventTimeBuffer(True), SensorOrderBuffer(True)
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
    # Sensor 1 goes back in time: the released rows come sorted by (ts, arrival).
    buf.admit(np.array([1, 2, 1], np.int32), np.array([120, 110, 115]), np.zeros(3), none)
    sid, ts, _, _ = buf.release(200)
    assert ts.tolist() == [110, 115, 120]
    assert buf.sorted_releases == 1
