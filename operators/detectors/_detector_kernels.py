"""numba kernels of the detectors: numpy in, numpy out, no Arrow or Rx.

Every detector keeps its per-sensor state in arrays indexed by the sensor's
``KeyIndex`` slot (``base.KeyedState``): ``state = (lookup, present, ints, floats)``,
``present uint8[slots]`` (0: the sensor has no state, as if never seen),
``ints int64[slots, ni]`` and ``floats float64[slots, nf]``. A row of a sensor
without a slot (or slot state) yet stops the kernel, which returns the row: the
caller adds the sensors and resumes there (``KeyedState.run``).

Row kernels take rows already in event-time order (ts, then arrival) and report
the events they fire as row indices plus per-event columns, at most one event
per row unless stated.
"""

from __future__ import annotations

import math

import numpy as np

from telepipe.operators.runtime._key_kernels import _hash_kernel, _jit, _slot_kernel
from telepipe.operators.runtime._time_kernels import _deadline


@_jit
def _hysteresis_kernel(rows, start, params, state, out, n_out):
    """Enter when ``n_enter`` consecutive values are beyond ``enter``, exit after
    ``n_exit`` consecutive values beyond ``exit_`` (``sign`` -1 mirrors both).

    ints: ``[active, run]``. NaN breaks a run. Returns ``(next_row, n_out)``.
    """
    sid, _, val = rows
    enter, exit_, sign, n_enter, n_exit = params
    (dense, h_key, h_slot), present, ints, _ = state
    out_row, out_state = out
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        v = val[i] * sign
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= present.shape[0]:
            return np.int64(i), n_out
        if present[k] == 0:
            if not v > enter:
                continue  # an absent sensor is inactive with no run
            present[k] = 1
            ints[k, 0] = 0
            ints[k, 1] = 0
        active = ints[k, 0]
        beyond = v > enter if active == 0 else v < exit_
        if not beyond:
            ints[k, 1] = 0
            continue
        r = ints[k, 1] + 1
        if r >= (n_enter if active == 0 else n_exit):
            ints[k, 0] = 1 - active
            ints[k, 1] = 0
            out_row[n_out] = i
            out_state[n_out] = 1 - active
            n_out += 1
        else:
            ints[k, 1] = r
    return sid.shape[0], n_out


# -------------------------------------------------------- rate of change


@_jit
def _rate_kernel(rows, start, params, state, out, n_out):
    """Rate ``(v - v_prev) / dt`` per second against the sensor's previous non-NaN reading.

    ints: ``[prev_ts]``, floats: ``[prev_value]``. ``mode`` 0 both directions,
    1 rises only, 2 falls only; fires when the rate's magnitude exceeds
    ``max_rate``. A reading at the previous one's ts is not compared; it becomes
    the previous reading.
    """
    sid, ts, val = rows
    max_rate, mode = params
    (dense, h_key, h_slot), present, ints, floats = state
    out_row, out_rate, out_prev = out
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        v = val[i]
        if v != v:
            continue
        s = sid[i]
        t = ts[i]
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= present.shape[0]:
            return np.int64(i), n_out
        if present[k] == 0:
            present[k] = 1
        else:
            pt = ints[k, 0]
            if t != pt:
                dt = np.float64(np.uint64(t) - np.uint64(pt))
                rate = (v - floats[k, 0]) / (dt / 1e9)
                if (mode != 2 and rate > max_rate) or (mode != 1 and -rate > max_rate):
                    out_row[n_out] = i
                    out_rate[n_out] = rate
                    out_prev[n_out] = pt
                    n_out += 1
        ints[k, 0] = t
        floats[k, 0] = v
    return sid.shape[0], n_out


# --------------------------------------------------------------- flatline


@_jit
def _flatline_kernel(rows, start, params, state, out, n_out):
    """Runs of readings whose values stay in a band of width ``tolerance``.

    ints: ``[start_ts, count, fired]``, floats: ``[min, max]``. A value extends
    the run if it lies within the band or the widened band is still no wider
    than ``tolerance``; otherwise it starts a new run. NaN ends the run. A run
    fires once, at the first reading where it holds ``>= min_readings`` readings
    spanning ``>= min_duration`` ns.
    """
    sid, ts, val = rows
    min_readings, min_duration, tolerance = params
    (dense, h_key, h_slot), present, ints, floats = state
    out_row, out_start, out_count = out
    dur = np.uint64(min_duration)
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        v = val[i]
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= present.shape[0]:
            return np.int64(i), n_out
        if present[k] == 0:
            if v != v:
                continue
            present[k] = 1
            ints[k, 1] = 0
        if v != v:
            ints[k, 1] = 0
            continue
        t = ts[i]
        c = ints[k, 1]
        mn = floats[k, 0]
        mx = floats[k, 1]
        if c > 0 and ((v >= mn and v <= mx) or max(mx, v) - min(mn, v) <= tolerance):
            c += 1
            floats[k, 0] = min(mn, v)
            floats[k, 1] = max(mx, v)
        else:
            c = 1
            ints[k, 0] = t
            ints[k, 2] = 0
            floats[k, 0] = v
            floats[k, 1] = v
        ints[k, 1] = c
        if ints[k, 2] == 0 and c >= min_readings and np.uint64(t) - np.uint64(ints[k, 0]) >= dur:
            ints[k, 2] = 1
            out_row[n_out] = i
            out_start[n_out] = ints[k, 0]
            out_count[n_out] = c
            n_out += 1
    return sid.shape[0], n_out


# -------------------------------------------------------------- heartbeat


@_jit
def _heartbeat_kernel(rows, start, timeout, state, out, n_out):
    """A reading after a silence longer than ``timeout`` reports that silence.

    ints: ``[last_ts]``. A sensor without state has no open silence (never seen, or
    its silence was reported by ``_heartbeat_scan_kernel``).
    """
    sid, ts, _ = rows
    (dense, h_key, h_slot), present, ints, _ = state
    out_sid, out_last = out
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        t = ts[i]
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= present.shape[0]:
            return np.int64(i), n_out
        if present[k] == 0:
            present[k] = 1
        elif t > _deadline(ints[k, 0], timeout):
            out_sid[n_out] = s
            out_last[n_out] = ints[k, 0]
            n_out += 1
        ints[k, 0] = t
    return sid.shape[0], n_out


@_jit
def _heartbeat_scan_kernel(keys, present, ints, watermark, timeout, out_sid, out_last):
    """Report every sensor whose deadline is below ``watermark`` and take its state."""
    n_out = 0
    for k in range(keys.shape[0]):
        if present[k] != 0 and watermark > _deadline(ints[k, 0], timeout):
            present[k] = 0
            out_sid[n_out] = keys[k]
            out_last[n_out] = ints[k, 0]
            n_out += 1
    return n_out


# ------------------------------------------------------------ EWMA z-score


@_jit
def _zscore(d, std):
    if std > 0.0:
        return d / std
    if d > 0.0:
        return math.inf
    if d < 0.0:
        return -math.inf
    return math.nan


@_jit
def _ewma_kernel(rows, start, params, state, out, n_out):
    """Score each reading against its sensor's EWMA mean/std before the reading.

    ints: ``[count (capped at warmup)]``, floats: ``[mean, var]``. A reading is
    scored once ``warmup`` finite readings came before; fires when
    ``|z| > threshold``. Non-finite values are scored but never update the state.
    Update (West/Finch): ``d = v - mean; mean += alpha*d; var = (1-alpha)*(var + alpha*d*d)``.
    """
    sid, _, val = rows
    alpha, threshold, warmup = params
    (dense, h_key, h_slot), present, ints, floats = state
    out_row, out_mean, out_std, out_z = out
    keep = 1.0 - alpha
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        v = val[i]
        finite = math.isfinite(v)
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= present.shape[0]:
            return np.int64(i), n_out
        if present[k] == 0:
            if not finite:
                continue
            present[k] = 1
            ints[k, 0] = 1
            floats[k, 0] = v
            floats[k, 1] = 0.0
            continue
        mean = floats[k, 0]
        var = floats[k, 1]
        d = v - mean
        if ints[k, 0] >= warmup:
            std = math.sqrt(var)
            z = _zscore(d, std)
            if abs(z) > threshold:
                out_row[n_out] = i
                out_mean[n_out] = mean
                out_std[n_out] = std
                out_z[n_out] = z
                n_out += 1
        if finite:
            incr = alpha * d
            floats[k, 0] = mean + incr
            floats[k, 1] = keep * (var + d * incr)
            if ints[k, 0] < warmup:
                ints[k, 0] += 1
    return sid.shape[0], n_out


# ------------------------------------------------------------------ dedup


@_jit
def _dedup_kernel(sid, ts, keep_last):
    """Keep mask of rows (sorted by ts, then arrival) without duplicate (sid, ts).

    Keeps the first (or last) arrival of each key. Rows of one ts are contiguous;
    each run of equal ts is checked with a scratch hash set stamped by run.
    """
    n = ts.shape[0]
    keep = np.ones(n, np.uint8)
    longest = 0
    a = 0
    while a < n:
        b = a + 1
        while b < n and ts[b] == ts[a]:
            b += 1
        longest = max(longest, b - a)
        a = b
    if longest < 2:
        return keep, 0
    cap = 16
    while cap < 2 * longest:
        cap *= 2
    mask = cap - 1
    stamp = np.full(cap, -1, np.int64)
    key = np.empty(cap, np.int32)
    dup = 0
    a = 0
    while a < n:
        b = a + 1
        while b < n and ts[b] == ts[a]:
            b += 1
        if b - a > 1:
            for j in range(b - a):
                r = b - 1 - j if keep_last else a + j
                s = sid[r]
                h = _hash_kernel(s, 0) & mask
                while stamp[h] == a and key[h] != s:
                    h = (h + 1) & mask
                if stamp[h] == a:
                    keep[r] = 0
                    dup += 1
                else:
                    stamp[h] = a
                    key[h] = s
        a = b
    return keep, dup


# --------------------------------------------------------------- resample

NEED_KEY = 1  # a sensor without a slot (or slot state) yet
NEED_ROOM = 2  # the output is full


@_jit
def _resample_close(k, s, ints, floats, params, out, n_out):
    """Emit slot ``k``'s open bucket (sensor ``s``), after the grid points of the gap
    before it.

    ints: ``[k_cur, count, k_prev, has_prev]``, floats: ``[sum, last, v_prev]``.
    ``fill`` 0 none, 1 previous, 2 nan, 3 linear.
    """
    how_mean, fill, max_gap = params
    out_sid, out_k, out_val, out_filled, out_trig = out
    g = ints[k, 0]
    value = floats[k, 0] / ints[k, 1] if how_mean else floats[k, 1]
    if fill != 0 and ints[k, 3] != 0:
        g0 = ints[k, 2]
        v0 = floats[k, 2]
        gap = g - g0 - 1
        if 0 < gap <= max_gap:
            steps = np.float64(gap + 1)
            for j in range(1, gap + 1):
                if fill == 1:
                    f = v0
                elif fill == 2:
                    f = math.nan
                else:
                    f = v0 + (value - v0) * np.float64(j) / steps
                out_sid[n_out] = s
                out_k[n_out] = g0 + j
                out_val[n_out] = f
                out_filled[n_out] = 1
                out_trig[n_out] = g
                n_out += 1
    out_sid[n_out] = s
    out_k[n_out] = g
    out_val[n_out] = value
    out_filled[n_out] = 0
    out_trig[n_out] = g
    n_out += 1
    ints[k, 1] = 0
    ints[k, 2] = g
    ints[k, 3] = 1
    floats[k, 2] = value
    return n_out


@_jit
def _room(ints, k, fill, max_gap):
    """Output rows closing slot ``k`` may take."""
    if fill == 0 or ints[k, 3] == 0:
        return 1
    return 1 + min(max(ints[k, 0] - ints[k, 2] - 1, 0), max_gap)


@_jit
def _resample_kernel(rows, start, interval, params, state, out, n_out):
    """Bucket rows into grid cells ``floor(ts / interval)``; a row of a later cell
    closes the sensor's open bucket. Returns ``(next_row, n_out, need)``: ``need``
    ``NEED_KEY`` or ``NEED_ROOM`` says what to do before resuming at ``next_row``.
    """
    sid, ts, val = rows
    fill, max_gap = params[1], params[2]
    (dense, h_key, h_slot), present, ints, floats = state
    room = out[0].shape[0]
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        v = val[i]
        g = ts[i] // interval
        # The slot lookup written out, as _key_kernels says why.
        k = -1
        if 0 <= s < dense.shape[0]:
            k = dense[s]
        if k < 0:
            k = _slot_kernel(s, dense, h_key, h_slot)
        if k < 0 or k >= present.shape[0]:
            return np.int64(i), n_out, NEED_KEY
        if present[k] == 0:
            present[k] = 1
            ints[k, 1] = 0
            ints[k, 3] = 0
        elif ints[k, 1] != 0 and ints[k, 0] != g:
            if n_out + _room(ints, k, fill, max_gap) > room:
                return np.int64(i), n_out, NEED_ROOM
            n_out = _resample_close(k, s, ints, floats, params, out, n_out)
        if ints[k, 1] == 0:
            ints[k, 0] = g
            ints[k, 1] = 1
            floats[k, 0] = v
        else:
            ints[k, 1] += 1
            floats[k, 0] += v
        floats[k, 1] = v
    return sid.shape[0], n_out, 0


@_jit
def _resample_scan_kernel(start, below, keys, state, params, out, n_out):
    """Close every open bucket of a cell ``< below`` from slot ``start`` on (``keys``:
    slot -> sensor id). Returns ``(next_slot, n_out)``; ``next_slot < len(keys)`` means:
    grow the output, resume.
    """
    _, present, ints, floats = state
    fill, max_gap = params[1], params[2]
    room = out[0].shape[0]
    for k in range(start, keys.shape[0]):
        if present[k] == 0 or ints[k, 1] == 0 or ints[k, 0] >= below:
            continue
        if n_out + _room(ints, k, fill, max_gap) > room:
            return k, n_out
        n_out = _resample_close(k, keys[k], ints, floats, params, out, n_out)
    return keys.shape[0], n_out
