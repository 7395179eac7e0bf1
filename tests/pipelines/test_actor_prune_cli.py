"""``telepipe actors prune``: the event store's retention from the command line, on a
live ``pipeline=equipment`` run's data dir; its refusals are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import ROOT

from telepipe.operators.actors import ActorStage, recover
from telepipe.sinks import data_dir_lock

STEP = "machine_states.machines"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def _stage() -> ActorStage:
    from hydra import compose, initialize_config_dir

    from telepipe.config import build, conf_dir

    with initialize_config_dir(str(conf_dir()), version_base=None):
        cfg = compose("config", ["pipeline=equipment"])
    op = build(cfg.pipeline.outputs.machine_states.machines, "machines")
    assert isinstance(op, ActorStage)
    return op


PRUNE_GAP = (  # to fix next stop
    "after the writer-token state dirs (d114c21) oldest_needed counts them (fixed) and this "
    "fixture leaves nothing prunable; the prune CLI then aborts at exit (-6, 'terminate "
    "called without an active exception')"
)


@pytest.mark.xfail(reason=PRUNE_GAP, strict=False)
def test_actors_prune_keeps_what_a_restart_needs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = cli(
        "run", "pipeline=equipment", "pipeline.publish=null", f"data_dir={data_dir}",
        "ui=never", "simulator.options.rate=100000", "limit.readings=150000",
        "source.checkpoint_every_ms=250",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    op = _stage()
    before = recover(data_dir, op, STEP)
    rows = {t: pl.read_delta(str(data_dir / t)).height for t in ("actor_snapshots", "actor_events")}

    pruned = cli("actors", "prune", f"--data-dir={data_dir}", "--keep", "1")
    assert pruned.returncode == 0, pruned.stderr
    (line,) = pruned.stdout.splitlines()
    assert line.startswith(f"telepipe: {STEP}: kept 1 snapshots per entity"), line
    after = {
        t: pl.read_delta(str(data_dir / t)).height for t in ("actor_snapshots", "actor_events")
    }
    assert after["actor_snapshots"] < rows["actor_snapshots"]
    assert after["actor_events"] <= rows["actor_events"]
    got = recover(data_dir, op, STEP)
    assert got.keys() == before.keys()
    for column, values in before.items():
        assert np.asarray(got[column]).tolist() == np.asarray(values).tolist(), column
    again = cli("actors", "prune", f"--data-dir={data_dir}", "--keep", "1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().endswith(": 0 snapshot rows, 0 events deleted")

    with data_dir_lock.hold(data_dir, "a test"):  # as a run writing it would
        held = cli("actors", "prune", f"--data-dir={data_dir}")
    assert held.returncode == 2 and held.stderr.count("\n") == 1, held.stderr
    assert held.stderr.startswith(f"telepipe: error: data_dir={data_dir}")


def test_actors_prune_refuses_in_one_line(tmp_path: Path) -> None:
    cases = {
        "nowhere": ([f"--data-dir={tmp_path / 'nowhere'}"], "nowhere: no such directory"),
        "keep": ([f"--data-dir={tmp_path}", "--keep=0"], "--keep must be >= 1"),
        "store": ([f"--data-dir={tmp_path}"], "no event store (actor_events, actor_snapshots"),
    }
    for name, (args, text) in cases.items():
        done = cli("actors", "prune", *args)
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr.count("\n") == 1 and text in done.stderr, (name, done.stderr)
        assert done.stderr.startswith("telepipe: error: "), (name, done.stderr)
    usage = cli("actors")
    assert usage.returncode == 2 and "required: ACTION" in usage.stderr
