"""Bytewax peer of the windowed workload, checked against telepipe on the same data.

Workload (as ``benchmarks/operators.py``, same data generator): 1,000 sensors at
1 kHz, 1 s tumbling windows keyed by sensor (count/mean/min/max) and an alarm on
3 readings in a row over 80, fanned out from one input.

Bytewax lives in its own venv so it never becomes a telepipe dependency::

    /root/.pyenv/versions/3.12.1/bin/python -m venv .venv-peers
    .venv-peers/bin/pip install bytewax==0.21.1

This script runs with telepipe's venv. Each repeat:

1. telepipe: ``TumblingWindow`` and ``ThresholdAlarm`` fanned out from one
   ``Subject`` over 64k-row READINGS batches with watermarks (the demo graph);
2. Bytewax, in a child process under ``.venv-peers/bin/python`` running this same
   file with ``--child`` (stdlib + bytewax only): ``TestingSource`` of
   ``(sensor, datetime, value, ts_ns)`` tuples (built before the clock starts),
   ``key_on`` sensor, then ``windowing.fold_window`` with a ``TumblingWindower``
   (1 s, aligned to the epoch) and an ``EventClock`` whose ``now_getter`` is
   frozen (so the watermark is max event ts - 50 ms and never follows wall
   time), and ``stateful_flat_map`` for the alarm (per-sensor arrival order is
   event order in this data). Only ``run_main`` is timed.

The outputs must match: windows count/min/max exactly and mean to 1e-9
(relative), alarms exactly (sensor, ts, run start, value). Bytewax timestamps are
datetimes (microseconds): ts is floored to the microsecond for the window
assignment, which keeps the window index ``floor(ts / 1 s)`` exact.

Default N is 1.5 M readings (1.5 s of event time): each sensor has two windows,
the first closed mid-stream by the (frozen-clock) watermark, the second at EOF.

Prints a table, then as the LAST line one JSON object (medians; the ratio is
computed within each repeat).

    .venv/bin/python benchmarks/bytewax_peer.py --readings 1500000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE.parent / ".venv-peers" / "bin" / "python"
SIZE_NS = 1_000_000_000
THRESHOLD, CONSECUTIVE = 80.0, 3
WAIT_MS = 50  # the source's out-of-orderness bound, as the telepipe watermarks


# ---------------------------------------------------------- child: bytewax side


def bytewax_run(data_dir: Path, batch_size: int) -> dict[str, object]:
    """Run the Bytewax dataflow once over the data in ``data_dir``; stdlib + bytewax only."""
    from datetime import UTC, datetime, timedelta

    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    sid, ts, val = array("i"), array("q"), array("d")
    for arr, name in ((sid, "sid"), (ts, "ts"), (val, "val")):
        arr.frombytes((data_dir / name).read_bytes())
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    items = [
        (s, epoch + timedelta(microseconds=t // 1000), v, t)
        for s, t, v in zip(sid, ts, val, strict=True)
    ]
    frozen = epoch + timedelta(microseconds=ts[0] // 1000)

    def builder() -> list[float]:
        return [0, 0.0, float("inf"), float("-inf")]

    def folder(acc: list[float], x: tuple) -> list[float]:
        v = x[2]
        acc[0] += 1
        acc[1] += v
        if v < acc[2]:
            acc[2] = v
        if v > acc[3]:
            acc[3] = v
        return acc

    def merger(a: list[float], b: list[float]) -> list[float]:
        return [a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3])]

    def alarm(state: list | None, x: tuple) -> tuple[list, list]:
        # state: [run length, run start ts]
        if state is None:
            state = [0, 0]
        if x[2] > THRESHOLD:
            state[0] += 1
            if state[0] == 1:
                state[1] = x[3]
            if state[0] == CONSECUTIVE:
                return state, [(x[0], x[3], state[1], x[2])]
        else:
            state[0] = 0
        return state, []

    windows: list = []
    alarms: list = []
    flow = Dataflow("telepipe_peer")
    stream = op.input("in", flow, TestingSource(items, batch_size))
    keyed = op.key_on("key", stream, lambda x: str(x[0]))
    clock = win.EventClock(
        lambda x: x[1],
        wait_for_system_duration=timedelta(milliseconds=WAIT_MS),
        now_getter=lambda: frozen,  # frozen: the watermark follows event time only
    )
    windower = win.TumblingWindower(length=timedelta(seconds=1), align_to=epoch)
    out = win.fold_window("windows", keyed, clock, windower, builder, folder, merger)
    op.output("windows_out", out.down, TestingSink(windows))
    op.output("alarms_out", op.stateful_flat_map("alarm", keyed, alarm), TestingSink(alarms))

    started = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - started
    rows = [
        [int(key), wid * SIZE_NS, int(acc[0]), acc[1] / acc[0], acc[2], acc[3]]
        for key, (wid, acc) in windows
    ]
    return {
        "seconds": seconds,
        "events": len(items),
        "windows": rows,
        "alarms": [list(a) for _key, a in alarms],
    }


# --------------------------------------------------------- parent: telepipe side


def telepipe_side(readings: int, sensors: int, slice_rows: int):
    """The data (as in operators.py) and a function timing both telepipe operators."""
    import numpy as np
    import pyarrow as pa
    from demo_throughput import to_batches, with_watermarks

    from operators import make_data, run_both

    df = make_data(readings, sensors)
    items = with_watermarks(to_batches(df, slice_rows))
    run_both(with_watermarks(to_batches(df.head(50_000), 8192)))  # load the kernels

    def measure() -> tuple[float, dict[str, np.ndarray]]:
        seconds, out = run_both(items)
        w = pa.Table.from_batches(out["windows"])
        a = pa.Table.from_batches(out["alarms"])
        cols = {
            "w_sid": w.column("sensor_id").to_numpy(),
            "w_start": w.column("window_start").cast(pa.int64()).to_numpy(),
            "w_count": w.column("count").to_numpy(),
            "w_mean": w.column("mean").to_numpy(),
            "w_min": w.column("min").to_numpy(),
            "w_max": w.column("max").to_numpy(),
            "a_sid": a.column("sensor_id").to_numpy(),
            "a_ts": a.column("ts").cast(pa.int64()).to_numpy(),
            "a_start": a.column("start_ts").cast(pa.int64()).to_numpy(),
            "a_val": a.column("value").to_numpy(),
        }
        return seconds, cols

    return df, measure


def compare(tp: dict, bw: dict) -> dict[str, object]:
    """Bytewax outputs vs telepipe's: raises AssertionError on a mismatch."""
    import numpy as np

    rows = sorted(bw["windows"], key=lambda r: (r[1], r[0]))  # telepipe's order
    w = np.array(rows, dtype=object).T if rows else np.empty((6, 0), dtype=object)
    np.testing.assert_array_equal(tp["w_sid"], w[0].astype(np.int64), "window sensor_id")
    np.testing.assert_array_equal(tp["w_start"], w[1].astype(np.int64), "window_start")
    np.testing.assert_array_equal(tp["w_count"], w[2].astype(np.int64), "count")
    np.testing.assert_array_equal(tp["w_min"], w[4].astype(np.float64), "min")
    np.testing.assert_array_equal(tp["w_max"], w[5].astype(np.float64), "max")
    mean_bw = w[3].astype(np.float64)
    np.testing.assert_allclose(tp["w_mean"], mean_bw, rtol=1e-9, err_msg="mean")
    alarms = sorted(bw["alarms"], key=lambda r: (r[1], r[0]))
    a = np.array(alarms, dtype=object).T if alarms else np.empty((4, 0), dtype=object)
    np.testing.assert_array_equal(tp["a_sid"], a[0].astype(np.int64), "alarm sensor_id")
    np.testing.assert_array_equal(tp["a_ts"], a[1].astype(np.int64), "alarm ts")
    np.testing.assert_array_equal(tp["a_start"], a[2].astype(np.int64), "alarm start_ts")
    np.testing.assert_array_equal(tp["a_val"], a[3].astype(np.float64), "alarm value")
    return {
        "windows": len(rows),
        "alarms": len(alarms),
        "max_mean_rel_err": float(
            np.max(np.abs(tp["w_mean"] - mean_bw) / np.maximum(np.abs(mean_bw), 1e-300))
        )
        if rows
        else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--slice-rows", type=int, default=65_536)
    parser.add_argument("--batch-size", type=int, default=4096, help="TestingSource batch")
    parser.add_argument("--python", type=Path, default=PEER_PYTHON, help="the peers' venv")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:  # inside .venv-peers: run Bytewax once, print its result
        print(json.dumps(bytewax_run(args.child, args.batch_size)))
        return 0

    import numpy as np
    from _common import emit, machine, medians, rate

    if not args.python.exists():
        raise SystemExit(
            f"{args.python} not found: create it with\n"
            "  /root/.pyenv/versions/3.12.1/bin/python -m venv .venv-peers\n"
            "  .venv-peers/bin/pip install bytewax==0.21.1"
        )
    bytewax_version = subprocess.run(
        [str(args.python), "-c", "import importlib.metadata as m; print(m.version('bytewax'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    df, measure = telepipe_side(args.readings, args.sensors, args.slice_rows)
    n = df.height
    results: list[dict[str, float]] = []
    check: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="telepipe-bytewax-") as tmp:
        data_dir = Path(tmp)
        (data_dir / "sid").write_bytes(df["sensor_id"].to_numpy().astype(np.int32).tobytes())
        (data_dir / "ts").write_bytes(df["ts_ns"].to_numpy().astype(np.int64).tobytes())
        (data_dir / "val").write_bytes(df["value"].to_numpy().astype(np.float64).tobytes())
        batch_args = ["--batch-size", str(args.batch_size)]
        for i in range(args.repeats):
            tp_seconds, tp_out = measure()
            child = subprocess.run(
                [str(args.python), __file__, "--child", str(data_dir), *batch_args],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                raise SystemExit(f"bytewax child failed:\n{child.stderr[-3000:]}")
            bw = json.loads(child.stdout.strip().splitlines()[-1])
            check = compare(tp_out, bw)  # every repeat: raises on a mismatch
            r = {
                "bytewax": rate(int(bw["events"]), float(bw["seconds"])),
                "bytewax_s": float(bw["seconds"]),
                "telepipe_both_ops": rate(n, tp_seconds),
            }
            r["ratio_telepipe_to_bytewax"] = r["telepipe_both_ops"] / r["bytewax"]
            results.append(r)
            print(
                f"repeat {i + 1}/{args.repeats}: bytewax {r['bytewax'] / 1e6:.3f} M/s, "
                f"telepipe {r['telepipe_both_ops'] / 1e6:.1f} M/s",
                file=sys.stderr,
            )

    med = medians(results)
    print(
        f"\nreadings={n:,} sensors={args.sensors} repeats={args.repeats} (medians), "
        f"bytewax {bytewax_version}, TestingSource batch {args.batch_size}"
    )
    print(f"{'measurement':<62} {'M events/s':>11}")
    print(
        f"{'Bytewax fold_window + stateful_flat_map (frozen EventClock)':<62} "
        f"{med['bytewax'] / 1e6:>11.3f}"
    )
    print(f"{'telepipe TumblingWindow + ThresholdAlarm, one Subject':<62} "
          f"{med['telepipe_both_ops'] / 1e6:>11.2f}")  # fmt: skip
    print(f"telepipe / Bytewax (per repeat, median): {med['ratio_telepipe_to_bytewax']:.0f}x")
    print(
        f"outputs equal: {check['windows']:,} windows (count/min/max exact, mean max rel err "
        f"{check['max_mean_rel_err']:.1e}), {check['alarms']:,} alarms exact"
    )
    summary = {
        "benchmark": "bytewax_peer",
        "readings": n,
        "sensors": args.sensors,
        "repeats": args.repeats,
        "slice_rows": args.slice_rows,
        "bytewax_version": bytewax_version,
        "bytewax_batch_size": args.batch_size,
        "outputs_equal": True,
        "check": check,
        "machine": machine(),
    }
    return emit(summary, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
