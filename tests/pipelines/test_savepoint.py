"""A stop by signal is a savepoint; a live restart goes on from it (issue 16, parts 5-6).

SIGINT/SIGTERM stop polling, commit a last checkpoint with every operator's open
state and exit 0 without flushing: no partial window, no end-of-stream detector row.
``drain=true`` flushes instead. A live ``run`` restarted on the same data_dir restores
every operator and goes on, so a window open at the stop completes with the new
readings; a changed pipeline is refused in one line unless ``fresh=true``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import ROOT, Watched
from reference import alarms_reference

SEC = 1_000_000_000
START_NS = 1_800_000_000 * SEC  # a whole second: the run's first window starts with it


def _read(data_dir: Path, table: str) -> pl.DataFrame:
    return pl.read_delta(str(data_dir / table))


def _live(data_dir: Path, stats: Path, *extra: str) -> Watched:
    return Watched(
        [sys.executable, "-m", "telepipe", "run", f"data_dir={data_dir}", f"stats_file={stats}",
         "ui=never", "simulator.options.rate=100000", "simulator.options.late_fraction=0", *extra],
        cwd=ROOT,
    )  # fmt: skip


def _stop(run: Watched, signum: int = signal.SIGTERM) -> tuple[str, str]:
    run.wait_for("telepipe: running:")  # handlers in, readings arriving
    run.process.send_signal(signum)
    out, err = run.finish(timeout=180)
    assert run.process.returncode == 0, err
    return out, err


@pytest.mark.parametrize("pipeline", ["demo", "press_line"])
@pytest.mark.parametrize("drain", [False, True])
def test_a_signal_takes_a_savepoint_and_drain_true_flushes(
    tmp_path: Path, pipeline: str, drain: bool
) -> None:
    data_dir, stats_file = tmp_path / "data", tmp_path / "stats.json"
    run = _live(data_dir, stats_file, f"pipeline={pipeline}", f"drain={str(drain).lower()}")
    out, _ = _stop(run)
    stats = json.loads(stats_file.read_text())
    assert stats["exit_reason"] == "SIGTERM"
    assert stats["stopped_with"] == ("drain" if drain else "savepoint")
    assert stats["received"] > 0 and stats["committed"] == stats["received"]
    readings = _read(data_dir, "readings")
    assert readings.height == stats["received"]
    newest = readings["ts_ns"].max()
    assert isinstance(newest, int)
    window_table = "windows" if pipeline == "demo" else "stats_10s"
    windows = _read(data_dir, window_table)
    # A window is final only once the watermark passed its end; a flush emits the open
    # ones too, which end after the newest reading.
    partial = windows.filter(pl.col("window_end_ns") > newest).height
    if drain:
        assert partial > 0
        assert "savepoint" not in out
    else:
        assert partial == 0, f"{partial} partial windows committed by a stop"
        assert "stopped with a savepoint" in out
    if pipeline == "demo":
        counted = windows["count"].sum()
        assert (counted == readings.height) if drain else (counted < readings.height)
    else:
        silent = _read(data_dir, "silent").height
        if drain:  # the end of the stream: every sensor goes silent
            assert silent >= 900
        else:
            assert silent == 0, f"{silent} silent-sensor rows from a stop"


def test_a_live_restart_completes_the_window_open_at_the_stop(tmp_path: Path) -> None:
    data_dir, stats1, stats2 = tmp_path / "data", tmp_path / "s1.json", tmp_path / "s2.json"
    _stop(_live(data_dir, stats1, f"simulator.options.start_ns={START_NS}"))
    first = _read(data_dir, "readings")
    stopped_at = first["ts_ns"].max()
    assert isinstance(stopped_at, int)
    assert stopped_at < START_NS + SEC, "the first run left its first window"
    assert _read(data_dir, "windows").height == 0  # the open window is in the savepoint
    # The restart's simulator goes on in event time where the first one stopped.
    start2 = stopped_at + 10_000_000
    run2 = _live(data_dir, stats2, f"simulator.options.start_ns={start2}", "limit.readings=100000")
    out, _ = run2.finish(timeout=180)
    assert run2.process.returncode == 0, "".join(run2.lines["stderr"])
    s1, s2 = json.loads(stats1.read_text()), json.loads(stats2.read_text())
    assert s2["resumed_from"] == s1["final_checkpoint"] > 0
    assert s2["gap_wall_s"] > 0 and s2["gap_event_ms"] > 0
    assert s2["lost"] >= 0 and "lost" in s1
    assert s2["restored_from_savepoint"] is True
    assert f"restored every operator from savepoint {s1['final_checkpoint']}" in out

    readings = _read(data_dir, "readings")
    assert readings.height == s1["received"] + s2["received"]
    expected = (
        readings.with_columns(window_start=(pl.col("ts_ns") // SEC) * SEC)
        .group_by("sensor_id", "window_start")
        .agg(count=pl.len(), min=pl.col("value").min(), max=pl.col("value").max())
        .sort("window_start", "sensor_id")
    )
    windows = _read(data_dir, "windows").sort("window_start_ns", "sensor_id")
    assert windows.height == expected.height  # one row per window: none twice, none lost
    assert windows["window_start_ns"].to_list() == expected["window_start"].to_list()
    assert windows["count"].to_list() == expected["count"].to_list()
    assert windows["min"].to_list() == expected["min"].to_list()
    assert windows["max"].to_list() == expected["max"].to_list()
    # The window open at the stop has both runs' rows.
    spanning = START_NS + (stopped_at - START_NS) // SEC * SEC
    both = windows.filter(pl.col("window_start_ns") == spanning)["count"].sum()
    assert (
        both
        == readings.filter(
            (pl.col("ts_ns") >= spanning) & (pl.col("ts_ns") < spanning + SEC)
        ).height
    )
    assert 0 < first.filter(pl.col("ts_ns") >= spanning).height < both
    # A detector keeps its run: the alarms are those of one uninterrupted stream.
    alarms = _read(data_dir, "alarms").sort("ts_ns", "sensor_id")
    ref = alarms_reference(
        readings["sensor_id"].to_list(),
        readings["ts_ns"].to_list(),
        readings["value"].to_list(),
        80.0,
        3,
    )
    got = list(zip(alarms["ts_ns"].to_list(), alarms["sensor_id"].to_list(), strict=True))
    assert got == sorted((r[1], r[0]) for r in ref)
    assert np.all(np.diff(windows["window_start_ns"].to_numpy()) >= 0)


def test_a_restart_with_a_changed_pipeline_is_refused_unless_fresh(tmp_path: Path) -> None:
    data_dir, stats = tmp_path / "data", tmp_path / "s.json"
    _stop(_live(data_dir, stats))
    before = _read(data_dir, "readings").height
    changed = _live(data_dir, stats, "pipeline.outputs.windows.window.size_ms=2000")
    _, err = changed.finish(timeout=180)
    assert changed.process.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "step 'window'" in err and "size_ms" in err and "fresh=true" in err, err
    fresh = _live(
        data_dir,
        stats,
        "pipeline.outputs.windows.window.size_ms=2000",
        "fresh=true",
        "limit.readings=20000",
    )
    _, err = fresh.finish(timeout=180)
    assert fresh.process.returncode == 0, err
    assert json.loads(stats.read_text())["resumed_from"] == 0
    assert _read(data_dir, "readings").height == before + 20_000  # the tables are kept


def _windows_match_readings(data_dir: Path) -> pl.DataFrame:
    readings = _read(data_dir, "readings")
    expected = (
        readings.with_columns(window_start=(pl.col("ts_ns") // SEC) * SEC)
        .group_by("sensor_id", "window_start")
        .agg(count=pl.len())
        .sort("window_start", "sensor_id")
    )
    windows = _read(data_dir, "windows").sort("window_start_ns", "sensor_id")
    assert windows.height == expected.height
    assert windows["sensor_id"].to_list() == expected["sensor_id"].to_list()
    assert windows["window_start_ns"].to_list() == expected["window_start"].to_list()
    assert windows["count"].to_list() == expected["count"].to_list()
    return windows


def test_a_live_restart_after_a_crash_between_two_tables_commits(tmp_path: Path) -> None:
    """Killed after ``windows`` committed checkpoint 2 and before ``alarms`` did: the
    restart takes each table's chain from its own last checkpoint, so ``windows``
    neither counts twice nor emits again what it committed, and goes on."""
    data_dir, stats1, stats2 = tmp_path / "data", tmp_path / "s1.json", tmp_path / "s2.json"
    crashed = Watched(
        [sys.executable, "-m", "telepipe", "run", f"data_dir={data_dir}", f"stats_file={stats1}",
         "ui=never", "simulator.options.rate=100000", "simulator.options.late_fraction=0",
         f"simulator.options.start_ns={START_NS}"],
        cwd=ROOT,
        env={**os.environ, "TELEPIPE_FAULT_KILL": "after:windows:2"},
    )  # fmt: skip
    crashed.finish(timeout=180)
    assert crashed.process.returncode == -signal.SIGKILL, "".join(crashed.lines["stderr"])
    stopped_at = _read(data_dir, "readings")["ts_ns"].max()
    assert isinstance(stopped_at, int) and stopped_at < START_NS + SEC
    run2 = _live(
        data_dir, stats2, f"simulator.options.start_ns={stopped_at + 10_000_000}",
        "limit.readings=100000",
    )  # fmt: skip
    run2.finish(timeout=180)
    assert run2.process.returncode == 0, "".join(run2.lines["stderr"])
    s2 = json.loads(stats2.read_text())
    assert s2["resumed_from"] >= 1 and s2["gap_event_ms"] > 0
    assert s2["restored_from_savepoint"] is False  # a crash: the summary says what it lost
    windows = _windows_match_readings(data_dir)
    spanning = windows.filter(pl.col("window_start_ns") == START_NS)["count"].sum()
    assert spanning > s2["received"]  # the window open at the crash has both runs' rows
    alarms = _read(data_dir, "alarms")
    assert alarms.select("sensor_id", "ts_ns").is_duplicated().sum() == 0
