"""Retention of the event store (``retention.prune``): each entity keeps its last K
snapshots and its base at the oldest checkpoint a restart may need, and only the events
after the oldest snapshot kept; a stage restored from the pruned store at any checkpoint
from that one on holds exactly the live state, and the store stays a valid journal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from actor_reference import random_rows
from deltalake import DeltaTable
from test_actor_journal import MAPPING, STEP, run_journaled

from telepipe.operators import ActorStage, EquipmentStateMachine
from telepipe.operators.actors.recovery import recover
from telepipe.operators.actors.retention import prune, prune_store


def _same(got: dict, live: dict) -> None:
    had = np.asarray(live["seq"]) > 0
    assert np.asarray(got["sensor_id"]).tolist() == np.asarray(live["sensor_id"])[had].tolist()
    for column in ("seq", *(c for c in got if c.startswith("state_"))):
        assert np.asarray(got[column]).tolist() == np.asarray(live[column])[had].tolist(), column


@pytest.mark.parametrize(("keep", "needed"), [(1, 8), (2, 5), (2, 1), (3, 10)])
def test_a_pruned_store_restores_every_checkpoint_from_the_oldest_needed(
    tmp_path: Path, keep: int, needed: int
) -> None:
    rows = random_rows(np.random.default_rng(31), 2400, 40, alarms=True)
    op = ActorStage(
        EquipmentStateMachine(), key="equipment_id", mapping=MAPPING, journal=True,
        snapshot_every=2, check_store=True,
    )  # fmt: skip
    live = run_journaled(op, rows, 10, tmp_path)
    before = {t: pl.read_delta(str(tmp_path / t)) for t in ("actor_snapshots", "actor_events")}
    version = DeltaTable(str(tmp_path / "actor_events")).version()
    done = prune(tmp_path, STEP, keep, needed)
    after = {t: pl.read_delta(str(tmp_path / t)) for t in ("actor_snapshots", "actor_events")}
    assert done.snapshots == before["actor_snapshots"].height - after["actor_snapshots"].height
    assert done.events == before["actor_events"].height - after["actor_events"].height
    if needed < 10:
        assert done.snapshots > 0
    per_entity = after["actor_snapshots"].group_by("entity").len()["len"].max()
    assert isinstance(per_entity, int) and per_entity <= keep + 1  # the last K and the base
    for k in range(needed, 11):
        _same(recover(tmp_path, op, STEP, checkpoint=k), live[k])
    # Nothing newer than the newest checkpoint it dropped from was rewritten.
    assert DeltaTable(str(tmp_path / "actor_events")).version() <= version + 1
    # Pruning again with the same bounds deletes nothing more.
    again = prune(tmp_path, STEP, keep, needed)
    assert (again.snapshots, again.events) == (0, 0)


def test_prune_store_holds_the_lock_and_reads_keep_from_the_options(tmp_path: Path) -> None:
    rows = random_rows(np.random.default_rng(32), 900, 20, alarms=False)
    op = ActorStage(EquipmentStateMachine(), journal=True, snapshot_every=1)
    run_journaled(op, rows, 6, tmp_path)
    done = prune_store(tmp_path, keep=2)  # no table with checkpoints: needs from 0
    assert [p.step for p in done] == [STEP] and done[0].oldest_needed == 0
    assert done[0].snapshots > 0 and done[0].events == 0  # no base at 0: every event kept
