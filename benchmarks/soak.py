"""Memory soak: a live pipeline (simulator -> Aeron -> operators -> Delta) for many
minutes, its resident memory sampled the whole time. Bounded state shows as a flat
line after warm-up; a leak as a slope.

Runs ``telepipe run pipeline=<--pipeline>`` with the simulator publishing
``--rate`` readings/s, samples the RSS of the pipeline process and of its simulator
child (psutil, as ``RunStats`` does) every ``--sample-s`` seconds, stops the run with SIGINT (a
graceful stop: everything received is committed) after ``--minutes``, and reports
RSS per minute, the slope over the second half (least squares, MB per minute), the
readings committed and the final table sizes. Long: not part of the test suite.

    .venv/bin/python benchmarks/soak.py --minutes 30 --pipeline press_line --rate 200000
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from _common import REPO, machine, write_json


def rss_mb(process: psutil.Process) -> float | None:
    try:
        return process.memory_info().rss / 2**20
    except psutil.Error:  # it has just exited
        return None


def slope_mb_per_min(t_s: np.ndarray, mb: np.ndarray) -> float:
    if len(t_s) < 2:
        return float("nan")
    return float(np.polyfit(t_s / 60.0, mb, 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--pipeline", default="press_line")
    parser.add_argument("--rate", type=int, default=200_000, help="simulated readings/s")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="telepipe-soak-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        stats_file = Path(tmp) / "stats.json"
        command = [
            sys.executable, "-m", "telepipe.cli", "run", f"pipeline={args.pipeline}",
            f"data_dir={data_dir}", f"stats_file={stats_file}", "ui=never",
            f"simulator.options.rate={float(args.rate)}",
        ]  # fmt: skip
        run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started = time.monotonic()
        samples: list[tuple[float, float, float]] = []  # (s, pipeline MB, simulator MB)
        pipeline = psutil.Process(run.pid)
        while run.poll() is None and time.monotonic() - started < args.minutes * 60:
            mine = rss_mb(pipeline)
            sim = sum(rss_mb(c) or 0.0 for c in pipeline.children())
            if mine is not None:
                samples.append((time.monotonic() - started, mine, sim))
            time.sleep(args.sample_s)
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=600)
        if run.returncode != 0:
            print(err.decode()[-2000:], file=sys.stderr)
            return 1
        stats = json.loads(stats_file.read_text())
        tables = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                  for p in sorted(data_dir.iterdir()) if p.is_dir()}  # fmt: skip

    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples])
    sim = np.array([s[2] for s in samples])
    half = t >= t[-1] / 2 if len(t) else t.astype(bool)
    per_minute = {}
    for minute in range(int(t[-1] // 60) + 1 if len(t) else 0):
        mine = (t >= minute * 60) & (t < (minute + 1) * 60)
        if mine.any():
            per_minute[minute] = round(float(np.median(mb[mine])), 1)
    result = {
        "benchmark": "soak",
        "machine": machine(),
        "command": " ".join(command[1:]),
        "minutes": round(float(t[-1]) / 60, 2) if len(t) else 0.0,
        "samples": len(t),
        "pipeline_rss_mb_median_per_minute": per_minute,
        "pipeline_rss_mb_peak": round(float(mb.max()), 1) if len(mb) else None,
        "pipeline_rss_slope_mb_per_min_second_half": round(slope_mb_per_min(t[half], mb[half]), 3),
        "simulator_rss_mb_peak": round(float(sim.max()), 1) if len(sim) else None,
        "simulator_rss_slope_mb_per_min_second_half": round(
            slope_mb_per_min(t[half], sim[half]), 3
        ),
        "received": stats.get("received"),
        "committed": stats.get("committed"),
        "committed_by_table": stats.get("committed_by_table"),
        "late": stats.get("late"),
        "dropped": stats.get("dropped"),
        "exit_reason": stats.get("exit_reason"),
        "table_bytes": tables,
    }
    for line in out.decode().strip().splitlines()[-3:]:
        print(line)
    print(
        f"{result['minutes']} min, {result['committed']:,} readings committed; pipeline RSS "
        f"peak {result['pipeline_rss_mb_peak']} MB, second-half slope "
        f"{result['pipeline_rss_slope_mb_per_min_second_half']} MB/min; per minute (median MB): "
        f"{per_minute}"
    )
    return write_json(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
