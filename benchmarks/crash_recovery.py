"""Exactly-once under SIGKILL: replay a capture, kill it at random moments, restart, compare.

    python benchmarks/crash_recovery.py --kills 10 --readings 400000

Records a live demo run with its capture (``telepipe run ... capture_dir=``),
replays the capture once uninterrupted (the reference), then replays it into a
fresh data_dir, SIGKILLing the process at random moments (during commits too:
a checkpoint every ``--checkpoint-every`` readings) and restarting it each time,
until ``--kills`` kills happened and a last run finished. The last line is JSON:
the kill count and, per table, whether it equals the reference exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "readings": ["ts_ns", "sensor_id", "value"],
    "windows": ["window_start_ns", "sensor_id"],
    "alarms": ["ts_ns", "sensor_id"],
    "late_readings": ["ts_ns", "sensor_id", "value"],
    "dead_letters": ["id"],
}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "telepipe.cli", *args]


def check(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:5])} failed: {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--readings", type=int, default=400_000)
    parser.add_argument("--rate", type=float, default=100_000, help="simulator readings/s")
    parser.add_argument("--speed", type=float, default=0.25, help="replay speed factor")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="telepipe-crash-"))
    capture, reference, killed = work / "capture", work / "reference", work / "killed"
    common = [f"source.checkpoint_every_readings={args.checkpoint_every}"]
    check(cli(
        "run", f"limit.readings={args.readings}", f"data_dir={work / 'live'}", f"capture_dir={capture}",
        f"simulator.options.rate={args.rate}", "simulator.options.late_fraction=0.001", *common,
    ))  # fmt: skip
    check(cli("replay", f"input={capture}", f"data_dir={reference}", *common))
    kills, runs, started = 0, 0, time.monotonic()
    paced = [*common, f"replay.speed={args.speed}", "replay.batch_messages=4"]
    while kills < args.kills:
        runs += 1
        process = subprocess.Popen(
            cli("replay", f"input={capture}", f"data_dir={killed}", *paced),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(rng.uniform(0.9, 2.5))
        if process.poll() is not None:
            if process.returncode != 0:
                raise SystemExit(
                    f"a replay failed: {process.stderr.read() if process.stderr else ''}"
                )
            break
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        print(f"kill {kills} after run {runs}", flush=True)
    check(cli("replay", f"input={capture}", f"data_dir={killed}", *common))
    result: dict[str, object] = {
        "kills": kills,
        "runs": runs + 1,
        "seconds": round(time.monotonic() - started, 1),
    }
    equal = {}
    for table, keys in TABLES.items():
        a = pl.read_delta(str(reference / table)).sort(keys)
        b = pl.read_delta(str(killed / table)).sort(keys)
        equal[table] = {"rows": a.height, "killed_rows": b.height, "equal": a.equals(b)}
    result["tables"] = equal
    result["all_equal"] = all(t["equal"] for t in equal.values())
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
