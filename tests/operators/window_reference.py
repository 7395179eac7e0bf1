"""Plain references of the sliding (polars) and session (pure Python) windows."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
from hypothesis import strategies as st

from telepipe.markers import MAX_WATERMARK

EXACT = ("sensor_id", "window_start", "window_end", "count", "min", "max", "first", "last")
CLOSE = ("sum", "mean", "std")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
ALL = ("count", "sum", "mean", "min", "max", "std", "first", "last", *QUANTILES)


def sliding_reference(
    sensor_id: list[int], ts: list[int], value: list[float], size_ns: int, slide_ns: int
) -> pl.DataFrame:
    """Every row exploded to the windows ``k`` with ``k*slide <= ts < k*slide + size``,
    grouped by ``(sensor_id, k)`` in polars. Sorted by (window_start, sensor_id)."""
    df = pl.DataFrame(
        {"sensor_id": sensor_id, "ts": ts, "value": value, "seq": range(len(ts))},
        schema={"sensor_id": pl.Int32, "ts": pl.Int64, "value": pl.Float64, "seq": pl.Int64},
    )
    exploded = (
        df.with_columns(
            k=pl.int_ranges(
                (pl.col("ts") - size_ns).floordiv(slide_ns) + 1,
                pl.col("ts").floordiv(slide_ns) + 1,
            )
        )
        .explode("k")
        .drop_nulls("k")
        .sort("ts", "seq")
    )
    return _finish(
        exploded.group_by("sensor_id", "k").agg(*_aggs()),
        start=pl.col("k") * slide_ns,
        end=pl.col("k") * slide_ns + size_ns,
    )


def _aggs() -> list[pl.Expr]:
    v = pl.col("value")
    return [
        pl.len().cast(pl.Int64).alias("count"),
        v.sum().alias("sum"),
        v.mean().alias("mean"),
        v.min().alias("min"),
        v.max().alias("max"),
        v.std(ddof=1).fill_null(math.nan).alias("std"),
        v.first().alias("first"),
        v.last().alias("last"),
        v.abs().mean().alias("abs_mean"),
        v.alias("values"),
    ]


def _finish(df: pl.DataFrame, start: pl.Expr, end: pl.Expr) -> pl.DataFrame:
    return df.with_columns(window_start=start, window_end=end).sort("window_start", "sensor_id")


def session_reference(
    sensor_id: list[int], ts: list[int], value: list[float], gap_ns: int
) -> list[dict[str, object]]:
    """Sessions in pure Python: each sensor's rows in (ts, arrival) order, a new session
    when the next ts is ``>= gap`` after the last. Sorted by (window_start, sensor_id)."""
    by_sensor: dict[int, list[int]] = {}
    for i in sorted(range(len(ts)), key=lambda i: ts[i]):  # stable
        by_sensor.setdefault(sensor_id[i], []).append(i)
    sessions = []
    for s, rows in by_sensor.items():
        current: list[int] = []
        for i in rows:
            if current and ts[i] - ts[current[-1]] >= gap_ns:
                sessions.append(_session_row(s, current, ts, value, gap_ns))
                current = []
            current.append(i)
        sessions.append(_session_row(s, current, ts, value, gap_ns))
    sessions.sort(key=lambda r: (r["window_start"], r["sensor_id"]))
    return sessions


def _session_row(s: int, rows: list[int], ts, value, gap_ns: int) -> dict[str, object]:
    vals = [value[i] for i in rows]
    n = len(vals)
    finite = [v for v in vals if not math.isnan(v)]
    total = math.fsum(vals) if all(math.isfinite(v) for v in vals) else sum(vals)
    if n > 1 and all(math.isfinite(v) for v in vals):
        mean = total / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    else:
        std = math.nan
    return {
        "sensor_id": s,
        "window_start": ts[rows[0]],
        "window_end": ts[rows[-1]] + gap_ns,
        "count": n,
        "sum": total,
        "mean": total / n,
        "min": min(finite) if finite else math.nan,
        "max": max(finite) if finite else math.nan,
        "std": std,
        "first": vals[0],
        "last": vals[-1],
        "abs_mean": math.fsum(abs(v) for v in vals) / n if finite == vals else math.inf,
        "values": vals,
    }


def lower_quantile(values: list[float], q: float) -> float:
    """numpy ``quantile(method="lower")`` of the non-NaN values (NaN if none)."""
    finite = np.asarray([v for v in values if not math.isnan(v)], np.float64)
    if finite.size == 0:
        return math.nan
    return float(np.quantile(finite, q, method="lower"))


def assert_matches(got: dict[str, np.ndarray], ref: dict[str, list], aggregates) -> None:
    """Exact for counts, bounds, min/max/first/last; 1e-9 relative to the mean magnitude for
    sum/mean/std; quantiles within the sketch's relative accuracy of ``lower_quantile``."""
    from telepipe.operators.windows._accumulators import SKETCH_ALPHA, SKETCH_MIN_ABS

    n = len(ref["sensor_id"])
    if n == 0:
        assert got == {} or len(got["sensor_id"]) == 0
        return
    for name in ("sensor_id", "window_start", "window_end", *aggregates):
        want = np.asarray(ref[name] if name not in QUANTILES else ref["values"], dtype=object)
        have = got[name]
        assert len(have) == n, name
        if name in EXACT:
            np.testing.assert_array_equal(have, np.asarray(ref[name]), err_msg=name)
        elif name in CLOSE:
            want = np.asarray(ref[name], np.float64)
            scale = np.asarray(ref["abs_mean"], np.float64)
            if name == "sum":
                scale = scale * np.asarray(ref["count"])
            nan = np.isnan(want)
            np.testing.assert_array_equal(np.isnan(have), nan, err_msg=name)
            same = have[~nan] == want[~nan]
            tol = 1e-9 * np.maximum(np.abs(want[~nan]), scale[~nan])
            if name == "std":
                # Squares of values below ~1e-154 are subnormal: each update rounds the
                # sum of squares to 2**-1074, which a std of that size feels.
                cnt = np.asarray(ref["count"], np.float64)[~nan]
                with np.errstate(divide="ignore", invalid="ignore"):
                    sub = 2.0**-1074 * cnt / (2 * np.maximum(cnt - 1, 1) * want[~nan])
                tol = tol + np.where(want[~nan] > 0, sub, 0.0)
            with np.errstate(invalid="ignore"):
                err = np.abs(have[~nan] - want[~nan])
            assert (same | (err <= tol)).all(), (name, have, want)
        else:
            for h, values in zip(have, want, strict=True):
                x = lower_quantile(values, QUANTILES[name])
                if math.isnan(x) or math.isinf(x):
                    assert h == x or (math.isnan(h) and math.isnan(x)), (name, h, x)
                else:
                    assert abs(h - x) <= SKETCH_ALPHA * (1 + 1e-9) * abs(x) + SKETCH_MIN_ABS, (
                        name,
                        h,
                        x,
                    )


def frame_to_dict(df: pl.DataFrame) -> dict[str, list]:
    return {name: df[name].to_list() for name in df.columns}


def rows_to_dict(rows: list[dict[str, object]]) -> dict[str, list]:
    keys = rows[0].keys() if rows else ("sensor_id", "window_start", "window_end", "count")
    return {k: [r[k] for r in rows] for k in keys}


# ------------------------------------------------------------ test support


@st.composite
def any_schedules(draw, ts: list[int], span_ns: int):
    """A random split of rows into batches, each followed by an optional watermark near
    the batch's last ts (so later rows may be late or update fired windows):
    ``[(lo, hi, watermark | None)]``."""
    n = len(ts)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=8))) | {0, n})
    offsets = st.none() | st.integers(-span_ns, 3 * span_ns)
    plan = []
    for lo, hi in itertools.pairwise(cuts):
        offset = draw(offsets)
        plan.append((lo, hi, None if offset is None or hi == 0 else ts[hi - 1] + offset))
    return plan


@st.composite
def resplit(draw, plan):
    """The same rows and watermarks, batches cut further (no watermark at new cuts)."""
    out = []
    for lo, hi, watermark in plan:
        inner = sorted(set(draw(st.lists(st.integers(lo, hi), max_size=3))) | {lo, hi})
        pieces = list(itertools.pairwise(inner))
        out += [(a, b, None) for a, b in pieces[:-1]] + [(*pieces[-1], watermark)]
    return out


def run(logic, sid, ts, value, plan, flush: bool = True):
    """Drive ``logic``; returns ``(outputs per watermark, late batches)``."""
    from reference import readings_batch

    emitted, late = [], []
    for lo, hi, watermark in plan:
        assert logic.on_batch(readings_batch(sid[lo:hi], ts[lo:hi], value[lo:hi])) == []
        late += logic.take_late()
        if watermark is not None:
            emitted.append(logic.on_watermark(watermark))
            late += logic.take_late()
    if flush:
        emitted.append(logic.on_watermark(MAX_WATERMARK))
        late += logic.take_late()
    return emitted, late


def assert_same_runs(a, b, close: bool = False) -> None:
    """Same outputs per watermark (values exact, or within 1e-9 when ``close``)."""
    from reference import columns

    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert [t.num_rows for t in x] == [t.num_rows for t in y]
        assert all(s.schema == t.schema for s, t in zip(x, y, strict=True))
        got, want = columns(x), columns(y)
        for name in got:
            if close and name in CLOSE:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-9, err_msg=name)
            else:
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@st.composite
def disordered(draw, case):
    """``case`` (ending with sid, ts, value) with its rows maybe in a random order."""
    *head, sid, ts, value = case
    if draw(st.booleans()):
        order = draw(st.permutations(range(len(ts))))
        sid, ts, value = ([x[i] for i in order] for x in (sid, ts, value))
    return (*head, sid, ts, value)


def latest(got: dict[str, np.ndarray], sessions: bool) -> dict[str, np.ndarray]:
    """The rows not superseded by a later revision, sorted by (window_start, sensor_id).

    A sliding window's revision replaces the row with the same (sensor, start); a
    session's replaces the earlier rows of that sensor it overlaps (it grew or merged).
    """
    if not got:
        return got
    keep: list[int] = []
    for i in range(len(got["sensor_id"])):
        s, a, b = got["sensor_id"][i], got["window_start"][i], got["window_end"][i]
        keep = [
            j
            for j in keep
            if got["sensor_id"][j] != s
            or (
                (got["window_end"][j] <= a or b <= got["window_start"][j])
                if sessions
                else got["window_start"][j] != a
            )
        ]
        keep.append(i)
    rows = np.asarray(keep, np.int64)
    order = np.lexsort((got["sensor_id"][rows], got["window_start"][rows]))
    return {k: v[rows[order]] for k, v in got.items()}


def fired_output(op, emitted, plan) -> dict[str, np.ndarray]:
    """The columns a run emitted, checking each firing: at most one batch per advancing
    watermark, the operator's schema, and every window emitted at the first watermark
    at or past its end."""
    from reference import columns

    from telepipe.markers import MAX_WATERMARK

    marks = [w for _, _, w in plan if w is not None] + [MAX_WATERMARK]
    outputs = []
    current = -(2**63)
    for mark, batches in zip(marks, emitted, strict=True):
        advanced = mark > current
        current = max(current, mark)
        assert len(batches) <= (1 if advanced else 0)
        outputs += [(current, b) for b in batches]
        for b in batches:
            assert b.schema == op.output_schema and b.num_rows > 0
    got = columns([b for _, b in outputs])
    # Each firing is sorted by (window_start, sensor_id); firings follow time.
    emitted_at = [w for w, b in outputs for _ in range(b.num_rows)]
    seen_marks = sorted({max(marks[: i + 1]) for i in range(len(marks))})
    for end, at in zip(got.get("window_end", []), emitted_at, strict=True):
        assert at == min(w for w in seen_marks if w >= end)
    return got
