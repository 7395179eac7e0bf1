"""Live restarts of ``pipeline=equipment`` that the savepoint test does not cover: after
``telepipe stop --drain``, with ``fresh=true``, and after a crash between two tables'
commits (``TELEPIPE_FAULT_KILL``). A machine's state is long-lived: drain and fresh
concern the open windows and detectors, so every restart takes the machines from the
event store. Each case ends with a store whose every machine's event numbers run
1, 2, ... with no duplicate, and whose fold at the final checkpoint equals each
machine's last state row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from deltalake import DeltaTable
from helpers import ROOT, Watched

from telepipe.operators.actors import ActorStage, recover
from telepipe.sinks.delta import last_checkpoint

SEC = 1_000_000_000
START_NS = 1_800_000_000 * SEC
STEP = "machine_states.machines"
STATE_NS = ["state_idle_ns", "state_running_ns", "state_fault_ns", "state_maintenance_ns"]


def _live(data_dir: Path, stats: Path, *extra: str, env: dict[str, str] | None = None) -> Watched:
    return Watched(
        [sys.executable, "-m", "telepipe", "run", "pipeline=equipment", "pipeline.publish=null",
         f"data_dir={data_dir}", f"stats_file={stats}", "ui=never",
         "simulator.options.rate=100000", "simulator.options.late_fraction=0", *extra],
        cwd=ROOT, env=env,
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


def _stopped_at(data_dir: Path) -> int:
    stopped_at = pl.read_delta(str(data_dir / "readings"))["ts_ns"].max()
    assert isinstance(stopped_at, int)
    return stopped_at


def _second_run(data_dir: Path, stats: Path, *extra: str) -> tuple[str, str]:
    """A live run after the first, its readings after the first's, ended by a limit."""
    run = _live(
        data_dir, stats, f"simulator.options.start_ns={_stopped_at(data_dir) + 10_000_000}",
        "limit.readings=60000", *extra,
    )  # fmt: skip
    out, err = run.finish(timeout=180)
    assert run.process.returncode == 0, err
    return out, err


def _stage() -> ActorStage:
    from hydra import compose, initialize_config_dir

    from telepipe.config import build, conf_dir

    with initialize_config_dir(str(conf_dir()), version_base=None):
        cfg = compose("config", ["pipeline=equipment"])
    op = build(cfg.pipeline.outputs.machine_states.machines, "machines")
    assert isinstance(op, ActorStage)
    return op


def _check_store(
    data_dir: Path, first_rows: pl.DataFrame, lost: pl.DataFrame | None = None
) -> None:
    """Every machine's events run 1, 2, ... (journal order = number order, no duplicate,
    no gap), state rows are unique per (machine, seq) but for the ``lost`` rows (their
    events were lost with a crash: the machine numbers on from before them), the store's
    fold at the final checkpoint equals each machine's last state row, and the machines
    went on from the first run's state (numbers and time in each state not started again)."""
    events = pl.read_delta(str(data_dir / "actor_events")).filter(pl.col("step") == STEP)
    assert events.select("entity", "seq").is_duplicated().sum() == 0
    runs = events.group_by("entity").agg(
        n=pl.len(),
        top=pl.col("seq").max(),
        ordered=(pl.col("seq").sort_by("checkpoint_id", maintain_order=True).diff() > 0).all(),
    )
    assert (runs["n"] == runs["top"]).all() and runs["ordered"].all()
    rows = pl.read_delta(str(data_dir / "machine_states"))
    if lost is not None:
        rows = rows.join(lost, on=["equipment_id", "seq", "ts_ns"], how="anti")
    assert rows.select("equipment_id", "seq").is_duplicated().sum() == 0
    for column in STATE_NS:
        back = rows.sort("equipment_id", "seq").with_columns(
            d=pl.col(column).diff().over("equipment_id")
        )
        assert back.filter(pl.col("d") < 0).height == 0, column
    assert rows.height > first_rows.height
    final = min(last_checkpoint(data_dir / t) or 0 for t in ("machine_states", "actor_events"))
    got = recover(data_dir, _stage(), STEP, checkpoint=final)
    last = rows.group_by("equipment_id").agg(pl.all().sort_by("seq").last()).sort("equipment_id")
    at = np.searchsorted(np.asarray(got["sensor_id"]), last["equipment_id"].to_numpy())
    assert np.asarray(got["sensor_id"])[at].tolist() == last["equipment_id"].to_list()
    for column in STATE_NS:
        assert np.asarray(got[column])[at].tolist() == last[column].to_list(), column
    # A machine's first row of the second run numbers on from its last of the first.
    firsts = first_rows.group_by("equipment_id").agg(pl.col("seq").max().alias("before"))
    later = rows.join(firsts, on="equipment_id").filter(pl.col("seq") > pl.col("before"))
    assert later.height > 0, "no machine changed state in both runs"


def _stop(data_dir: Path, drain: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "stop", f"--data-dir={data_dir}",
         *(["--drain"] if drain else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("how", ["drain", pytest.param("fresh", marks=pytest.mark.slow)])
def test_a_restart_after_a_drain_or_fresh_goes_on_with_every_machine(
    tmp_path: Path, how: str
) -> None:
    data_dir = tmp_path / "data"
    first = _live(data_dir, tmp_path / "s1.json", f"simulator.options.start_ns={START_NS}")
    try:
        first.wait_for("telepipe: running:")
        _wait_for_rows(data_dir / "machine_states", first)
        stopped = _stop(data_dir, drain=how == "drain")
        _, err = first.finish(timeout=180)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert stopped.returncode == 0, stopped.stderr
    assert first.process.returncode == 0, err
    s1 = json.loads((tmp_path / "s1.json").read_text())
    assert s1["stopped_with"] == ("drain" if how == "drain" else "savepoint")
    first_rows = pl.read_delta(str(data_dir / "machine_states"))

    _second_run(data_dir, tmp_path / "s2.json", *(["fresh=true"] if how == "fresh" else []))
    s2 = json.loads((tmp_path / "s2.json").read_text())
    assert s2["resumed_from"] == s1["final_checkpoint"] > 0
    _check_store(data_dir, first_rows)


@pytest.mark.parametrize(
    "kill",
    [
        pytest.param("after:machine_states", marks=pytest.mark.slow),  # the suite's time
        "after:actor_events",
        pytest.param("before:actor_snapshots", marks=pytest.mark.slow),
    ],
)
def test_a_live_crash_between_commits_leaves_one_event_per_number(
    tmp_path: Path, kill: str
) -> None:
    """SIGKILL at a table's commit of checkpoint 3: the store behind the stage's table (the
    events of 3 lost, named on stderr; the table's rows of 3 are then the only ones that
    may repeat a number) or the snapshots behind the events; the restart leaves no
    duplicate (machine, seq) in the store and it folds to the machines' last rows."""
    data_dir = tmp_path / "data"
    env = {**os.environ, "TELEPIPE_FAULT_KILL": f"{kill}:3"}
    first = _live(data_dir, tmp_path / "s1.json", f"simulator.options.start_ns={START_NS}", env=env)
    try:
        first.process.wait(timeout=180)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert first.process.returncode == -signal.SIGKILL, "".join(first.lines["stderr"])
    held = {
        t: last_checkpoint(data_dir / t) or 0
        for t in ("machine_states", "actor_events", "actor_snapshots")
    }
    assert held["machine_states"] in (2, 3) and held != dict.fromkeys(held, held["machine_states"])
    first_rows = pl.read_delta(str(data_dir / "machine_states"))
    lost = None
    if held["machine_states"] > held["actor_events"]:  # the store behind the stage's table
        kept = _rows_at(data_dir / "machine_states", held["actor_events"])
        lost = first_rows.join(kept, on=["equipment_id", "seq", "ts_ns"], how="anti")
        lost = lost.select("equipment_id", "seq", "ts_ns")
        first_rows = kept
    _, err = _second_run(data_dir, tmp_path / "s2.json")
    store = f"telepipe: {STEP}: the event store holds checkpoint {held['actor_events']}, "
    assert (store in err) == (lost is not None), err
    _check_store(data_dir, first_rows, lost)
    if held["actor_snapshots"] != held["actor_events"]:  # its orphans were deleted
        snaps = pl.read_delta(str(data_dir / "actor_snapshots"))
        assert snaps.select("entity", "seq").is_duplicated().sum() == 0


def _rows_at(path: Path, checkpoint: int) -> pl.DataFrame:
    """A table's rows as its commit of ``checkpoint`` left them."""
    table = DeltaTable(str(path))
    version = next(
        h["version"] for h in table.history() if h.get("telepipe.checkpoint_id") == str(checkpoint)
    )
    return pl.read_delta(str(path), version=version)
