"""A second single-pass bound for ``operators.py``: the windowed workload in ONE numba
kernel with the guarantees the two operators give, so that the gap to it is what the
operator architecture costs (two operators, Rx, Arrow, per-batch Python) and the gap
between the two bounds is what the guarantees cost.

Like the operators and unlike ``_bound.py``'s kernel, it takes the rows batch by batch
with the source's watermark after each, and per row: checks lateness against the
watermark, maps the sensor id to a dense slot (an id table grown on first sight),
checks that the sensor's rows arrive in ts order (it counts the rows that do not; the
operators would repair them, and on this data there are none), holds each closed
window and each alarm until the watermark passes it, and emits a sensor's open
window as soon as the watermark passes its end. Outputs are pre-allocated, as in
the other bound.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
from _bound import CONSECUTIVE, MS, SIZE_MS, THRESHOLD, line_state
from _common import timed

from telepipe.markers import MAX_WATERMARK, Watermark
from telepipe.operators.runtime.readings import readings_arrays

INT64_MIN = np.iinfo(np.int64).min


@numba.njit(nogil=True)
def _guarded_kernel(sid, ts, val, watermark, params, ids, state, held, out_w, out_a, fill):
    """One batch (rows arrived before ``watermark``'s marker), then that watermark.

    A slot's state is one cache line (``_bound.line_state``): ``si[k]`` = (window,
    count, run length, run start, last ts), ``sf[k]`` = (sum, min, max).
    """
    size_ns, threshold, consecutive = params
    slot_of, keys = ids
    si, sf = state
    h_slot, h_win, h_cnt, h_sum, h_min, h_max, p_slot, p_ts, p_start, p_val = held
    w_sid, w_win, w_cnt, w_mean, w_min, w_max = out_w
    a_sid, a_ts, a_start, a_val = out_a
    n_slots, n_held, n_pend, n_w = fill[0], fill[1], fill[2], fill[3]
    n_a, late, disorder, previous = fill[4], fill[5], fill[6], fill[7]
    lo = np.int64(1)
    hi = np.int64(0)
    w = np.int64(0)
    for i in range(ts.shape[0]):
        t = ts[i]
        if t < previous:  # behind the watermark already passed: late for both
            late += 1
            continue
        s = sid[i]
        k = slot_of[s] if 0 <= s < slot_of.shape[0] else -2
        if k == -1:
            k = n_slots
            slot_of[s] = k
            keys[k] = s
            n_slots += 1
        elif k == -2:
            raise ValueError("sensor id outside the id table")
        if t < si[k, 4]:
            disorder += 1
        si[k, 4] = t
        v = val[i]
        if t < lo or t >= hi:
            w = t // size_ns
            lo = w * size_ns
            hi = lo + size_ns
        if w != si[k, 0]:
            c = si[k, 1]
            if c > 0:  # the sensor moved on: its window waits for the watermark
                h_slot[n_held] = k
                h_win[n_held] = si[k, 0]
                h_cnt[n_held] = c
                h_sum[n_held] = sf[k, 0]
                h_min[n_held] = sf[k, 1]
                h_max[n_held] = sf[k, 2]
                n_held += 1
            si[k, 0] = w
            si[k, 1] = 1
            sf[k, 0] = v
            sf[k, 1] = v
            sf[k, 2] = v
        else:
            si[k, 1] += 1
            sf[k, 0] += v
            sf[k, 1] = min(sf[k, 1], v)
            sf[k, 2] = max(sf[k, 2], v)
        r = si[k, 2]
        above = np.int64(v > threshold)
        si[k, 2] = min(r + 1, consecutive) * above
        start = t if r == 0 else si[k, 3]
        si[k, 3] = start
        if (r == consecutive - 1) & (above == 1):
            p_slot[n_pend] = k
            p_ts[n_pend] = t
            p_start[n_pend] = start
            p_val[n_pend] = v
            n_pend += 1
    # The watermark: held windows and open ones that ended, alarms below it.
    kept = 0
    for j in range(n_held):
        if (h_win[j] + 1) * size_ns <= watermark:
            w_sid[n_w] = keys[h_slot[j]]
            w_win[n_w] = h_win[j]
            w_cnt[n_w] = h_cnt[j]
            w_mean[n_w] = h_sum[j] / h_cnt[j]
            w_min[n_w] = h_min[j]
            w_max[n_w] = h_max[j]
            n_w += 1
        else:
            h_slot[kept] = h_slot[j]
            h_win[kept] = h_win[j]
            h_cnt[kept] = h_cnt[j]
            h_sum[kept] = h_sum[j]
            h_min[kept] = h_min[j]
            h_max[kept] = h_max[j]
            kept += 1
    n_held = kept
    for k in range(n_slots):
        c = si[k, 1]
        if c > 0 and (si[k, 0] + 1) * size_ns <= watermark:
            w_sid[n_w] = keys[k]
            w_win[n_w] = si[k, 0]
            w_cnt[n_w] = c
            w_mean[n_w] = sf[k, 0] / c
            w_min[n_w] = sf[k, 1]
            w_max[n_w] = sf[k, 2]
            n_w += 1
            si[k, 1] = 0
    kept = 0
    for j in range(n_pend):
        if p_ts[j] < watermark:
            a_sid[n_a] = keys[p_slot[j]]
            a_ts[n_a] = p_ts[j]
            a_start[n_a] = p_start[j]
            a_val[n_a] = p_val[j]
            n_a += 1
        else:
            p_slot[kept] = p_slot[j]
            p_ts[kept] = p_ts[j]
            p_start[kept] = p_start[j]
            p_val[kept] = p_val[j]
            kept += 1
    n_pend = kept
    fill[0], fill[1], fill[2], fill[3] = n_slots, n_held, n_pend, n_w
    fill[4], fill[5], fill[6], fill[7] = n_a, late, disorder, max(previous, watermark)


def guarded_pass(
    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]], sensors: int
) -> tuple[float, dict[str, np.ndarray]]:
    """One timed pass over ``(sid, ts, val, watermark after)`` batches, the last watermark
    being the end of input; state and outputs allocated (and faulted in) first."""
    n = sum(len(b[1]) for b in batches)
    all_ts = [b[1] for b in batches if len(b[1])]
    span = int((max(t.max() for t in all_ts) - min(t.min() for t in all_ts)) // MS)
    params = (np.int64(SIZE_MS * MS), THRESHOLD, np.int64(CONSECUTIVE))
    ids = (np.full(max(65_536, 16 * sensors), -1, np.int64), np.zeros(sensors, np.int64))
    state = line_state(sensors, 5, 3)
    state[0][:, 0] = INT64_MIN  # no window yet
    state[0][:, 4] = INT64_MIN  # no ts yet
    biggest = max(len(b[1]) for b in batches) * 4
    held = (
        np.zeros(sensors * 4, np.int64), np.zeros(sensors * 4, np.int64),
        np.zeros(sensors * 4, np.int64), np.zeros(sensors * 4), np.zeros(sensors * 4),
        np.zeros(sensors * 4), np.zeros(biggest, np.int64), np.zeros(biggest, np.int64),
        np.zeros(biggest, np.int64), np.zeros(biggest),
    )  # fmt: skip
    n_win = sensors * (span // SIZE_MS + 2)
    out_w = (
        np.zeros(n_win, np.int64), np.zeros(n_win, np.int64), np.zeros(n_win, np.int64),
        np.zeros(n_win), np.zeros(n_win), np.zeros(n_win),
    )  # fmt: skip
    n_alarm = n // CONSECUTIVE + 1
    out_a = (np.zeros(n_alarm, np.int64), np.zeros(n_alarm, np.int64),
             np.zeros(n_alarm, np.int64), np.zeros(n_alarm))  # fmt: skip
    fill = np.array([0, 0, 0, 0, 0, 0, 0, INT64_MIN], np.int64)

    def run() -> None:
        for sid, ts, val, watermark in batches:
            _guarded_kernel(sid, ts, val, watermark, params, ids, state, held, out_w, out_a, fill)

    seconds, _ = timed(run)
    n_w, n_a, late, disorder = (int(fill[i]) for i in (3, 4, 5, 6))
    if late or disorder:
        raise AssertionError(f"{late} late and {disorder} out-of-order rows: not this bound's data")
    w_sid, w_win, w_cnt, w_mean, w_min, w_max = (a[:n_w] for a in out_w)
    a_sid, a_ts, a_start, a_val = (a[:n_a] for a in out_a)
    return seconds, {
        "w_sid": w_sid, "w_start": w_win * (SIZE_MS * MS), "w_count": w_cnt,
        "w_mean": w_mean, "w_min": w_min, "w_max": w_max,
        "a_sid": a_sid, "a_ts": a_ts, "a_start": a_start, "a_val": a_val,
    }  # fmt: skip


def guarded_batches(items: list[object]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """The operators' items as ``(sid, ts, val, watermark after)``, ending with the end of
    input (the flush a completed flow gives the operators)."""
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
    for item in items:
        if isinstance(item, pa.RecordBatch):
            out.append((*readings_arrays(item), INT64_MIN))
        elif isinstance(item, Watermark) and out:
            out[-1] = (*out[-1][:3], int(item.ts_ns))
    out.append((np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0), int(MAX_WATERMARK)))
    return out
