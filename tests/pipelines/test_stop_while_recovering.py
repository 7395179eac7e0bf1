"""A stop by signal while a restarted replay re-cuts the checkpoints its crashed run
committed to some tables only: no savepoint is taken (its id would name one of those
checkpoints at other positions, and the next restart would mix the two), nothing more
is committed, and a third run ends equal to an uninterrupted replay.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
from deltalake import DeltaTable
from helpers import ROOT, Watched

START = 1_767_225_600_000_000_000
REPLAY = [
    "replay.batch_messages=2",
    "source.checkpoint_every_readings=6000",
    "source.checkpoint_every_ms=100000000",
]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env=env,
    )  # fmt: skip


def tables(data_dir: Path) -> dict[str, pl.DataFrame]:
    out = {}
    for path in sorted(
        p for p in data_dir.iterdir() if p.is_dir() and DeltaTable.is_deltatable(str(p))
    ):
        frame = pl.read_delta(str(path))
        out[path.name] = frame.sort([c for c, t in frame.schema.items() if not t.is_nested()])
    return out


def recorded(tmp_path: Path) -> Path:
    """A capture of a live run of 20,000 readings."""
    capture = tmp_path / "capture"
    done = cli(
        "run", "limit.readings=20000", f"data_dir={tmp_path / 'live'}", f"capture_dir={capture}",
        f"simulator.options.start_ns={START}", "simulator.options.rate=100000",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return capture


def killed_after_readings_commit_2(capture: Path, tmp_path: Path) -> Path:
    """A replay SIGKILLed right after readings committed checkpoint 2 (the other tables
    hold 1): its data dir, which a restart recovers by re-cutting checkpoint 2."""
    data_dir = tmp_path / "data"
    env = {**os.environ, "TELEPIPE_FAULT_KILL": "after:readings:2"}
    killed = cli("replay", f"input={capture}", f"data_dir={data_dir}", *REPLAY, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return data_dir


def test_a_stop_while_recovering_takes_no_savepoint_and_loses_nothing(tmp_path: Path) -> None:
    capture = recorded(tmp_path)
    reference = tmp_path / "reference"
    done = cli("replay", f"input={capture}", f"data_dir={reference}", *REPLAY)
    assert done.returncode == 0, done.stderr

    data_dir = killed_after_readings_commit_2(capture, tmp_path)
    # readings holds checkpoint 2, the other tables 1: the restart re-cuts 2, slowly.
    stats = tmp_path / "stats.json"
    slow = Watched(
        [sys.executable, "-m", "telepipe.cli", "replay", f"input={capture}",
         f"data_dir={data_dir}", f"stats_file={stats}", "replay.speed=0.005", *REPLAY],
        cwd=ROOT,
    )  # fmt: skip
    try:
        slow.wait_for("telepipe: running:")
        slow.process.send_signal(signal.SIGINT)
        out, err = slow.finish()
    finally:
        if slow.process.poll() is None:
            slow.process.kill()
    assert slow.process.returncode == 0, err
    assert json.loads(stats.read_text())["stopped_with"] == "checkpoint", out
    assert "stopped while recovering" in out
    history = DeltaTable(str(data_dir / "windows")).history()
    assert max(int(h.get("telepipe.checkpoint_id", 0)) for h in history) == 1

    done = cli("replay", f"input={capture}", f"data_dir={data_dir}", *REPLAY)
    assert done.returncode == 0, done.stderr
    want, got = tables(reference), tables(data_dir)
    assert sorted(got) == sorted(want)
    differ = [name for name, frame in want.items() if not frame.equals(got[name])]
    assert not differ, differ


def test_a_drain_while_recovering_takes_no_barrier_and_a_drained_replay_does_not_go_on(
    tmp_path: Path,
) -> None:
    """``stop --drain`` (SIGUSR1) lands while a restart re-cuts a crashed run's
    checkpoints: nothing more is committed (a flushed barrier's id would have named a
    checkpoint some tables hold at other positions). A replay drained by a limit
    cannot be continued: its windows were flushed as final, so a restart refuses in
    one line rather than making every later reading late."""
    capture = recorded(tmp_path)
    data_dir = killed_after_readings_commit_2(capture, tmp_path)
    slow = Watched(
        [sys.executable, "-m", "telepipe.cli", "replay", f"input={capture}",
         f"data_dir={data_dir}", "replay.speed=0.005", *REPLAY],
        cwd=ROOT,
    )  # fmt: skip
    try:
        slow.wait_for("telepipe: running:")
        slow.process.send_signal(signal.SIGUSR1)
        out, err = slow.finish()
    finally:
        if slow.process.poll() is None:
            slow.process.kill()
    assert slow.process.returncode == 0, err
    assert "stopped while recovering" in out
    windows = DeltaTable(str(data_dir / "windows")).history()
    assert max(int(h.get("telepipe.checkpoint_id", 0)) for h in windows) == 1

    drained = tmp_path / "drained"
    done = cli("replay", f"input={capture}", f"data_dir={drained}", "limit.readings=8000", *REPLAY)
    assert done.returncode == 0, done.stderr
    again = cli("replay", f"input={capture}", f"data_dir={drained}", *REPLAY)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "stopped drained at checkpoint" in again.stderr
