"""Adversarial readings for the Flink MATCH_RECOGNIZE reference (issue 22, Step 13).

Writes, for each data set, ``<name>.csv`` (what Flink reads: seq, sensor_id, ts as
text with nanoseconds, ts_ns, value, quality) and ``<name>.parquet`` (the same rows
as telepipe readings: sensor_id int32, ts timestamp[ns], value float64, quality
uint8, in arrival order, so ``seq`` is the row index). Deterministic: Python's
``random.Random(seed)`` only, no numpy, so any interpreter writes the same bytes.

Data sets:

- ``issue22``: the example of issue 22 (75, 85, 90, 60 at 0/10/20/30 ms).
- ``within``: one sensor per ``WITHIN INTERVAL '5' SECOND`` boundary case, including
  matches that span 4999.6 ms but cross a millisecond boundary (Flink compares
  whole milliseconds, so it expires them).
- ``ties``: runs of readings with equal timestamps, arriving shuffled within a run.
- ``adv``: several sensors of segments built to hit quantifier, contiguity, skip and
  condition edge cases (values on and around the thresholds 20/40/50/60/70/80/90,
  plateaus, ramps, a few NaN, quality 0), steps of 0 ns (ties), sub-millisecond and
  irregular gaps, gaps around the ``within`` bounds, and arrival out of order by up
  to ``MAX_DELAY_NS`` across sensors.

Usage: ``python gen_data.py [--out tests/operators/flink/inputs] [--seed 22]``.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "operators" / "flink" / "inputs"  # not data/: .gitignore has data/
BASE_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
MS = 1_000_000
MAX_DELAY_NS = 30 * MS  # the largest out-of-orderness (arrival after a later ts) in `adv`
SEED = 22
CSV_COLUMNS = ["seq", "sensor_id", "ts", "ts_ns", "value", "quality"]


@dataclass
class Row:
    sensor_id: int
    ts_ns: int
    value: float
    quality: int = 192
    arrival: tuple[int, int] = (0, 0)  # file order: (arrival time, tie-break)


def ts_text(ts_ns: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.nnnnnnnnn`` (UTC), as Flink parses a TIMESTAMP(9)."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{ns:09d}"


def value_text(v: float) -> str:
    return "NaN" if math.isnan(v) else repr(float(v))


# --- the data sets -------------------------------------------------------------------


def issue22() -> list[Row]:
    return [Row(1, BASE_NS + i * 10 * MS, v) for i, v in enumerate([75.0, 85.0, 90.0, 60.0])]


def within() -> list[Row]:
    """A = value > 80 then B = value < 20 within 5 s; 50.0 rows are filler."""
    cases = {
        1: [(0.6, 90), (2500, 50), (5000.2, 10)],  # span 4999.6 ms, rowtime 0 -> 5000
        2: [(0, 90), (2500, 50), (4999.6, 10)],  # span 4999.6 ms, rowtime 0 -> 4999
        3: [(0, 90), (5000, 10)],  # exactly 5 s: expired for both
        4: [(0, 90), (4999, 10)],  # 4999 ms: a match for both
        5: [(0.999999, 90), (5000.999998, 10)],  # span 4999.999999 ms, rowtime 0 -> 5000
        6: [(0.6, 90), (1000, 95), (5000.2, 10)],  # Flink restarts at the second A
        7: [(0.2, 90), (4999.9, 10)],  # span 4999.7 ms, rowtime 0 -> 4999
        8: [(0, 90), (4999.999999, 10), (5000, 10)],  # the last ns before the bound
    }
    rows = []
    for sensor, events in cases.items():
        for ms, v in events:
            rows.append(Row(sensor, BASE_NS + round(ms * MS), float(v)))
    for i, r in enumerate(rows):  # in time order (sensors interleaved): nothing is late
        r.arrival = (r.ts_ns, i)
    return rows


def ties(rng: random.Random) -> list[Row]:
    """Runs of 1..5 readings sharing one timestamp; arrival shuffled within a run."""
    rows = []
    palette = [95.0, 85.0, 80.0, 75.0, 50.0, 45.0, 40.0, 15.0, 10.0]
    for sensor in (1, 2):
        t = BASE_NS + sensor * 3 * MS
        for _ in range(120):
            n = rng.choice([1, 2, 3, 3, 4, 5])
            run = [Row(sensor, t, rng.choice(palette)) for _ in range(n)]
            rng.shuffle(run)
            rows.extend(run)
            t += rng.choice([1, 2, 5]) * MS
    for i, r in enumerate(rows):  # runs of both sensors interleave by time
        r.arrival = (r.ts_ns, i)
    return rows


HIGH = [70.5, 75.0, 80.0, 80.5, 85.0, 90.0, 95.0]
EDGES = [20.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 79.999999, 80.000001, 19.999999]
LOW = [5.0, 10.0, 15.0, 19.5]
MID = [40.0, 45.0, 50.0, 55.0, 59.5]


def segment(rng: random.Random) -> list[tuple[float, int]]:
    """One burst of (value, quality) chosen to exercise the patterns' conditions."""
    kind = rng.choices(
        ["high", "edges", "low", "mid", "noise", "ramp_up", "ramp_down", "plateau", "nan"],
        [20, 8, 10, 10, 25, 8, 8, 8, 1],
    )[0]
    n = rng.randint(1, 12)
    if kind == "high":
        vals = [rng.choice(HIGH) for _ in range(n)]
    elif kind == "edges":
        vals = [rng.choice(EDGES) for _ in range(n)]
    elif kind == "low":
        vals = [rng.choice(LOW) for _ in range(n)]
    elif kind == "mid":
        vals = [rng.choice(MID) for _ in range(n)]
    elif kind == "noise":
        vals = [rng.randint(0, 200) / 2 for _ in range(n)]
    elif kind == "ramp_up":
        v0 = rng.choice([30.0, 50.0, 60.0, 65.0])
        vals = [v0 + 5 * i for i in range(n)]
    elif kind == "ramp_down":
        v0 = rng.choice([100.0, 90.0, 85.0])
        vals = [v0 - 7 * i for i in range(n)]
    elif kind == "plateau":
        vals = [rng.choice([50.0, 75.0, 85.0])] * n
    else:
        vals = [math.nan]
    return [(v, 0 if rng.random() < 0.05 else 192) for v in vals]


def step_ns(rng: random.Random) -> int:
    """The gap to the next reading: ties, sub-millisecond, regular, irregular, long."""
    return rng.choices(
        [
            0,
            1,
            600_000,
            999_999,
            MS,
            MS + 1,
            5 * MS,
            10 * MS,
            10 * MS + 400_000,
            25 * MS,
            60 * MS,
            99 * MS + 600_000,
            100 * MS,
            250 * MS,
        ],
        [10, 1, 4, 2, 6, 1, 12, 30, 8, 10, 5, 2, 2, 2],
    )[0]


def adv(rng: random.Random, sensors: int, rows_per_sensor: int) -> list[Row]:
    rows = []
    for sensor in range(1, sensors + 1):
        t = BASE_NS + rng.randrange(0, 20 * MS)
        mine: list[Row] = []
        while len(mine) < rows_per_sensor:
            for v, q in segment(rng):
                mine.append(Row(sensor, t, v, q))
                t += step_ns(rng)
        rows.extend(mine[:rows_per_sensor])
    # Arrival: event time plus a delay in [0, MAX_DELAY_NS]; the file is in arrival order.
    for r in rows:
        r.arrival = (r.ts_ns + rng.randrange(0, MAX_DELAY_NS + 1), 0)
    return rows


# --- writing ---------------------------------------------------------------------------


def write(rows: list[Row], name: str, out: Path) -> tuple[Path, int]:
    rows = sorted(rows, key=lambda r: r.arrival)  # stable: equal arrivals keep their order
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        f.write(
            "#" + ",".join(CSV_COLUMNS) + "\n"
        )  # a comment line: Flink reads csv.allow-comments
        for seq, r in enumerate(rows):
            w.writerow(
                [seq, r.sensor_id, ts_text(r.ts_ns), r.ts_ns, value_text(r.value), r.quality]
            )
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # the CSV is all Flink needs
        return path, len(rows)
    table = pa.table(
        {
            "sensor_id": pa.array([r.sensor_id for r in rows], pa.int32()),
            "ts": pa.array([r.ts_ns for r in rows], pa.int64()).cast(pa.timestamp("ns")),
            "value": pa.array([r.value for r in rows], pa.float64()),
            "quality": pa.array([r.quality for r in rows], pa.uint8()),
        }
    )
    pq.write_table(table, out / f"{name}.parquet", compression="zstd")
    return path, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--sensors", type=int, default=5)
    ap.add_argument("--rows-per-sensor", type=int, default=800)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sets = {
        "issue22": issue22(),
        "within": within(),
        "ties": ties(rng),
        "adv": adv(rng, args.sensors, args.rows_per_sensor),
    }
    for name, rows in sets.items():
        path, n = write(rows, name, args.out)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {n} rows")


if __name__ == "__main__":
    main()
