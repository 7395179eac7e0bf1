"""Plain references of the detectors: pure Python state machines, polars where it has the op.

Each reference takes readings as lists in arrival order and returns the
expected output rows as tuples, in the operator's output order. Per-sensor
logic sees readings in (ts, arrival) order. Float arithmetic follows the same
steps as the kernels, so results compare exactly.
"""

from __future__ import annotations

import math

import polars as pl


def _event_order(ts: list[int]) -> list[int]:
    return sorted(range(len(ts)), key=lambda i: ts[i])  # stable: ties in arrival order


def _by_ts_sensor(rows: list[tuple], ts_at: int = 1) -> list[tuple]:
    return sorted(rows, key=lambda r: (r[ts_at], r[0]))  # stable: ties in event order


def hysteresis_reference(sid, ts, value, op) -> list[tuple]:
    """``(sensor_id, ts, state, value)``."""
    sign = 1.0 if op.direction == "above" else -1.0
    enter, exit_ = op.enter * sign, op.exit * sign
    state: dict[int, tuple[int, int]] = {}
    out = []
    for i in _event_order(ts):
        s, v = sid[i], value[i] * sign
        active, run = state.get(s, (0, 0))
        beyond = v > enter if active == 0 else v < exit_
        if not beyond:
            state[s] = (active, 0)
            continue
        run += 1
        if run >= (op.consecutive if active == 0 else op.exit_consecutive):
            state[s] = (1 - active, 0)
            out.append((s, ts[i], 1 - active, value[i]))
        else:
            state[s] = (active, run)
    return _by_ts_sensor(out)


def rate_reference(sid, ts, value, op) -> list[tuple]:
    """``(sensor_id, ts, prev_ts, rate, value)``."""
    prev: dict[int, tuple[int, float]] = {}
    out = []
    for i in _event_order(ts):
        s, t, v = sid[i], ts[i], value[i]
        if math.isnan(v):
            continue
        if s in prev and prev[s][0] != t:
            pt, pv = prev[s]
            rate = (v - pv) / (float(t - pt) / 1e9)
            rise = op.direction != "fall" and rate > op.max_rate
            fall = op.direction != "rise" and -rate > op.max_rate
            if rise or fall:
                out.append((s, t, pt, rate, v))
        prev[s] = (t, v)
    return _by_ts_sensor(out)


def flatline_reference(sid, ts, value, op) -> list[tuple]:
    """``(sensor_id, start_ts, ts, value, readings)``."""
    runs: dict[int, list] = {}  # sensor -> [start, count, fired, min, max]
    out = []
    for i in _event_order(ts):
        s, t, v = sid[i], ts[i], value[i]
        if math.isnan(v):
            runs.pop(s, None)
            continue
        run = runs.get(s)
        if run is not None and (
            run[3] <= v <= run[4] or max(run[4], v) - min(run[3], v) <= op.tolerance
        ):
            run[1] += 1
            run[3], run[4] = min(run[3], v), max(run[4], v)
        else:
            run = runs[s] = [t, 1, False, v, v]
        duration = t - run[0] >= op.min_duration_ms * 1_000_000
        if not run[2] and run[1] >= op.min_readings and duration:
            run[2] = True
            out.append((s, run[0], t, v, run[1]))
    return _by_ts_sensor(out, ts_at=2)


def heartbeat_reference(sid, ts, value, op) -> list[tuple]:
    """``(sensor_id, last_ts, ts)``: every silence longer than the timeout, including the
    last one of each sensor (the end of the stream is an endless silence)."""
    timeout = op.timeout_ms * 1_000_000
    per_sensor: dict[int, list[int]] = {}
    for i in _event_order(ts):
        per_sensor.setdefault(sid[i], []).append(ts[i])
    out = []
    for s, times in per_sensor.items():
        for last, nxt in zip(times, [*times[1:], None], strict=True):
            if nxt is None or nxt - last > timeout:
                out.append((s, last, last + timeout))
    return sorted(out, key=lambda r: (r[2], r[0]))


def _zscore(d: float, std: float) -> float:
    if std > 0.0:
        return d / std
    if d > 0.0:
        return math.inf
    if d < 0.0:
        return -math.inf
    return math.nan


def ewma_reference(sid, ts, value, op, means: dict | None = None) -> list[tuple]:
    """``(sensor_id, ts, value, mean, std, z)``; ``means`` collects each sensor's running
    mean after every finite reading (for the polars check)."""
    state: dict[int, list] = {}  # sensor -> [count, mean, var]
    out = []
    for i in _event_order(ts):
        s, v = sid[i], value[i]
        finite = math.isfinite(v)
        if s not in state:
            if finite:
                state[s] = [1, v, 0.0]
                if means is not None:
                    means.setdefault(s, []).append(v)
            continue
        st = state[s]
        d = v - st[1]
        if st[0] >= op.warmup:
            std = math.sqrt(st[2])
            z = _zscore(d, std)
            if abs(z) > op.threshold:
                out.append((s, ts[i], v, st[1], std, z))
        if finite:
            incr = op.alpha * d
            st[1], st[2] = st[1] + incr, (1.0 - op.alpha) * (st[2] + d * incr)
            st[0] = min(st[0] + 1, op.warmup)
            if means is not None:
                means[s].append(st[1])
    return _by_ts_sensor(out)


def ewma_means_polars(sid, ts, value, alpha: float) -> dict[int, list[float]]:
    """Each sensor's running EWMA of its finite readings, by polars ``ewm_mean``."""
    df = pl.DataFrame(
        {"sensor_id": sid, "ts": ts, "value": value},
        schema={"sensor_id": pl.Int64, "ts": pl.Int64, "value": pl.Float64},
    ).with_row_index("arrival")
    df = df.filter(pl.col("value").is_finite()).sort("ts", "arrival")
    out = df.group_by("sensor_id", maintain_order=True).agg(
        pl.col("value").ewm_mean(alpha=alpha, adjust=False)
    )
    return dict(zip(out["sensor_id"].to_list(), out["value"].to_list(), strict=True))


def dedup_reference(sid, ts, value, op) -> list[tuple]:
    """``(sensor_id, ts, value, quality)`` by polars ``unique`` on (sensor_id, ts)."""
    df = pl.DataFrame(
        {"sensor_id": sid, "ts": ts, "value": value},
        schema={"sensor_id": pl.Int32, "ts": pl.Int64, "value": pl.Float64},
    ).with_row_index("arrival")
    kept = df.unique(["sensor_id", "ts"], keep=op.keep, maintain_order=True).sort("ts", "arrival")
    return [(s, t, v, 0) for s, t, v in kept.select("sensor_id", "ts", "value").iter_rows()]


def resample_reference(sid, ts, value, op) -> list[tuple]:
    """``(sensor_id, ts, value, filled)`` sorted by (releasing bucket, sensor_id, ts)."""
    size = op.interval_ms * 1_000_000
    buckets: dict[int, dict[int, list[float]]] = {}
    for i in _event_order(ts):
        buckets.setdefault(sid[i], {}).setdefault(ts[i] // size, []).append(value[i])
    rows = []  # (trigger, sensor, k, value, filled)
    for s, by_k in buckets.items():
        prev = None
        for k in sorted(by_k):
            vals = by_k[k]
            if op.how == "mean":
                total = 0.0
                for x in vals:
                    total += x
                v = total / len(vals)
            else:
                v = vals[-1]
            if prev is not None and op.fill != "none" and 0 < k - prev[0] - 1 <= op.max_gap:
                k0, v0 = prev
                steps = float(k - k0)
                for j in range(1, k - k0):
                    if op.fill == "previous":
                        f = v0
                    elif op.fill == "nan":
                        f = math.nan
                    else:
                        f = v0 + (v - v0) * float(j) / steps
                    rows.append((k, s, k0 + j, f, True))
            rows.append((k, s, k, v, False))
            prev = (k, v)
    rows.sort(key=lambda r: r[:3])
    return [(s, k * size, v, filled) for _, s, k, v, filled in rows]


def resample_polars(sid, ts, value, op) -> pl.DataFrame:
    """The buckets (no fill) by polars ``group_by_dynamic``: sensor_id, k, value."""
    size = op.interval_ms * 1_000_000
    agg = pl.col("value").mean() if op.how == "mean" else pl.col("value").last()
    df = pl.DataFrame(
        {"sensor_id": sid, "ts": ts, "value": value},
        schema={"sensor_id": pl.Int64, "ts": pl.Int64, "value": pl.Float64},
    ).with_row_index("arrival")
    return (
        df.sort("sensor_id", "ts", "arrival")
        .group_by_dynamic("ts", every=f"{size}i", group_by="sensor_id", closed="left")
        .agg(agg)
        .sort("sensor_id", "ts")
    )


REFERENCES = {
    "hysteresis_alarm": hysteresis_reference,
    "rate_of_change": rate_reference,
    "flatline": flatline_reference,
    "heartbeat_timeout": heartbeat_reference,
    "ewma_zscore": ewma_reference,
    "dedup": dedup_reference,
    "resample": resample_reference,
}
