"""numba kernels of the detectors: numpy in, numpy out, no Arrow or Rx.

Every detector keeps its per-sensor state in one kind of open-addressing table
(power-of-two capacity, linear probing, hash of ``_kernels._hash_kernel``):
``used uint8[cap]``, ``k_sid int32[cap]``, ``ints int64[cap, ni]`` and
``floats float64[cap, nf]``; a slot is empty iff ``used == 0``. A kernel that
inserts stops before the load would exceed 0.5 and returns the row it stopped
at; the caller grows the table (``_table_rebuild_kernel``) and resumes there.
Removal is a rebuild that copies the slots marked ``keep``.

Row kernels take rows already in event-time order (ts, then arrival) and report
the events they fire as row indices plus per-event columns, at most one event
per row unless stated.
"""

from __future__ import annotations

import math

import numpy as np

from telepipe.operators.runtime._key_kernels import INT64_MAX, _hash_kernel, _jit

# ------------------------------------------------------------------ table


@_jit
def _find_slot(used, k_sid, s):
    """The slot holding sensor ``s``, or the empty slot where it would go."""
    mask = used.shape[0] - 1
    h = _hash_kernel(s, 0) & mask
    while used[h] != 0 and k_sid[h] != s:
        h = (h + 1) & mask
    return h


@_jit
def _table_rebuild_kernel(used, k_sid, ints, floats, keep, new_cap):
    """A fresh table of ``new_cap`` slots holding the used slots with ``keep != 0``."""
    n_used_arr = np.zeros(new_cap, np.uint8)
    n_sid = np.zeros(new_cap, np.int32)
    n_ints = np.zeros((new_cap, ints.shape[1]), np.int64)
    n_floats = np.zeros((new_cap, floats.shape[1]), np.float64)
    n_used = 0
    for j in range(used.shape[0]):
        if used[j] == 0 or keep[j] == 0:
            continue
        h = _find_slot(n_used_arr, n_sid, k_sid[j])
        n_used_arr[h] = 1
        n_sid[h] = k_sid[j]
        n_ints[h, :] = ints[j, :]
        n_floats[h, :] = floats[j, :]
        n_used += 1
    return (n_used_arr, n_sid, n_ints, n_floats), n_used


# ------------------------------------------------------------------ buffer


@_jit
def _hysteresis_kernel(rows, start, params, table, n_used, out, n_out):
    """Enter when ``n_enter`` consecutive values are beyond ``enter``, exit after
    ``n_exit`` consecutive values beyond ``exit_`` (``sign`` -1 mirrors both).

    ints: ``[active, run]``. NaN breaks a run. Returns ``(next_row, n_used, n_out)``.
    """
    sid, _, val = rows
    enter, exit_, sign, n_enter, n_exit = params
    used, k_sid, ints, _ = table
    out_row, out_state = out
    cap = used.shape[0]
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        v = val[i] * sign
        h = _find_slot(used, k_sid, s)
        if used[h] == 0:
            if not v > enter:
                continue  # an absent sensor is inactive with no run
            if (n_used + 1) * 2 > cap:
                return np.int64(i), n_used, n_out
            used[h] = 1
            k_sid[h] = s
            ints[h, 0] = 0
            ints[h, 1] = 0
            n_used += 1
        active = ints[h, 0]
        beyond = v > enter if active == 0 else v < exit_
        if not beyond:
            ints[h, 1] = 0
            continue
        r = ints[h, 1] + 1
        if r >= (n_enter if active == 0 else n_exit):
            ints[h, 0] = 1 - active
            ints[h, 1] = 0
            out_row[n_out] = i
            out_state[n_out] = 1 - active
            n_out += 1
        else:
            ints[h, 1] = r
    return sid.shape[0], n_used, n_out


# -------------------------------------------------------- rate of change


@_jit
def _rate_kernel(rows, start, params, table, n_used, out, n_out):
    """Rate ``(v - v_prev) / dt`` per second against the sensor's previous non-NaN reading.

    ints: ``[prev_ts]``, floats: ``[prev_value]``. ``mode`` 0 both directions,
    1 rises only, 2 falls only; fires when the rate's magnitude exceeds
    ``max_rate``. A reading at the previous one's ts is not compared; it becomes
    the previous reading.
    """
    sid, ts, val = rows
    max_rate, mode = params
    used, k_sid, ints, floats = table
    out_row, out_rate, out_prev = out
    cap = used.shape[0]
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        v = val[i]
        if v != v:
            continue
        s = sid[i]
        t = ts[i]
        h = _find_slot(used, k_sid, s)
        if used[h] == 0:
            if (n_used + 1) * 2 > cap:
                return np.int64(i), n_used, n_out
            used[h] = 1
            k_sid[h] = s
            n_used += 1
        else:
            pt = ints[h, 0]
            if t != pt:
                dt = np.float64(np.uint64(t) - np.uint64(pt))
                rate = (v - floats[h, 0]) / (dt / 1e9)
                if (mode != 2 and rate > max_rate) or (mode != 1 and -rate > max_rate):
                    out_row[n_out] = i
                    out_rate[n_out] = rate
                    out_prev[n_out] = pt
                    n_out += 1
        ints[h, 0] = t
        floats[h, 0] = v
    return sid.shape[0], n_used, n_out


# --------------------------------------------------------------- flatline


@_jit
def _flatline_kernel(rows, start, params, table, n_used, out, n_out):
    """Runs of readings whose values stay in a band of width ``tolerance``.

    ints: ``[start_ts, count, fired]``, floats: ``[min, max]``. A value extends
    the run if it lies within the band or the widened band is still no wider
    than ``tolerance``; otherwise it starts a new run. NaN ends the run. A run
    fires once, at the first reading where it holds ``>= min_readings`` readings
    spanning ``>= min_duration`` ns.
    """
    sid, ts, val = rows
    min_readings, min_duration, tolerance = params
    used, k_sid, ints, floats = table
    out_row, out_start, out_count = out
    cap = used.shape[0]
    dur = np.uint64(min_duration)
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        v = val[i]
        h = _find_slot(used, k_sid, s)
        if used[h] == 0:
            if v != v:
                continue
            if (n_used + 1) * 2 > cap:
                return np.int64(i), n_used, n_out
            used[h] = 1
            k_sid[h] = s
            ints[h, 1] = 0
            n_used += 1
        if v != v:
            ints[h, 1] = 0
            continue
        t = ts[i]
        c = ints[h, 1]
        mn = floats[h, 0]
        mx = floats[h, 1]
        if c > 0 and ((v >= mn and v <= mx) or max(mx, v) - min(mn, v) <= tolerance):
            c += 1
            floats[h, 0] = min(mn, v)
            floats[h, 1] = max(mx, v)
        else:
            c = 1
            ints[h, 0] = t
            ints[h, 2] = 0
            floats[h, 0] = v
            floats[h, 1] = v
        ints[h, 1] = c
        if ints[h, 2] == 0 and c >= min_readings and np.uint64(t) - np.uint64(ints[h, 0]) >= dur:
            ints[h, 2] = 1
            out_row[n_out] = i
            out_start[n_out] = ints[h, 0]
            out_count[n_out] = c
            n_out += 1
    return sid.shape[0], n_used, n_out


# -------------------------------------------------------------- heartbeat


@_jit
def _deadline(last, timeout):
    """``last + timeout``, or INT64_MAX (never passed) when it does not fit."""
    if last > INT64_MAX - timeout:
        return INT64_MAX
    return last + timeout


@_jit
def _heartbeat_kernel(rows, start, timeout, table, n_used, out, n_out):
    """A reading after a silence longer than ``timeout`` reports that silence.

    ints: ``[last_ts]``. A sensor absent from the table has no open silence (never
    seen, or its silence was reported by ``_heartbeat_scan_kernel``).
    """
    sid, ts, _ = rows
    used, k_sid, ints, _ = table
    out_sid, out_last = out
    cap = used.shape[0]
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        t = ts[i]
        h = _find_slot(used, k_sid, s)
        if used[h] == 0:
            if (n_used + 1) * 2 > cap:
                return np.int64(i), n_used, n_out
            used[h] = 1
            k_sid[h] = s
            n_used += 1
        elif t > _deadline(ints[h, 0], timeout):
            out_sid[n_out] = s
            out_last[n_out] = ints[h, 0]
            n_out += 1
        ints[h, 0] = t
    return sid.shape[0], n_used, n_out


@_jit
def _heartbeat_scan_kernel(used, k_sid, ints, watermark, timeout, keep, out_sid, out_last):
    """Report every sensor whose deadline is below ``watermark``; clear its ``keep``."""
    n_out = 0
    for h in range(used.shape[0]):
        keep[h] = 1
        if used[h] != 0 and watermark > _deadline(ints[h, 0], timeout):
            keep[h] = 0
            out_sid[n_out] = k_sid[h]
            out_last[n_out] = ints[h, 0]
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
def _ewma_kernel(rows, start, params, table, n_used, out, n_out):
    """Score each reading against its sensor's EWMA mean/std before the reading.

    ints: ``[count (capped at warmup)]``, floats: ``[mean, var]``. A reading is
    scored once ``warmup`` finite readings came before; fires when
    ``|z| > threshold``. Non-finite values are scored but never update the state.
    Update (West/Finch): ``d = v - mean; mean += alpha*d; var = (1-alpha)*(var + alpha*d*d)``.
    """
    sid, _, val = rows
    alpha, threshold, warmup = params
    used, k_sid, ints, floats = table
    out_row, out_mean, out_std, out_z = out
    cap = used.shape[0]
    keep = 1.0 - alpha
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        v = val[i]
        finite = math.isfinite(v)
        h = _find_slot(used, k_sid, s)
        if used[h] == 0:
            if not finite:
                continue
            if (n_used + 1) * 2 > cap:
                return np.int64(i), n_used, n_out
            used[h] = 1
            k_sid[h] = s
            ints[h, 0] = 1
            floats[h, 0] = v
            floats[h, 1] = 0.0
            n_used += 1
            continue
        mean = floats[h, 0]
        var = floats[h, 1]
        d = v - mean
        if ints[h, 0] >= warmup:
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
            floats[h, 0] = mean + incr
            floats[h, 1] = keep * (var + d * incr)
            if ints[h, 0] < warmup:
                ints[h, 0] += 1
    return sid.shape[0], n_used, n_out


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


@_jit
def _resample_close(h, table, params, out, n_out):
    """Emit slot ``h``'s open bucket, after the grid points of the gap before it.

    ints: ``[k_cur, count, k_prev, has_prev]``, floats: ``[sum, last, v_prev]``.
    ``fill`` 0 none, 1 previous, 2 nan, 3 linear.
    """
    _, k_sid, ints, floats = table
    how_mean, fill, max_gap = params
    out_sid, out_k, out_val, out_filled, out_trig = out
    s = k_sid[h]
    k = ints[h, 0]
    value = floats[h, 0] / ints[h, 1] if how_mean else floats[h, 1]
    if fill != 0 and ints[h, 3] != 0:
        k0 = ints[h, 2]
        v0 = floats[h, 2]
        gap = k - k0 - 1
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
                out_k[n_out] = k0 + j
                out_val[n_out] = f
                out_filled[n_out] = 1
                out_trig[n_out] = k
                n_out += 1
    out_sid[n_out] = s
    out_k[n_out] = k
    out_val[n_out] = value
    out_filled[n_out] = 0
    out_trig[n_out] = k
    n_out += 1
    ints[h, 1] = 0
    ints[h, 2] = k
    ints[h, 3] = 1
    floats[h, 2] = value
    return n_out


@_jit
def _room(ints, h, fill, max_gap):
    """Output rows closing slot ``h`` may take."""
    if fill == 0 or ints[h, 3] == 0:
        return 1
    return 1 + min(max(ints[h, 0] - ints[h, 2] - 1, 0), max_gap)


@_jit
def _resample_kernel(rows, start, interval, params, table, n_used, out, n_out):
    """Bucket rows into grid cells ``floor(ts / interval)``; a row of a later cell
    closes the sensor's open bucket. Returns ``(next_row, n_used, n_out)``; the
    caller grows the table if full, else the output, and resumes.
    """
    sid, ts, val = rows
    fill, max_gap = params[1], params[2]
    used, k_sid, ints, floats = table
    room = out[0].shape[0]
    cap = used.shape[0]
    for i in range(np.uint64(start), np.uint64(sid.shape[0])):  # unsigned: see _key_kernels
        s = sid[i]
        v = val[i]
        k = ts[i] // interval
        h = _find_slot(used, k_sid, s)
        if used[h] == 0:
            if (n_used + 1) * 2 > cap:
                return np.int64(i), n_used, n_out
            used[h] = 1
            k_sid[h] = s
            ints[h, 1] = 0
            ints[h, 3] = 0
            n_used += 1
        elif ints[h, 1] != 0 and ints[h, 0] != k:
            if n_out + _room(ints, h, fill, max_gap) > room:
                return np.int64(i), n_used, n_out
            n_out = _resample_close(h, table, params, out, n_out)
        if ints[h, 1] == 0:
            ints[h, 0] = k
            ints[h, 1] = 1
            floats[h, 0] = v
        else:
            ints[h, 1] += 1
            floats[h, 0] += v
        floats[h, 1] = v
    return sid.shape[0], n_used, n_out


@_jit
def _resample_scan_kernel(start, below, table, params, out, n_out):
    """Close every open bucket of a cell ``< below`` from slot ``start`` on.

    Returns ``(next_slot, n_out)``; ``next_slot < cap`` means: grow the output, resume.
    """
    used, _, ints, _ = table
    fill, max_gap = params[1], params[2]
    room = out[0].shape[0]
    for h in range(start, used.shape[0]):
        if used[h] == 0 or ints[h, 1] == 0 or ints[h, 0] >= below:
            continue
        if n_out + _room(ints, h, fill, max_gap) > room:
            return h, n_out
        n_out = _resample_close(h, table, params, out, n_out)
    return used.shape[0], n_out
