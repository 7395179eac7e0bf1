"""The windowed workload's single-pass bound for ``operators.py``: one numba kernel
doing both the tumbling windows and the 3-in-a-row alarm with dense per-sensor
state, its two halves alone, and the check that it computes what the operators do.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
from _common import timed

MS = 1_000_000
SIZE_MS = 1000
THRESHOLD, CONSECUTIVE = 80.0, 3


@numba.njit(nogil=True)
def _bound_kernel(sid, ts, val, size_ns, threshold, consecutive, si, sf, out_w, out_a):
    """Tumbling windows + N-in-a-row alarm in one pass, dense per-sensor state.

    Valid when each sensor's rows arrive in event-time order (this data): a
    sensor's window closes when its next row is in a later window. A sensor's
    state is one 64-byte cache line (``line_state``): ``si[s]`` = (window, count,
    run length, run start) as int64 and ``sf[s]`` = (sum, min, max) as float64,
    two views of the same row. Measured 1.2-1.3x faster than the same loop over
    seven per-field arrays, which touches seven lines a row.
    """
    w_sid, w_win, w_cnt, w_mean, w_min, w_max = out_w
    a_sid, a_ts, a_start, a_val = out_a
    n_w = 0
    n_a = 0
    # Window of the previous row: time-ordered data skips the integer division
    # (as the operator's kernel does).
    lo = np.int64(1)
    hi = np.int64(0)
    w = np.int64(0)
    for i in range(len(ts)):
        s = sid[i]
        t = ts[i]
        v = val[i]
        if t < lo or t >= hi:
            w = t // size_ns
            lo = w * size_ns
            hi = lo + size_ns
        if w != si[s, 0]:
            c = si[s, 1]
            if c > 0:
                w_sid[n_w] = s
                w_win[n_w] = si[s, 0]
                w_cnt[n_w] = c
                w_mean[n_w] = sf[s, 0] / c
                w_min[n_w] = sf[s, 1]
                w_max[n_w] = sf[s, 2]
                n_w += 1
            si[s, 0] = w
            si[s, 1] = 1
            sf[s, 0] = v
            sf[s, 1] = v
            sf[s, 2] = v
        else:
            si[s, 1] += 1
            sf[s, 0] += v
            sf[s, 1] = min(sf[s, 1], v)
            sf[s, 2] = max(sf[s, 2], v)
        # Branch-free run counter (values hover around the threshold).
        r = (si[s, 2] + 1) * (v > threshold)
        si[s, 2] = r
        si[s, 3] = t if r == 1 else si[s, 3]
        if r == consecutive:
            a_sid[n_a] = s
            a_ts[n_a] = t
            a_start[n_a] = si[s, 3]
            a_val[n_a] = v
            n_a += 1
    for s in range(si.shape[0]):  # end of stream: flush the open windows
        c = si[s, 1]
        if c > 0:
            w_sid[n_w] = s
            w_win[n_w] = si[s, 0]
            w_cnt[n_w] = c
            w_mean[n_w] = sf[s, 0] / c
            w_min[n_w] = sf[s, 1]
            w_max[n_w] = sf[s, 2]
            n_w += 1
            si[s, 1] = 0
    return n_w, n_a


def line_state(n: int, ints: int, floats: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sensor state as one 64-byte-aligned cache line a sensor: ``(int64[n, ints],
    float64[n, floats])``, two views of the same rows (ints first), zeroed."""
    if ints + floats > 8:
        raise ValueError("a line holds 8 fields")
    raw = np.zeros(n * 8 + 8, np.int64)
    first = (-raw.ctypes.data % 64) // 8
    rows = raw[first : first + n * 8].reshape(n, 8)
    return rows[:, :ints], rows.view(np.float64)[:, ints : ints + floats]


@numba.njit(nogil=True)
def _window_half_kernel(sid, ts, val, size_ns, state, out_mean):
    """The bound's window half alone (same loop, no alarm): the tumbling window's floor."""
    cur_win, cnt, sm, mn, mx = state
    n_w = 0
    lo = np.int64(1)
    hi = np.int64(0)
    w = np.int64(0)
    for i in range(len(ts)):
        s = sid[i]
        t = ts[i]
        v = val[i]
        if t < lo or t >= hi:
            w = t // size_ns
            lo = w * size_ns
            hi = lo + size_ns
        if w != cur_win[s]:
            if cnt[s] > 0:
                out_mean[n_w] = sm[s] / cnt[s]
                n_w += 1
            cur_win[s] = w
            cnt[s] = 1
            sm[s] = v
            mn[s] = v
            mx[s] = v
        else:
            cnt[s] += 1
            sm[s] += v
            mn[s] = min(mn[s], v)
            mx[s] = max(mx[s], v)
    return n_w


@numba.njit(nogil=True)
def _alarm_half_kernel(sid, ts, val, threshold, consecutive, run_len, run_start, out_ts):
    """The bound's alarm half alone: the threshold alarm's floor on per-sensor-ordered rows."""
    n_a = 0
    for i in range(len(ts)):
        s = sid[i]
        t = ts[i]
        r = (run_len[s] + 1) * (val[i] > threshold)
        run_len[s] = r
        run_start[s] = t if r == 1 else run_start[s]
        if r == consecutive:
            out_ts[n_a] = t
            n_a += 1
    return n_a


def half_passes(
    sid: np.ndarray, ts: np.ndarray, val: np.ndarray, sensors: int
) -> tuple[float, float]:
    """Seconds of one pass of each half of the bound (state and outputs made first)."""
    window_state = (
        np.full(sensors, np.iinfo(np.int64).min, np.int64),
        np.zeros(sensors, np.int64),
        np.zeros(sensors),
        np.zeros(sensors),
        np.zeros(sensors),
    )
    out = np.zeros(len(ts))
    w, _ = timed(lambda: _window_half_kernel(sid, ts, val, SIZE_MS * MS, window_state, out))
    runs = np.zeros(sensors, np.int64), np.zeros(sensors, np.int64)
    a, _ = timed(
        lambda: _alarm_half_kernel(sid, ts, val, THRESHOLD, CONSECUTIVE, *runs, out.view(np.int64))
    )
    return w, a


def bound_pass(
    sid: np.ndarray, ts: np.ndarray, val: np.ndarray, sensors: int
) -> tuple[float, dict[str, np.ndarray]]:
    """One timed pass of the bound kernel; state and outputs allocated (and faulted in) first."""
    size_ns = SIZE_MS * MS
    span = int((ts.max() - ts.min()) // size_ns) + 2
    si, sf = line_state(sensors, 4, 3)
    si[:, 0] = np.iinfo(np.int64).min
    n_win = sensors * span
    out_w = (
        np.zeros(n_win, np.int32),
        np.zeros(n_win, np.int64),
        np.zeros(n_win, np.int64),
        np.zeros(n_win),
        np.zeros(n_win),
        np.zeros(n_win),
    )
    n_alarm = len(ts) // CONSECUTIVE + 1
    out_a = (
        np.zeros(n_alarm, np.int32),
        np.zeros(n_alarm, np.int64),
        np.zeros(n_alarm, np.int64),
        np.zeros(n_alarm),
    )
    seconds, (n_w, n_a) = timed(
        lambda: _bound_kernel(sid, ts, val, size_ns, THRESHOLD, CONSECUTIVE, si, sf, out_w, out_a)
    )
    w_sid, w_win, w_cnt, w_mean, w_min, w_max = (a[:n_w] for a in out_w)
    a_sid, a_ts, a_start, a_val = (a[:n_a] for a in out_a)
    return seconds, {
        "w_sid": w_sid,
        "w_start": w_win * size_ns,
        "w_count": w_cnt,
        "w_mean": w_mean,
        "w_min": w_min,
        "w_max": w_max,
        "a_sid": a_sid,
        "a_ts": a_ts,
        "a_start": a_start,
        "a_val": a_val,
    }


def check_bound(bound: dict[str, np.ndarray], both: dict[str, list[pa.RecordBatch]]) -> None:
    """The bound computes what the two operators compute (raises if not)."""
    win = pa.Table.from_batches(both["windows"])
    w_start = win.column("window_start").cast(pa.int64()).to_numpy()
    w_sid = win.column("sensor_id").to_numpy()
    order = np.lexsort((bound["w_sid"], bound["w_start"]))  # the operator's output order
    np.testing.assert_array_equal(w_start, bound["w_start"][order])
    np.testing.assert_array_equal(w_sid, bound["w_sid"][order])
    for name in ("count", "min", "max"):
        np.testing.assert_array_equal(win.column(name).to_numpy(), bound[f"w_{name}"][order])
    np.testing.assert_allclose(win.column("mean").to_numpy(), bound["w_mean"][order], rtol=1e-9)
    al = pa.Table.from_batches(both["alarms"])
    order = np.lexsort((bound["a_sid"], bound["a_ts"]))
    np.testing.assert_array_equal(al.column("sensor_id").to_numpy(), bound["a_sid"][order])
    np.testing.assert_array_equal(al.column("ts").cast(pa.int64()).to_numpy(), bound["a_ts"][order])
    got_start = al.column("start_ts").cast(pa.int64()).to_numpy()
    np.testing.assert_array_equal(got_start, bound["a_start"][order])
    np.testing.assert_array_equal(al.column("value").to_numpy(), bound["a_val"][order])
