"""Demo end to end vs the window kernel, on the same data, in the same run.

Each repeat:
1. runs ``telepipe run pipeline=demo`` as a subprocess (the simulator is its own
   child process publishing SBE over Aeron IPC) and reads its stats JSON;
2. reads the ``readings`` table that run committed back from Delta with polars,
   rebuilds READINGS record batches (``ts`` as timestamp[ns] from the exact
   ``ts_ns``) in slices, with a watermark after each slice (running max ts minus
   the source's 50 ms out-of-orderness bound), and measures in process:
   the raw window kernel (single pass: the bound), TumblingWindow and
   ThresholdAlarm through RxPY ``.pipe``, both fanned out from one Subject as the
   demo graph does (at 64k-row slices and at the ~4k-row batches the runner's
   polls produce), the polars peer, the simulator's generate+encode loop alone
   (no Aeron), SBE decode alone (4-message polls, as the runner sees them) and the
   Delta sink alone (conversion + one append per 250k rows).

Prints a table, then as the LAST line one JSON object with medians and ratios
(ratios are computed within each repeat, then the median is taken).

    .venv/bin/python benchmarks/demo_throughput.py --readings 4000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import reactivex
from _common import REPO, emit, machine, median, medians, rate, timed
from reactivex.subject import Subject

from telepipe.markers import Watermark
from telepipe.operators.detectors.threshold_alarm.alarm import ThresholdAlarm
from telepipe.operators.runtime._key_kernels import INT64_MIN, _pair_rehash_kernel
from telepipe.operators.runtime.key_index import KeyIndex, empty_slot_table
from telepipe.operators.windows._tumbling_kernels import (
    _window_table_kernel,
    _window_update_kernel,
)
from telepipe.operators.windows.tumbling import TumblingWindow, _empty_current, _entries
from telepipe.schema import READINGS

SIZE_MS = 1000
THRESHOLD, CONSECUTIVE = 80.0, 3
OUT_OF_ORDERNESS_NS = 50 * 1_000_000  # the source's default bound
RUNNER_BATCH_ROWS = 4096  # what one AeronSource.poll yields in the demo (4 messages)
COMMIT_ROWS = 250_000  # the source's checkpoint_every_readings


# ------------------------------------------------------------------ end to end


def run_demo(readings: int, workdir: Path) -> dict[str, object]:
    data_dir, stats_file = workdir / "data", workdir / "stats.json"
    command = [
        sys.executable,
        "-m",
        "telepipe.cli",
        "run",
        "pipeline=demo",
        f"limit.readings={readings}",
        f"data_dir={data_dir}",
        f"stats_file={stats_file}",
        "simulator.linger_s=5",
        "ui=never",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    stats = json.loads(stats_file.read_text())
    stats["data_dir"] = str(data_dir)
    return stats


def read_readings(data_dir: str) -> pl.DataFrame:
    """The committed readings in arrival order.

    ``pl.read_delta`` does not keep the order of commits (the log lists newest
    first), which would make most rows late for the watermark; so the table's
    files are read with polars in commit order (by modification time; each
    checkpoint commit writes its rows in arrival order).
    """
    from deltalake import DeltaTable

    path = Path(data_dir) / "readings"
    actions = pa.table(DeltaTable(str(path)).get_add_actions(flatten=True))
    files = sorted(
        zip(
            actions.column("modification_time").to_pylist(),
            actions.column("min.ts_ns").to_pylist(),
            actions.column("path").to_pylist(),
            strict=True,
        )
    )
    frames = [pl.read_parquet(path / name) for _, _, name in files]
    return pl.concat(frames).select("sensor_id", "ts_ns", "value", "quality")


def to_batches(df: pl.DataFrame, rows: int) -> list[pa.RecordBatch]:
    sid = df["sensor_id"].to_numpy().astype(np.int32)
    ts = df["ts_ns"].to_numpy().astype(np.int64)
    val = df["value"].to_numpy().astype(np.float64)
    quality = df["quality"].to_numpy().astype(np.uint8)
    ts_type = READINGS.field("ts").type
    batches = []
    for lo in range(0, len(ts), rows):
        hi = min(lo + rows, len(ts))
        columns = [
            pa.array(sid[lo:hi], pa.int32()),
            pa.Array.from_buffers(ts_type, hi - lo, [None, pa.py_buffer(ts[lo:hi].copy())]),
            pa.array(val[lo:hi], pa.float64()),
            pa.array(quality[lo:hi], pa.uint8()),
        ]
        batches.append(pa.RecordBatch.from_arrays(columns, schema=READINGS))
    return batches


def with_watermarks(batches: list[pa.RecordBatch]) -> list[object]:
    """Batches with a watermark after each, as AeronSource emits them."""
    items: list[object] = []
    high, last = INT64_MIN, INT64_MIN
    for batch in batches:
        items.append(batch)
        high = max(high, int(np.max(batch.column("ts").to_numpy().view(np.int64))))
        wm = high - OUT_OF_ORDERNESS_NS
        if wm > last:
            items.append(Watermark(wm))
            last = wm
    return items


# ------------------------------------------------------------------ in process


def kernel_pass(sid: np.ndarray, ts: np.ndarray, val: np.ndarray, cap: int) -> tuple[float, int]:
    """One timed pass of the window update kernels over all rows; returns (s, capacity).

    Slots for every sensor and the per-slot arrays are made first (not timed), as a
    running operator has them after its first batch; the timed pass is the row
    loop plus folding its moved entries and out-of-order rows into the table.
    """
    size_ns = SIZE_MS * 1_000_000
    fire_below = INT64_MIN // size_ns
    keys = KeyIndex()
    keys.slots(sid)
    n = len(ts)
    while True:
        table, n_used = _pair_rehash_kernel(empty_slot_table(1, 3)[0], INT64_MIN, cap)
        current, moved, deferred = _empty_current(keys.n), _entries(n), np.empty(n, np.int64)

        def one_pass(t=table, u=n_used, c=current, m=moved, d=deferred) -> bool:
            _, _, n_moved, n_def = _window_update_kernel(
                sid, ts, val, 0, size_ns, fire_below, keys.lookup, c, m, 0, d, 0
            )
            m_pos, d_pos, _ = _window_table_kernel(
                m, 0, n_moved, (sid, ts, val), d, 0, n_def, size_ns, keys.lookup, t, u
            )
            return m_pos == n_moved and d_pos == n_def

        seconds, done = timed(one_pass)
        if done:
            return seconds, cap
        cap *= 2  # too small: size up and time again (not timed as a resumed pass)


def run_flow(items: list[object], operator: object) -> tuple[float, int]:
    outputs: list[int] = []

    def on_next(item: object) -> None:
        if isinstance(item, pa.RecordBatch):
            outputs.append(item.num_rows)

    flow = reactivex.from_iterable(items).pipe(operator)
    seconds, _ = timed(lambda: flow.subscribe(on_next))
    return seconds, sum(outputs)


def run_graph(items: list[object]) -> tuple[float, dict[str, int]]:
    """Both operators fanned out from one Subject, as the demo graph connects them."""
    counts = {"windows": 0, "alarms": 0}
    subject: Subject[object] = Subject()

    def counter(name: str):
        def on_next(item: object) -> None:
            if isinstance(item, pa.RecordBatch):
                counts[name] += item.num_rows

        return on_next

    subject.pipe(TumblingWindow(SIZE_MS)).subscribe(counter("windows"))
    subject.pipe(ThresholdAlarm(THRESHOLD, CONSECUTIVE)).subscribe(counter("alarms"))

    def push() -> None:
        for item in items:
            subject.on_next(item)
        subject.on_completed()

    seconds, _ = timed(push)
    return seconds, counts


def polars_peer(df: pl.DataFrame) -> tuple[float, int]:
    size_ns = SIZE_MS * 1_000_000

    def query() -> pl.DataFrame:
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

    seconds, out = timed(query)
    return seconds, out.height  # type: ignore[union-attr]


def simulator_alone(readings: int) -> tuple[float, float, list[bytes], object]:
    """(generate+encode s, generate-only s, payloads, codec) for ``readings`` readings."""
    from telepipe.config import build, load
    from telepipe.sources.simulator import TelemetryGenerator

    cfg = load(["pipeline=demo"])
    options = build(cfg.simulator.options, "simulator.options")
    codec = build(cfg.schema, "schema")
    payloads: list[bytes] = []

    def generate_and_encode() -> None:
        payloads.extend(p for p, _ in TelemetryGenerator(options).messages(codec, readings))

    def generate_only() -> None:
        for _ in TelemetryGenerator(options).chunks(readings):
            pass

    encode_s, _ = timed(generate_and_encode)
    generate_s, _ = timed(generate_only)
    return encode_s, generate_s, payloads, codec


def decode_alone(payloads: list[bytes], codec: object, per_poll: int = 4) -> tuple[float, int]:
    polls = []
    for lo in range(0, len(payloads), per_poll):
        group = payloads[lo : lo + per_poll]
        lengths = np.array([len(p) for p in group], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        polls.append((b"".join(group), offsets, lengths))

    def decode() -> int:
        return sum(codec.decode_many(b, o, n).batch.num_rows for b, o, n in polls)  # type: ignore[attr-defined]

    seconds, rows = timed(decode)
    return seconds, int(rows)  # type: ignore[arg-type]


def delta_alone(batches: list[pa.RecordBatch], workdir: Path) -> float:
    from deltalake import write_deltalake

    from telepipe.sinks.delta import writer_properties
    from telepipe.sinks.delta_types import to_delta_table

    path = str(workdir / "delta_alone")
    properties = None

    def write() -> None:
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in batches:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= COMMIT_ROWS:
                append(pending)
                pending, rows = [], 0
        if pending:
            append(pending)

    def append(pending: list[pa.RecordBatch]) -> None:
        nonlocal properties
        table = to_delta_table(pa.Table.from_batches(pending).combine_chunks())
        properties = properties or writer_properties(table.schema, "snappy")  # as DeltaSink
        write_deltalake(path, table, mode="append", writer_properties=properties)

    seconds, _ = timed(write)
    return seconds


# ------------------------------------------------------------------------ main


def one_repeat(readings: int, slice_rows: int, workdir: Path) -> dict[str, float]:
    r: dict[str, float] = {}
    stats = run_demo(readings, workdir)
    r["e2e_readings_per_s"] = float(stats["readings_per_s"])
    r["e2e_elapsed_s"] = float(stats["elapsed_s"])
    r["e2e_peak_rss_mb"] = float(stats["peak_rss_mb"])
    r["e2e_backpressured_offers"] = float(stats["backpressured_offers"])
    r["e2e_blocked_s"] = float(stats.get("blocked_s", 0.0))

    df = read_readings(str(stats["data_dir"]))
    n = df.height
    r["rows"] = n
    batches = to_batches(df, slice_rows)
    items = with_watermarks(batches)
    small_items = with_watermarks(to_batches(df, RUNNER_BATCH_ROWS))
    sid = df["sensor_id"].to_numpy().astype(np.int32)
    ts = df["ts_ns"].to_numpy().astype(np.int64)
    val = df["value"].to_numpy().astype(np.float64)

    # Load (or compile) every kernel outside the timings.
    kernel_pass(sid[:1000], ts[:1000], val[:1000], 64)
    run_graph(with_watermarks(to_batches(df.head(50_000), RUNNER_BATCH_ROWS)))
    seconds, _ = kernel_pass(sid, ts, val, 1 << 14)
    r["kernel"] = rate(n, seconds)

    seconds, r["window_rows_out"] = run_flow(items, TumblingWindow(SIZE_MS))
    r["window_op"] = rate(n, seconds)
    seconds, r["alarm_rows_out"] = run_flow(items, ThresholdAlarm(THRESHOLD, CONSECUTIVE))
    r["alarm_op"] = rate(n, seconds)
    seconds, _ = run_graph(items)
    r["both_ops"] = rate(n, seconds)
    seconds, _ = run_graph(small_items)
    r["both_ops_4k"] = rate(n, seconds)
    seconds, r["polars_groups"] = polars_peer(df)
    r["polars"] = rate(n, seconds)

    encode_s, generate_s, payloads, codec = simulator_alone(readings)
    r["simulator_encode"] = rate(readings, encode_s)
    r["simulator_generate"] = rate(readings, generate_s)
    seconds, decoded = decode_alone(payloads, codec)
    r["sbe_decode"] = rate(decoded, seconds)
    r["delta_sink"] = rate(n, delta_alone(batches, workdir))

    r["ratio_window_op_to_kernel"] = r["window_op"] / r["kernel"]
    r["ratio_alarm_op_to_kernel"] = r["alarm_op"] / r["kernel"]
    r["ratio_both_ops_to_kernel"] = r["both_ops"] / r["kernel"]
    r["ratio_both_ops_4k_to_kernel"] = r["both_ops_4k"] / r["kernel"]
    r["ratio_e2e_to_kernel"] = r["e2e_readings_per_s"] / r["kernel"]
    r["ratio_polars_to_kernel"] = r["polars"] / r["kernel"]
    r["ratio_e2e_to_simulator_encode"] = r["e2e_readings_per_s"] / r["simulator_encode"]
    return r


ROWS = [
    ("e2e_readings_per_s", "demo end to end (simulator process + runner + Delta)"),
    ("kernel", "(a) window update kernel alone, single pass (bound)"),
    ("window_op", "(b) TumblingWindow via Rx .pipe"),
    ("alarm_op", "(c) ThresholdAlarm via Rx .pipe"),
    ("both_ops", "(d) both, one Subject fanned out"),
    ("both_ops_4k", "(d') both, 4096-row batches (runner poll size)"),
    ("polars", "(e) polars group_by, whole frame"),
    ("simulator_encode", "simulator generate + SBE encode, no Aeron"),
    ("simulator_generate", "simulator generate only"),
    ("sbe_decode", "SBE decode_many, 4-message polls"),
    ("delta_sink", "Delta: to_delta_table + append per 250k rows"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=4_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slice-rows", type=int, default=65_536)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    results: list[dict[str, float]] = []
    for i in range(args.repeats):
        workdir = Path(tempfile.mkdtemp(prefix="telepipe-bench-"))
        try:
            results.append(one_repeat(args.readings, args.slice_rows, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        r = results[-1]
        print(
            f"repeat {i + 1}/{args.repeats}: e2e {r['e2e_readings_per_s'] / 1e6:.2f} M/s, "
            f"kernel {r['kernel'] / 1e6:.1f} M/s, both ops {r['both_ops'] / 1e6:.1f} M/s",
            file=sys.stderr,
        )

    med = medians(results)
    print(f"\nreadings={args.readings:,} repeats={args.repeats} (medians)")
    print(f"{'measurement':<58} {'M readings/s':>12} {'x kernel':>9}")
    for key, label in ROWS:
        ratio = median([r[key] / r["kernel"] for r in results])
        print(f"{label:<58} {med[key] / 1e6:>12.2f} {ratio:>9.3f}")
    print(
        f"end to end: elapsed {med['e2e_elapsed_s']:.2f} s, peak RSS {med['e2e_peak_rss_mb']:.0f} MB, "
        f"backpressured offers {med['e2e_backpressured_offers']:.0f}, "
        f"runner blocked on the sink queue {med['e2e_blocked_s']:.2f} s"
    )
    summary = {
        "benchmark": "demo_throughput",
        "readings": args.readings,
        "repeats": args.repeats,
        "slice_rows": args.slice_rows,
        "machine": machine(),
    }
    return emit(summary, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
