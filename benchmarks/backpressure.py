"""Back-pressure under overload: a sink slower than the source, per policy.

    python benchmarks/backpressure.py --readings 2000000 --sink-delay-ms 20 --policy block

Runs the demo pipeline as a user would (simulator in its own process, Aeron IPC
with a 64 KiB term so flow control bites early), with the Delta sink sleeping
``--sink-delay-ms`` per batch, and prints the run statistics; the last line is
the JSON of the run (published, received, committed, dropped,
backpressured_offers, peak_queue_depth, peak_rss_mb, rss_mb_over_time, ...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(readings: int, delay_ms: float, policy: str, capacity: int, rate: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="telepipe-bp-") as tmp:
        stats_file = Path(tmp) / "stats.json"
        command = [
            sys.executable, "-m", "telepipe.cli", "run",
            f"limit.readings={readings}", f"data_dir={tmp}/data", f"stats_file={stats_file}",
            "ui=never", "simulator.linger_s=5", f"simulator.options.rate={rate}",
            "simulator.options.readings_per_message=256",
            "source.channel=aeron:ipc?term-length=65536",
            f"sink.queue.policy={policy}", f"sink.queue.capacity={capacity}",
            f"sink.delay_ms={delay_ms}",
        ]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if not stats_file.exists():
            raise SystemExit(f"run failed ({done.returncode}): {done.stderr.strip()}")
        stats = json.loads(stats_file.read_text())
        stats["returncode"] = done.returncode
        stats["stderr"] = done.stderr.strip()
        return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2_000_000)
    parser.add_argument("--sink-delay-ms", type=float, default=20.0)
    parser.add_argument(
        "--policy", choices=["block", "drop_oldest", "drop_newest", "fail"], default="block"
    )
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0, help="readings/s published (0: max)")
    args = parser.parse_args()
    stats = run(args.readings, args.sink_delay_ms, args.policy, args.capacity, args.rate)
    elapsed = max(stats["elapsed_s"], 1e-9)
    print(
        f"policy={args.policy} delay={args.sink_delay_ms} ms/batch: "
        f"published {stats['published']:,} received {stats['received']:,} "
        f"committed {stats['committed']:,} dropped {stats['dropped']:,} in {elapsed:.2f} s "
        f"({stats['committed'] / elapsed:,.0f} committed/s); back-pressured offers "
        f"{stats['backpressured_offers']:,}; blocked {stats['blocked_s']:.2f} s; "
        f"peak queue {stats['peak_queue_depth']}; peak RSS {stats['peak_rss_mb']:.0f} MB"
    )
    print(json.dumps(stats, sort_keys=True))


if __name__ == "__main__":
    main()
