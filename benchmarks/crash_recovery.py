"""Exactly-once under SIGKILL: replay a two-session capture, kill it at random moments,
restart, compare every table, every column.

    python benchmarks/crash_recovery.py --kills 10 --readings 400000

Records two live demo runs into one capture (``telepipe run ... capture_dir=`` twice:
two publisher sessions, one after the other), then for each pipeline (``demo`` and
``press_line`` by default) replays the capture once uninterrupted (the reference),
then into a fresh data_dir, SIGKILLing the process at random moments (during commits
too: a checkpoint every ``--checkpoint-every`` readings) and restarting it each time,
until ``--kills`` kills happened and a last run finished. Prints per table whether it
equals the reference; the last line is JSON; exits 1 when any table differs.
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
from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parent.parent
START = 1_767_225_600_000_000_000


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "telepipe.cli", *args]


def check(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:5])} failed: {done.stderr.strip()}")


def tables(data_dir: Path) -> dict[str, pl.DataFrame]:
    """Every Delta table of ``data_dir``, rows sorted by every plain column."""
    out = {}
    for path in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        if DeltaTable.is_deltatable(str(path)):
            frame = pl.read_delta(str(path))
            out[path.name] = frame.sort([c for c, t in frame.schema.items() if not t.is_nested()])
    return out


def crash_and_compare(
    args: argparse.Namespace, pipeline: str, capture: Path, work: Path, rng: random.Random
) -> dict[str, object]:
    reference, killed = work / f"{pipeline}-reference", work / f"{pipeline}-killed"
    common = [f"pipeline={pipeline}", f"source.checkpoint_every_readings={args.checkpoint_every}"]
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
        print(f"{pipeline}: kill {kills} after run {runs}", flush=True)
    check(cli("replay", f"input={capture}", f"data_dir={killed}", *common))
    want, got = tables(reference), tables(killed)
    equal = {}
    for name, frame in want.items():
        other = got.get(name)
        same = other is not None and frame.equals(other)
        equal[name] = {
            "rows": frame.height,
            "killed_rows": None if other is None else other.height,
            "equal": same,
        }
        print(
            f"{pipeline}.{name}: {frame.height} rows, {'equal' if same else 'DIFFERS'}", flush=True
        )
    return {
        "kills": kills,
        "runs": runs + 1,
        "seconds": round(time.monotonic() - started, 1),
        "tables": equal,
        "all_equal": all(t["equal"] for t in equal.values()) and sorted(got) == sorted(want),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--readings", type=int, default=400_000, help="in all, both sessions")
    parser.add_argument("--rate", type=float, default=100_000, help="simulator readings/s")
    parser.add_argument("--speed", type=float, default=0.25, help="replay speed factor")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--pipelines", default="demo,press_line")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="telepipe-crash-"))
    capture = work / "capture"
    for run in (1, 2):  # two publisher sessions, the second 0.3 s of event time later
        check(cli(
            "run", f"limit.readings={args.readings // 2}", f"data_dir={work / f'live{run}'}",
            f"capture_dir={capture}", f"simulator.options.rate={args.rate}",
            f"simulator.options.start_ns={START + run * 300_000_000}",
            "simulator.options.late_fraction=0.001",
        ))  # fmt: skip
    result = {
        pipeline: crash_and_compare(args, pipeline, capture, work, rng)
        for pipeline in args.pipelines.split(",")
    }
    everything = all(r["all_equal"] for r in result.values())
    print(json.dumps({"pipelines": result, "all_equal": everything}, sort_keys=True))
    if not everything:
        sys.exit(1)


if __name__ == "__main__":
    main()
