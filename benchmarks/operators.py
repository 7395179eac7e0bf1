"""CEP operators vs their references and a single-pass bound, on the same data, in one run.

Data: ``--sensors`` sensors (ids 0..n-1) at 1 kHz each, ts jittered by up to
0.2 ms (so rows are out of order across sensors but each sensor's rows are in
event-time order), a sine + noise value (runs above 80 for the alarms), some
stuck sensors (flatline), some silent ones (heartbeat, sessions) and ~0.5%
resent rows (dedup). They are cut into 64k-row READINGS batches with a
watermark after each (running max ts - 50 ms, as the source does).

Each repeat measures, for every operator (``CepPattern``: three readings above 80, then
one below 20, within 1 s):

(a) the operator through RxPY ``reactivex.from_iterable(items).pipe(Op(...))``,
    batches and watermarks, outputs kept;
(b) its reference: polars where polars has the operation (group_by for the
    tumbling/sliding windows, ``ewm_mean`` for the EWMA, ``unique`` for dedup,
    ``group_by_dynamic`` for resample), else the pure-Python reference of
    ``tests/operators`` run on a subsample of whole sensors (``--ref-rows``
    rows) and scaled by rows (marked ``py*``);

and, for the windowed workload (tumbling 1 s count/mean/min/max + ThresholdAlarm
3 in a row over 80), (c) ONE numba kernel doing both in a single pass with
dense per-sensor state (no hashing, no buffering, outputs pre-allocated: the
best case), next to the two real operators fanned out from one ``Subject`` as the
demo graph does. The bound's outputs are checked against the operators' in the
first repeat (windows: count/min/max exact, mean to 1e-9; alarms exact).

Two single-pass bounds are measured. The *trusting* bound (``_bound.py``) takes
the whole input in one call and trusts it: no late rows, each sensor in ts
order, ids below the sensor count. On input that breaks any of these it gives
wrong windows and alarms, so it is the cost of the arithmetic alone. The
*guarded* bound (``_guarded_bound.py``) is the same single pass, batch by batch,
doing what the operators must do to be right on any input: the lateness check,
the id table, the per-sensor order check, holding closed windows and alarms for
the watermark. It is the bound the target is stated against: the two operators
at >= 0.8x of it (each program it compares must compute the operators' result).

Prints a table, then as the LAST line one JSON object (medians of the repeats;
ratios computed within each repeat, then the median taken).

    .venv/bin/python benchmarks/operators.py --readings 4000000 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import reactivex
from _bound import CONSECUTIVE, MS, SIZE_MS, THRESHOLD, bound_pass, check_bound, half_passes
from _common import REPO, emit, machine, medians, rate, timed
from _guarded_bound import guarded_batches, guarded_pass
from demo_throughput import to_batches, with_watermarks
from reactivex.subject import Subject

from telepipe.operators.detectors.dedup import Dedup
from telepipe.operators.detectors.ewma_zscore import EwmaZScore
from telepipe.operators.detectors.flatline import Flatline
from telepipe.operators.detectors.heartbeat_timeout import HeartbeatTimeout
from telepipe.operators.detectors.hysteresis_alarm import HysteresisAlarm
from telepipe.operators.detectors.rate_of_change import RateOfChange
from telepipe.operators.detectors.resample import Resample
from telepipe.operators.detectors.threshold_alarm.alarm import ThresholdAlarm
from telepipe.operators.patterns.pattern import Pattern
from telepipe.operators.runtime.thread_boundary import ThreadBoundary
from telepipe.operators.windows.session import SessionWindow
from telepipe.operators.windows.sliding import SlidingWindow
from telepipe.operators.windows.tumbling import TumblingWindow

sys.path.insert(0, str(REPO / "tests" / "operators"))
from detector_reference import (
    flatline_reference,
    heartbeat_reference,
    hysteresis_reference,
    rate_reference,
)
from pattern_reference import pattern_reference
from reference import alarms_reference
from window_reference import session_reference

T0_NS = 1_700_000_000 * 1_000_000_000  # an aligned epoch second
TICK_NS = MS  # 1 kHz per sensor
JITTER_NS = 200_000  # < half a tick: each sensor's rows stay in event-time order
# The windowed workload's target: both operators / the guarded bound (see above).
TARGET = 0.8
SLIDE = SlidingWindow(size_ms=2000, slide_ms=500)
SESSION = SessionWindow(gap_ms=100)
HYSTERESIS = HysteresisAlarm(enter=80.0, exit=70.0, consecutive=3, exit_consecutive=3)
RATE = RateOfChange(max_rate=20_000.0)
FLATLINE = Flatline(min_readings=100)
HEARTBEAT = HeartbeatTimeout(timeout_ms=100)
EWMA = EwmaZScore(alpha=0.1, threshold=3.0, warmup=10)
DEDUP = Dedup(keep="first")
RESAMPLE = Resample(interval_ms=100, how="mean")
# A spike then a drop: three readings above 80 (not necessarily in a row), then one
# below 20, within 1 s of the first (the sine's swing takes ~0.6 s).
PATTERN = (
    Pattern.begin("high", "value > 80")
    .times(3)
    .followed_by("low", "value < 20")
    .within(ms=1000)
    .operator("spike_then_drop")
)


# ------------------------------------------------------------------------ data


def make_data(readings: int, sensors: int, seed: int = 7) -> pl.DataFrame:
    """``readings`` rows in arrival order: sensor_id, ts_ns, value, quality."""
    rng = np.random.default_rng(seed)
    ticks = readings // sensors + 2
    sid = np.tile(np.arange(sensors, dtype=np.int32), ticks)
    tick = np.repeat(np.arange(ticks, dtype=np.int64), sensors)
    ts = T0_NS + tick * TICK_NS + rng.integers(0, JITTER_NS, len(sid))
    phase = rng.uniform(0, 2 * np.pi, sensors)[sid]
    t_s = tick / 1000.0
    val = 50.0 + 35.0 * np.sin(2 * np.pi * t_s / 2.0 + phase) + rng.normal(0, 4.0, len(sid))
    # Stuck sensors (every 50th, 300 ms in the middle of the first second).
    stuck = (sid % 50 == 0) & (tick >= 400) & (tick < 700)
    val[stuck] = 42.0
    # Silent sensors (every 40th + 1, 300 ms of the third second): heartbeat, sessions.
    keep = ~((sid % 40 == 1) & (tick >= 2000) & (tick < 2300))
    sid, ts, val = sid[keep], ts[keep], val[keep]
    # ~0.5% of rows resent right after the original (same sensor, ts, value).
    copies = 1 + (rng.random(len(sid)) < 0.005)
    sid, ts, val = np.repeat(sid, copies), np.repeat(ts, copies), np.repeat(val, copies)
    n = min(readings, len(sid))
    return pl.DataFrame(
        {
            "sensor_id": sid[:n],
            "ts_ns": ts[:n],
            "value": val[:n],
            "quality": np.zeros(n, np.uint8),
        }
    )


# ------------------------------------------------------------------ operators


def run_op(items: list[object], operator: object) -> tuple[float, list[pa.RecordBatch]]:
    """One operator through ``from_iterable(items).pipe(op)``; (seconds, output batches)."""
    outputs: list[pa.RecordBatch] = []

    def on_next(item: object) -> None:
        if isinstance(item, pa.RecordBatch):
            outputs.append(item)

    flow = reactivex.from_iterable(items).pipe(operator)
    seconds, _ = timed(lambda: flow.subscribe(on_next))
    return seconds, outputs


def run_both(
    items: list[object], threaded: bool = False
) -> tuple[float, dict[str, list[pa.RecordBatch]]]:
    """TumblingWindow and ThresholdAlarm fanned out from one Subject (the demo graph);
    ``threaded``: each behind its own ``ThreadBoundary`` (the demo_threaded graph)."""
    out: dict[str, list[pa.RecordBatch]] = {"windows": [], "alarms": []}
    subject: Subject[object] = Subject()

    def keep(name: str) -> Callable[[object], None]:
        def on_next(item: object) -> None:
            if isinstance(item, pa.RecordBatch):
                out[name].append(item)

        return on_next

    hop = [ThreadBoundary(capacity=8)] if threaded else []
    subject.pipe(*hop, TumblingWindow(SIZE_MS)).subscribe(keep("windows"))
    subject.pipe(*hop, ThresholdAlarm(THRESHOLD, CONSECUTIVE)).subscribe(keep("alarms"))

    def push() -> None:
        for item in items:
            subject.on_next(item)
        subject.on_completed()

    seconds, _ = timed(push)
    return seconds, out


def rows(batches: list[pa.RecordBatch]) -> int:
    return sum(b.num_rows for b in batches)


# ----------------------------------------------------------------- references


def polars_tumbling(df: pl.DataFrame) -> pl.DataFrame:
    size_ns = SIZE_MS * MS
    return (
        df.lazy()
        .with_columns((pl.col("ts_ns") // size_ns).alias("win"))
        .group_by("sensor_id", "win")
        .agg(
            pl.len().alias("count"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").min().alias("min"),
            pl.col("value").max().alias("max"),
        )
        .collect()
    )


def polars_sliding(df: pl.DataFrame) -> pl.DataFrame:
    """As ``tests/operators/window_reference.sliding_reference``: rows exploded to their
    windows, then group_by (count/mean/min/max only)."""
    size_ns, slide_ns = SLIDE.size_ms * MS, SLIDE.slide_ms * MS
    return (
        df.lazy()
        .with_columns(
            k=pl.int_ranges(
                (pl.col("ts_ns") - size_ns).floordiv(slide_ns) + 1,
                pl.col("ts_ns").floordiv(slide_ns) + 1,
            )
        )
        .explode("k")
        .group_by("sensor_id", "k")
        .agg(
            pl.len().alias("count"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").min().alias("min"),
            pl.col("value").max().alias("max"),
        )
        .collect()
    )


def polars_ewm(df: pl.DataFrame) -> pl.DataFrame:
    """Each sensor's running EWMA (``adjust=False``) in (ts, arrival) order, as
    ``detector_reference.ewma_means_polars``: the means only, no variance or z-score."""
    return (
        df.lazy()
        .with_row_index("arrival")
        .filter(pl.col("value").is_finite())
        .sort("ts_ns", "arrival")
        .group_by("sensor_id", maintain_order=True)
        .agg(pl.col("value").ewm_mean(alpha=EWMA.alpha, adjust=False))
        .collect()
    )


def polars_dedup(df: pl.DataFrame) -> pl.DataFrame:
    """As ``detector_reference.dedup_reference`` (without turning rows into tuples)."""
    return (
        df.lazy()
        .with_row_index("arrival")
        .unique(["sensor_id", "ts_ns"], keep="first", maintain_order=True)
        .sort("ts_ns", "arrival")
        .collect()
    )


def polars_resample(df: pl.DataFrame) -> pl.DataFrame:
    """As ``detector_reference.resample_polars``: group_by_dynamic buckets (no fill)."""
    size = RESAMPLE.interval_ms * MS
    return (
        df.lazy()
        .with_row_index("arrival")
        .sort("sensor_id", "ts_ns", "arrival")
        .group_by_dynamic("ts_ns", every=f"{size}i", group_by="sensor_id", closed="left")
        .agg(pl.col("value").mean())
        .collect()
    )


def subsample(df: pl.DataFrame, ref_rows: int, sensors: int) -> tuple[list, list, list]:
    """Whole sensors (every k-th) totalling about ``ref_rows`` rows, as Python lists."""
    k = max(1, round(df.height / max(ref_rows, 1)))
    k = min(k, sensors)
    sub = df.filter(pl.col("sensor_id") % k == 0)
    return sub["sensor_id"].to_list(), sub["ts_ns"].to_list(), sub["value"].to_list()


# (name, operator, reference label, reference) ; reference kind "polars" takes the frame,
# "py" takes the subsample lists.
OPERATORS: list[tuple[str, object, str, str, Callable[..., object]]] = [
    ("TumblingWindow", TumblingWindow(SIZE_MS), "polars", "group_by", polars_tumbling),
    (
        "ThresholdAlarm",
        ThresholdAlarm(THRESHOLD, CONSECUTIVE),
        "py",
        "alarms_reference",
        lambda s, t, v: alarms_reference(s, t, v, THRESHOLD, CONSECUTIVE),
    ),
    ("SlidingWindow", SLIDE, "polars", "explode + group_by", polars_sliding),
    (
        "SessionWindow",
        SESSION,
        "py",
        "session_reference",
        lambda s, t, v: session_reference(s, t, v, SESSION.gap_ms * MS),
    ),
    (
        "HysteresisAlarm",
        HYSTERESIS,
        "py",
        "hysteresis_reference",
        lambda s, t, v: hysteresis_reference(s, t, v, HYSTERESIS),
    ),
    (
        "RateOfChange",
        RATE,
        "py",
        "rate_reference",
        lambda s, t, v: rate_reference(s, t, v, RATE),
    ),
    (
        "Flatline",
        FLATLINE,
        "py",
        "flatline_reference",
        lambda s, t, v: flatline_reference(s, t, v, FLATLINE),
    ),
    (
        "HeartbeatTimeout",
        HEARTBEAT,
        "py",
        "heartbeat_reference",
        lambda s, t, v: heartbeat_reference(s, t, v, HEARTBEAT),
    ),
    ("EwmaZScore", EWMA, "polars", "ewm_mean (means only)", polars_ewm),
    (
        "CepPattern",
        PATTERN,
        "py",
        "pattern_reference",
        lambda s, t, v: pattern_reference(PATTERN, s, t, v)[0],
    ),
    ("Dedup", DEDUP, "polars", "unique", polars_dedup),
    ("Resample", RESAMPLE, "polars", "group_by_dynamic", polars_resample),
]


# ----------------------------------------------------------------------- main


def one_repeat(
    df: pl.DataFrame,
    items: list[object],
    sub: tuple[list, list, list],
    sensors: int,
    check: bool,
) -> dict[str, float]:
    r: dict[str, float] = {}
    n = df.height
    n_sub = len(sub[0])
    sid = df["sensor_id"].to_numpy()
    ts = df["ts_ns"].to_numpy()
    val = df["value"].to_numpy()

    # The windowed workload: bound and the two operators back to back.
    seconds, bound = bound_pass(sid, ts, val, sensors)
    r["bound"] = rate(n, seconds)
    w_seconds, a_seconds = half_passes(sid, ts, val, sensors)
    r["bound_window_half"] = rate(n, w_seconds)
    r["bound_alarm_half"] = rate(n, a_seconds)
    seconds, guarded = guarded_pass(guarded_batches(items), sensors)
    r["guarded_bound"] = rate(n, seconds)
    seconds, both = run_both(items)
    r["both_ops"] = rate(n, seconds)
    r["ratio_both_ops_to_bound"] = r["both_ops"] / r["bound"]
    r["ratio_both_ops_to_guarded_bound"] = r["both_ops"] / r["guarded_bound"]
    r["ratio_guarded_bound_to_bound"] = r["guarded_bound"] / r["bound"]
    seconds, threaded = run_both(items, threaded=True)
    r["both_ops_threaded"] = rate(n, seconds)
    r["ratio_both_ops_threaded_to_bound"] = r["both_ops_threaded"] / r["bound"]
    r["bound_windows_out"] = len(bound["w_sid"])
    r["bound_alarms_out"] = len(bound["a_sid"])
    if check:
        check_bound(bound, both)
        check_bound(bound, threaded)
        check_bound(guarded, both)

    for name, operator, kind, _label, reference in OPERATORS:
        seconds, out = run_op(items, operator)
        r[f"{name}"] = rate(n, seconds)
        r[f"{name}_rows_out"] = rows(out)
        if kind == "polars":
            seconds, ref = timed(lambda f=reference: f(df))
            r[f"{name}_ref"] = rate(n, seconds)
            r[f"{name}_ref_rows_out"] = ref.height  # type: ignore[union-attr]
        else:
            seconds, ref = timed(lambda f=reference: f(*sub))
            r[f"{name}_ref"] = rate(n_sub, seconds)
            r[f"{name}_ref_rows_out"] = len(ref)  # type: ignore[arg-type]
        r[f"ratio_{name}_to_ref"] = r[name] / r[f"{name}_ref"]
        r[f"ratio_{name}_to_bound"] = r[name] / r["bound"]
    r["ratio_TumblingWindow_to_window_half"] = r["TumblingWindow"] / r["bound_window_half"]
    r["ratio_ThresholdAlarm_to_alarm_half"] = r["ThresholdAlarm"] / r["bound_alarm_half"]
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=4_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--slice-rows", type=int, default=65_536)
    parser.add_argument("--ref-rows", type=int, default=200_000, help="pure-Python subsample")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    df = make_data(args.readings, args.sensors)
    items = with_watermarks(to_batches(df, args.slice_rows))
    sub = subsample(df, args.ref_rows, args.sensors)
    # Load (or compile) every kernel outside the timings.
    small = df.head(200_000)
    small_items = with_watermarks(to_batches(small, 8192))
    bound_pass(*(small[c].to_numpy() for c in ("sensor_id", "ts_ns", "value")), args.sensors)
    half_passes(*(small[c].to_numpy() for c in ("sensor_id", "ts_ns", "value")), args.sensors)
    guarded_pass(guarded_batches(small_items), args.sensors)
    run_both(small_items)
    run_both(small_items, threaded=True)
    for _name, operator, *_ in OPERATORS:
        run_op(small_items, operator)

    results: list[dict[str, float]] = []
    for i in range(args.repeats):
        results.append(one_repeat(df, items, sub, args.sensors, check=i == 0))
        r = results[-1]
        print(
            f"repeat {i + 1}/{args.repeats}: bound {r['bound'] / 1e6:.1f} M/s, "
            f"guarded {r['guarded_bound'] / 1e6:.1f} M/s, both ops {r['both_ops'] / 1e6:.1f} M/s "
            f"({r['ratio_both_ops_to_bound']:.3f}x, {r['ratio_both_ops_to_guarded_bound']:.3f}x "
            "guarded), "
            f"threaded {r['both_ops_threaded'] / 1e6:.1f} M/s "
            f"({r['ratio_both_ops_threaded_to_bound']:.3f}x)",
            file=sys.stderr,
        )

    med = medians(results)
    print(
        f"\nreadings={df.height:,} sensors={args.sensors} repeats={args.repeats} "
        f"slice={args.slice_rows} (medians; py* = pure Python on {len(sub[0]):,} rows, scaled)"
    )
    header = f"{'operator':<18} {'op M/s':>8} {'reference':<26} {'ref M/s':>8} {'op/ref':>7}"
    print(header + f" {'op/bound':>8} {'rows out':>9} {'ref rows*':>9}")
    for name, _op, kind, label, _ref in OPERATORS:
        ref_label = ("py* " if kind == "py" else "polars ") + label
        print(
            f"{name:<18} {med[name] / 1e6:>8.2f} {ref_label:<26} {med[name + '_ref'] / 1e6:>8.2f} "
            f"{med[f'ratio_{name}_to_ref']:>7.2f} {med[f'ratio_{name}_to_bound']:>8.3f} "
            f"{med[name + '_rows_out']:>9,.0f} {med[name + '_ref_rows_out']:>9,.0f}"
        )
    verdict = "met" if med["ratio_both_ops_to_guarded_bound"] >= TARGET else "MISSED"
    print(
        f"\nwindowed workload: trusting single-pass bound {med['bound'] / 1e6:.1f} M/s "
        f"({med['bound_windows_out']:,.0f} windows, {med['bound_alarms_out']:,.0f} alarms); "
        f"both operators from one Subject {med['both_ops'] / 1e6:.1f} M/s = "
        f"{med['ratio_both_ops_to_bound']:.3f}x it; "
        f"each behind a ThreadBoundary (2 threads) {med['both_ops_threaded'] / 1e6:.1f} M/s = "
        f"{med['ratio_both_ops_threaded_to_bound']:.3f}x"
    )
    print(
        f"the bound's halves alone: window {med['bound_window_half'] / 1e6:.1f} M/s "
        f"(TumblingWindow {med['ratio_TumblingWindow_to_window_half']:.3f}x of it), alarm "
        f"{med['bound_alarm_half'] / 1e6:.1f} M/s (ThresholdAlarm "
        f"{med['ratio_ThresholdAlarm_to_alarm_half']:.3f}x of it)"
    )
    print(
        f"the guarded single-pass bound (_guarded_bound.py): "
        f"{med['guarded_bound'] / 1e6:.1f} M/s = {med['ratio_guarded_bound_to_bound']:.3f}x the "
        f"trusting one; both operators {med['ratio_both_ops_to_guarded_bound']:.3f}x of it "
        f"(target >= {TARGET}x: {verdict})"
    )
    summary = {
        "benchmark": "operators",
        "readings": df.height,
        "sensors": args.sensors,
        "repeats": args.repeats,
        "slice_rows": args.slice_rows,
        "ref_rows": len(sub[0]),
        "target_ratio_both_ops_to_guarded_bound": TARGET,
        "target_met": verdict == "met",
        "machine": machine(),
    }
    return emit(summary, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
