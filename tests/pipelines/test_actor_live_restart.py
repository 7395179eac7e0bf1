"""A live ``pipeline=equipment`` run stopped by SIGTERM (a savepoint) and restarted goes on
with every machine's state: the restart takes the machines from the event store
(``actor_snapshots`` + ``actor_events``), the stage's checkpoint keeping only what the
store does not. A machine's event numbers and its time in each state continue where
they stopped (a fresh actor would start them again from 1 and 0), and the store folds
back, with no gap, to each machine's last state row."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import DeltaTable
from helpers import ROOT, Watched

from telepipe.operators.actors import ActorStage, recover
from telepipe.state import read_checkpoint

SEC = 1_000_000_000
START_NS = 1_800_000_000 * SEC
STATE_NS = ["state_idle_ns", "state_running_ns", "state_fault_ns", "state_maintenance_ns"]


def _live(data_dir: Path, stats: Path, *extra: str) -> Watched:
    return Watched(
        [sys.executable, "-m", "telepipe", "run", "pipeline=equipment", "pipeline.publish=null",
         f"data_dir={data_dir}", f"stats_file={stats}", "ui=never",
         "simulator.options.rate=100000", "simulator.options.late_fraction=0", *extra],
        cwd=ROOT,
    )  # fmt: skip


def _wait_for_rows(table: Path, run: Watched, timeout: float = 120.0) -> None:
    """Until ``table`` has committed rows (a checkpoint with machines' changes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.process.poll() is None, "".join(run.lines["stderr"])
        if DeltaTable.is_deltatable(str(table)) and pl.read_delta(str(table)).height:
            return
        time.sleep(0.05)  # a poll of the condition, not a wait for it
    raise AssertionError(f"{table.name}: no rows after {timeout} s")


def test_a_live_restart_from_a_savepoint_goes_on_with_every_machine(tmp_path: Path) -> None:
    data_dir, stats1, stats2 = tmp_path / "data", tmp_path / "s1.json", tmp_path / "s2.json"
    first = _live(data_dir, stats1, f"simulator.options.start_ns={START_NS}")
    first.wait_for("telepipe: running:")
    _wait_for_rows(data_dir / "machine_states", first)
    first.process.send_signal(signal.SIGTERM)
    _, err = first.finish(timeout=180)
    assert first.process.returncode == 0, err
    s1 = json.loads(stats1.read_text())
    assert s1["stopped_with"] == "savepoint"
    before = pl.read_delta(str(data_dir / "machine_states"))
    assert before.height > 0
    stopped_at = pl.read_delta(str(data_dir / "readings"))["ts_ns"].max()
    assert isinstance(stopped_at, int)
    # The savepoint keeps no machine's state: the event store has it.
    history = DeltaTable(str(data_dir / "machine_states")).history()
    manifest = next(h["telepipe.state"] for h in history if "telepipe.state" in h)
    saved = read_checkpoint(data_dir, manifest).steps["machines"].state
    assert saved["entities_at"] == "store" and "state_state" not in saved

    second = _live(
        data_dir, stats2, f"simulator.options.start_ns={stopped_at + 10_000_000}",
        "limit.readings=100000",
    )  # fmt: skip
    out, err = second.finish(timeout=180)
    assert second.process.returncode == 0, err
    s2 = json.loads(stats2.read_text())
    assert s2["resumed_from"] == s1["final_checkpoint"] > 0
    assert s2["restored_from_savepoint"] is True

    rows = pl.read_delta(str(data_dir / "machine_states")).sort("equipment_id", "seq")
    assert rows.height > before.height
    # One row per (machine, event number): numbers go on, never start again.
    assert rows.select("equipment_id", "seq").is_duplicated().sum() == 0
    # Time in each state never goes back for a machine across the restart.
    for column in STATE_NS:
        back = rows.with_columns(d=pl.col(column).diff().over("equipment_id"))
        assert back.filter(pl.col("d") < 0).height == 0, column
    both = set(before["equipment_id"].to_list()) & set(
        rows.filter(pl.col("ts_ns") > stopped_at)["equipment_id"].to_list()
    )
    assert both, "no machine changed state in both runs"
    for machine in sorted(both)[:5]:
        mine = rows.filter(pl.col("equipment_id") == machine)
        last1 = before.filter(pl.col("equipment_id") == machine).sort("seq").tail(1)
        later = mine.filter(pl.col("seq") > last1["seq"][0]).head(1)
        assert later["ts_ns"][0] >= last1["ts_ns"][0]  # rows held at the stop come first
        # its first change after the restart counts the time of the first run
        assert sum(later[c][0] for c in STATE_NS) >= sum(last1[c][0] for c in STATE_NS)
        if later["event"][0] == "changed":
            assert later["from_state"][0] == last1["to_state"][0]

    # The store folds back, with no gap, to each machine's last state row.
    from hydra import compose, initialize_config_dir

    from telepipe.config import build, conf_dir

    with initialize_config_dir(str(conf_dir()), version_base=None):
        cfg = compose("config", ["pipeline=equipment"])
    op = build(cfg.pipeline.outputs.machine_states.machines, "machines")
    assert isinstance(op, ActorStage)
    got = recover(data_dir, op, "machine_states.machines")
    last = rows.group_by("equipment_id").agg(pl.all().sort_by("seq").last()).sort("equipment_id")
    at = np.searchsorted(np.asarray(got["sensor_id"]), last["equipment_id"].to_numpy())
    for column in STATE_NS:
        assert np.asarray(got[column])[at].tolist() == last[column].to_list(), column
    assert "restored every operator from savepoint" in out
