"""Back-pressure with real processes: a sink much slower than the source, per policy.

The simulator publishes as fast as Aeron lets it; the sink sleeps per batch. A
small term buffer (64 KiB) makes Aeron's flow control bite early.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from telepipe.sources.simulator import SimulatorOptions, TelemetryGenerator

START = 1_767_225_600_000_000_000
PER_MESSAGE = 256


def run(telepipe_cli, tmp_path: Path, n: int, policy: str, delay_ms: float, capacity: int = 4):
    data_dir, stats_file = tmp_path / f"data-{n}", tmp_path / f"stats-{n}.json"
    done = telepipe_cli(
        "run",
        f"limit.readings={n}",
        f"data_dir={data_dir}",
        f"stats_file={stats_file}",
        "simulator.options.late_fraction=0",
        f"simulator.options.start_ns={START}",
        f"simulator.options.readings_per_message={PER_MESSAGE}",
        "source.channel=aeron:ipc?term-length=65536",
        "source.checkpoint_every_readings=20000",
        f"sink.queue.capacity={capacity}",
        f"sink.queue.policy={policy}",
        f"sink.delay_ms={delay_ms}",
    )
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    return done, stats, data_dir


def published(n: int) -> pl.DataFrame:
    options = SimulatorOptions(late_fraction=0.0, start_ns=START, readings_per_message=PER_MESSAGE)
    chunks = list(TelemetryGenerator(options).chunks(n))
    return pl.DataFrame(
        {
            "sensor_id": np.concatenate([c["sensor_id"] for c in chunks]),
            "ts_ns": np.concatenate([c["ts"] for c in chunks]),
        }
    ).with_row_index("seq")


def test_block_loses_nothing_and_pushes_back_to_the_publisher(telepipe_cli, tmp_path) -> None:
    peaks = {}
    for n in (100_000, 300_000):
        done, stats, data_dir = run(telepipe_cli, tmp_path, n, "block", delay_ms=5)
        assert done.returncode == 0, done.stderr
        assert stats["published"] == stats["received"] == stats["committed"] == n
        assert stats["dropped"] == 0
        assert stats["backpressured_offers"] > 0
        assert stats["blocked_s"] > 0
        assert stats["peak_queue_depth"] <= 4
        assert pl.read_delta(str(data_dir / "readings")).height == n
        peaks[n] = stats["peak_rss_mb"]
    # Three times the readings, not three times the memory: the queue bounds it.
    assert peaks[300_000] < peaks[100_000] + 40, peaks


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_drop_policies_count_every_dropped_row(telepipe_cli, tmp_path, policy: str) -> None:
    n = 200_000
    done, stats, data_dir = run(telepipe_cli, tmp_path, n, policy, delay_ms=20, capacity=2)
    assert done.returncode == 0, done.stderr
    assert stats["received"] == n
    assert stats["dropped"] > 0
    assert stats["received"] == stats["committed"] + stats["dropped"]
    committed = pl.read_delta(str(data_dir / "readings")).select("sensor_id", "ts_ns")
    assert committed.height == stats["committed"]
    sent = published(n)
    kept = sent.join(committed, on=["sensor_id", "ts_ns"], how="semi")
    # Every committed row was published, and no more often than it was published.
    # (The simulator can repeat a (sensor, ts) pair, so compare counts per pair.)
    key = ["sensor_id", "ts_ns"]
    per_key = (
        committed.group_by(key).len("got").join(sent.group_by(key).len("sent"), on=key, how="left")
    )
    assert per_key["sent"].null_count() == 0
    assert (per_key["got"] <= per_key["sent"]).all()
    if policy == "drop_newest":
        # The queue keeps what it holds and refuses arrivals: the start survives.
        assert kept["seq"].min() == 0
    else:
        # The queue evicts its oldest batch for each arrival: the end survives.
        assert kept["seq"].max() == n - 1


def test_fail_stops_with_the_reason_and_keeps_what_was_committed(telepipe_cli, tmp_path) -> None:
    done, stats, data_dir = run(telepipe_cli, tmp_path, 300_000, "fail", delay_ms=50, capacity=1)
    assert done.returncode == 1
    # The one line a run prints once readings arrive, then the error's one line.
    lines = [ln for ln in done.stderr.strip().splitlines() if "telepipe: running:" not in ln]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "its policy is 'fail'" in lines[0]
    assert stats["exit_reason"].startswith("error:")
    readings = data_dir / "readings"
    if readings.exists():
        assert pl.read_delta(str(readings)).height == stats["committed"]
    assert stats["committed"] < 300_000
