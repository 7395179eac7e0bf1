"""The demo end to end, as a user runs it: simulator process -> Aeron -> RxPY -> numba -> Delta."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from helpers import ROOT, Watched, free_udp_port
from reference import alarms_reference

from telepipe.sbe import SbeCodec

N = 300_000
SEC = 1_000_000_000


def _read(data_dir: Path, table: str) -> pl.DataFrame:
    return pl.read_delta(str(data_dir / table))


def _check_tables(data_dir: Path, n: int) -> dict[str, pl.DataFrame]:
    readings = _read(data_dir, "readings")
    assert readings.height == n
    assert _read(data_dir, "late_readings").height == 0
    assert (
        readings.select(pl.col("ts_ns").is_duplicated() & pl.col("sensor_id").is_duplicated())
        .to_series()
        .sum()
        <= n
    )  # shape sanity; exactness below

    expected = (
        readings.with_columns(window_start=(pl.col("ts_ns") // SEC) * SEC)
        .group_by("sensor_id", "window_start")
        .agg(
            count=pl.len(),
            mean=pl.col("value").mean(),
            min=pl.col("value").min(),
            max=pl.col("value").max(),
        )
        .sort("window_start", "sensor_id")
    )
    windows = _read(data_dir, "windows").sort("window_start_ns", "sensor_id")
    assert windows.height == expected.height
    assert windows["sensor_id"].to_list() == expected["sensor_id"].to_list()
    assert windows["window_start_ns"].to_list() == expected["window_start"].to_list()
    assert (windows["window_end_ns"] - windows["window_start_ns"]).unique().to_list() == [SEC]
    assert windows["count"].to_list() == expected["count"].to_list()
    assert windows["min"].to_list() == expected["min"].to_list()
    assert windows["max"].to_list() == expected["max"].to_list()
    np.testing.assert_allclose(windows["mean"].to_numpy(), expected["mean"].to_numpy(), rtol=1e-12)

    # Alarms: the pure-Python reference over the readings in publish order
    # (the Delta table keeps commit order, which is arrival order).
    alarms = _read(data_dir, "alarms").sort("ts_ns", "sensor_id")
    ref = alarms_reference(
        readings["sensor_id"].to_list(),
        readings["ts_ns"].to_list(),
        readings["value"].to_list(),
        80.0,
        3,
    )
    ref_rows = sorted((r[1], r[0]) for r in ref)
    assert (
        list(zip(alarms["ts_ns"].to_list(), alarms["sensor_id"].to_list(), strict=True)) == ref_rows
    )
    assert alarms.height > 0
    return {"readings": readings, "windows": windows, "alarms": alarms}


@pytest.mark.parametrize(
    ("pipeline", "transport"), [("demo", "ipc"), ("demo", "udp"), ("demo_threaded", "ipc")]
)
def test_demo_commits_every_reading(
    telepipe_cli, tmp_path: Path, pipeline: str, transport: str
) -> None:
    data_dir, stats_file = tmp_path / "data", tmp_path / "stats.json"
    extra = []
    if transport == "udp":
        extra = [
            "source=aeron_udp",
            f"source.channel=aeron:udp?endpoint=127.0.0.1:{free_udp_port()}",
        ]
    done = telepipe_cli(
        "run",
        f"pipeline={pipeline}",
        f"limit.readings={N}",
        f"data_dir={data_dir}",
        f"stats_file={stats_file}",
        "simulator.options.late_fraction=0",
        *extra,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{N:,} readings" in done.stdout
    assert str(data_dir) in done.stdout

    stats = json.loads(stats_file.read_text())
    assert stats["published"] == N
    assert stats["received"] == N
    assert stats["committed"] == N
    assert stats["dropped"] == 0 and stats["rejected"] == 0 and stats["late"] == 0
    for key in ("backpressured_offers", "peak_queue_depth", "peak_rss_mb"):
        assert key in stats
    _check_tables(data_dir, N)


def test_late_readings_go_to_their_own_table(telepipe_cli, tmp_path: Path) -> None:
    data_dir, stats_file = tmp_path / "data", tmp_path / "stats.json"
    n = 100_000
    done = telepipe_cli(
        "run",
        f"limit.readings={n}",
        f"data_dir={data_dir}",
        f"stats_file={stats_file}",
        "simulator.options.late_fraction=0.01",
        "simulator.options.late_ms=500",
    )
    assert done.returncode == 0, done.stderr
    stats = json.loads(stats_file.read_text())
    late = _read(data_dir, "late_readings")
    readings = _read(data_dir, "readings")
    assert late.height == stats["late"] > 0
    assert readings.height + late.height == n
    # Every late row is behind the bound: no window of the table counts it.
    windows = _read(data_dir, "windows")
    assert windows["count"].sum() == readings.height
    # And each message's late rows are a dead letter holding exactly those rows.
    letters = _read(data_dir, "dead_letters")
    assert set(letters["reason"]) == {"late_reading"}
    codec = SbeCodec.from_xml(ROOT / "conf/schema/telemetry.xml")
    batches = [codec.decode_one(p).batch for p in letters["payload"]]
    decoded = pl.from_arrow(pa.Table.from_batches(batches))
    assert isinstance(decoded, pl.DataFrame)
    key = ["sensor_id", "ts_ns", "value"]
    decoded = decoded.with_columns(ts_ns=pl.col("ts").dt.epoch("ns")).select(key)
    assert decoded.sort(key).equals(late.select(key).sort(key))


@pytest.mark.parametrize("drain", [False, True])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_without_a_limit_a_signal_takes_a_savepoint_or_drains_and_exits_0(
    tmp_path: Path, signum: int, drain: bool
) -> None:
    """A stop by signal commits every reading it read and the operators' open state,
    and flushes nothing (no partial window); ``drain=true`` flushes every window."""
    data_dir, stats_file = tmp_path / "data", tmp_path / "stats.json"
    run = Watched(
        [sys.executable, "-m", "telepipe", "run", f"data_dir={data_dir}", f"stats_file={stats_file}",
         "simulator.options.rate=100000", "simulator.options.late_fraction=0",
         f"drain={str(drain).lower()}"],
        cwd=ROOT,
    )  # fmt: skip
    run.wait_for("telepipe: running:")  # handlers installed, readings arriving
    run.process.send_signal(signum)
    out, err = run.finish(timeout=120)
    assert run.process.returncode == 0, err
    stats = json.loads(stats_file.read_text())
    assert stats["exit_reason"] == signal.Signals(signum).name
    assert stats["stopped_with"] == ("drain" if drain else "savepoint")
    assert stats["received"] > 0 and stats["committed"] == stats["received"]
    readings = _read(data_dir, "readings")
    assert readings.height == stats["received"]
    windows = _read(data_dir, "windows")
    newest = readings["ts_ns"].max()
    assert isinstance(newest, int)
    if drain:  # every committed reading is in a committed window
        assert windows["count"].sum() == stats["received"]
    else:  # only windows the watermark closed: none ends after the newest reading
        assert windows["count"].sum() < stats["received"]
        assert windows.filter(pl.col("window_end_ns") > newest).height == 0
        assert "stopped with a savepoint" in out
    assert "Delta tables in" in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_signal_as_soon_as_the_cli_handles_it_is_a_clean_exit(
    tmp_path: Path, signum: int, command: str
) -> None:
    """The CLI takes SIGINT/SIGTERM before its heavy imports (numba, pyarrow, Hydra): a
    signal then is a clean exit 0, never -15 or a KeyboardInterrupt (130); a run that
    was starting up stops as soon as it is up, with its stats."""
    data_dir, stats_file = tmp_path / "data", tmp_path / "stats.json"
    args = [sys.executable, "-m", "telepipe", command]
    if command == "run":
        args += [f"data_dir={data_dir}", f"stats_file={stats_file}"]
    proc = Watched(args, cwd=tmp_path)
    deadline = time.monotonic() + 60
    # Python takes SIGINT itself at start-up; telepipe takes both at once, so its
    # SIGTERM handler being in is the readiness this case needs.
    while not proc.catches(signal.SIGTERM):
        assert proc.process.poll() is None and time.monotonic() < deadline, proc.finish()
        time.sleep(0.001)
    proc.process.send_signal(signum)
    _, err = proc.finish(timeout=120)
    assert proc.process.returncode == 0, err
    if command == "run" and stats_file.exists():  # the run took the signal once up
        assert json.loads(stats_file.read_text())["exit_reason"] == signal.Signals(signum).name
    else:  # (validate may also have finished first)
        stopped = f"telepipe: stopped by {signal.Signals(signum).name}"
        assert err.strip() in (stopped, ""), err


def test_the_press_line_pipeline_runs_every_detector(telepipe_cli, tmp_path: Path) -> None:
    done = telepipe_cli(
        "run", "pipeline=press_line", "limit.readings=300000", f"data_dir={tmp_path}"
    )
    assert done.returncode == 0, done.stderr
    heights = {
        t: _read(tmp_path, t).height
        for t in ("readings", "stats_10s", "alarm_states", "stuck", "silent")
    }
    assert heights["readings"] + _read(tmp_path, "late_readings").height == 300_000
    assert all(heights.values()), heights


def test_a_signal_kept_while_a_run_starts_up_stops_it_once_up(tmp_path: Path) -> None:
    """A signal after ``run`` deferred it (loading numba, starting the driver) is not
    lost: the run stops as soon as its own handler is in, exit 0, with its stats."""
    stats_file = tmp_path / "stats.json"
    code = (
        "import sys; from telepipe import signals; from telepipe.cli import main; "
        "signals.defer(); signals._pending.append('SIGTERM'); "
        f"sys.exit(main(['run', 'data_dir={tmp_path / 'data'}', 'stats_file={stats_file}']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(stats_file.read_text())["exit_reason"] == "SIGTERM"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_finished_run_exits_does_not_kill_it(tmp_path: Path, signum: int) -> None:
    """Python restores the default actions as it shuts down; a run's threads take ~1 s
    to go, and a signal then ended a finished run with -15 / -2."""
    run = Watched(
        [sys.executable, "-m", "telepipe", "run", "limit.readings=20000", f"data_dir={tmp_path}"],
        cwd=tmp_path,
    )
    run.wait_for("Delta tables in", stream="stdout")
    run.process.send_signal(signum)
    _, err = run.finish(timeout=120)
    assert run.process.returncode == 0, err
