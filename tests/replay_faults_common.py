"""What the exactly-once fault tests share (tests/pipelines/test_replay_faults*.py): the
CLI, a replay with a deterministic kill (``TELEPIPE_FAULT_KILL``) or a SIGKILL when a
table reaches a number of commits, a two-session capture, and every Delta table of a
data dir compared with a reference, every column."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from deltalake import DeltaTable
from helpers import ROOT

START = 1_767_225_600_000_000_000
PER_RUN = 20_000
# Small polls and a checkpoint every 3 of them: ~7 checkpoints, none by the clock.
REPLAY = [
    "replay.batch_messages=2",
    "source.checkpoint_every_readings=6000",
    "source.checkpoint_every_ms=100000000",
]
PIPELINES = ("demo", "press_line")
TABLES = {
    "demo": ["readings", "windows", "alarms", "late_readings", "dead_letters"],
    "press_line": [
        "readings", "stats_10s", "alarm_states", "stuck", "silent", "anomalies",
        "late_readings", "dead_letters",
    ],
}  # fmt: skip
# Kills before and after every table's commit of every checkpoint (ids a reference did
# not commit are skipped by the tests) and of the final one, after the flush.
EVERY = [
    (pipeline, f"{when}:{table}:{k}")
    for pipeline, names in TABLES.items()
    for table in names
    for k in [*range(1, 9), "end"]
    for when in ("before", "after")
]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env=env,
    )  # fmt: skip


def live_run(data_dir: Path, run: int, *extra: str) -> None:
    """One ``telepipe run`` of PER_RUN simulated readings (one publisher session), its
    event time starting ``run`` x 300 ms after START."""
    done = cli(
        "run", f"limit.readings={PER_RUN}", f"data_dir={data_dir}",
        f"simulator.options.start_ns={START + run * 300_000_000}",
        "simulator.options.rate=100000", "simulator.options.late_fraction=0.002", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def two_session_capture(base: Path) -> Path:
    """A capture two ``telepipe run ... capture_dir=`` runs wrote, one after the other."""
    capture = base / "capture"
    for run in (1, 2):
        live_run(base / f"live{run}", run, f"capture_dir={capture}")
    return capture


def fault_env(kill: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TELEPIPE_FAULT_KILL"}
    if kill is not None:
        env["TELEPIPE_FAULT_KILL"] = kill
    return env


def replay_args(pipeline: str, source: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        "replay", f"pipeline={pipeline}", f"input={source}", f"data_dir={data_dir}", *REPLAY,
        *extra,
    ]  # fmt: skip


def replay(
    pipeline: str, source: Path, data_dir: Path, kill: str | None = None, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``telepipe replay`` of ``source`` (a capture, pcap or archive); ``kill``: where
    the Delta sink SIGKILLs itself (``before|after:TABLE:K|end``)."""
    return cli(*replay_args(pipeline, source, data_dir, *extra), env=fault_env(kill))


def commits(data_dir: Path, table: str) -> int:
    """Delta commits of ``table`` so far (its log's JSON files): what a test waits on."""
    log = data_dir / table / "_delta_log"
    try:
        return sum(1 for p in log.iterdir() if p.suffix == ".json")
    except FileNotFoundError:
        return 0


def replay_killed_at_commit(
    pipeline: str, source: Path, data_dir: Path, table: str, n: int, *extra: str
) -> int:
    """A replay SIGKILLed from outside as soon as ``table`` holds ``n`` commits: wherever
    the run is then (another table's commit, decoding, the writer's queue). Returns its
    exit code (-9 once killed; 0 if it ended first)."""
    args = [sys.executable, "-m", "telepipe.cli", *replay_args(pipeline, source, data_dir, *extra)]
    process = subprocess.Popen(
        args, cwd=ROOT, env=fault_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and commits(data_dir, table) < n:
            assert time.monotonic() < deadline, f"{table} never reached {n} commits"
            time.sleep(0.002)  # watching the log: the readiness signal is the commit count
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def tables(data_dir: Path) -> dict[str, pl.DataFrame]:
    """Every Delta table under ``data_dir``, its rows in one order (all plain columns)."""
    out = {}
    for path in sorted(
        p for p in data_dir.iterdir() if p.is_dir() and DeltaTable.is_deltatable(str(p))
    ):
        frame = pl.read_delta(str(path))
        keys = [c for c, t in frame.schema.items() if not t.is_nested()]
        out[path.name] = frame.sort(keys)
    return out


def checkpoints(data_dir: Path, table: str) -> list[int]:
    history = DeltaTable(str(data_dir / table)).history()
    return sorted(
        int(h["telepipe.checkpoint_id"]) for h in history if "telepipe.checkpoint_id" in h
    )


def assert_same(reference: dict[str, pl.DataFrame], data_dir: Path) -> None:
    got = tables(data_dir)
    assert sorted(got) == sorted(reference)
    differ = {
        name: (frame.height, got[name].height)
        for name, frame in reference.items()
        if not frame.equals(got[name])
    }
    assert not differ, f"tables differ (reference rows, rows): {differ}"
