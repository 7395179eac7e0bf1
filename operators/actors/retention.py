"""Retention of the event store: the last ``retain_snapshots`` snapshots per entity, and
only the journal events after the oldest one kept.

The store's tables are append-only inside a checkpoint (the sink commits each
checkpoint's rows exactly once), so pruning is a maintenance step apart from the run:
``prune_store(data_dir)`` (``python -m telepipe.operators.actors.retention --data-dir
DIR``) holds the data dir's lock, so no run writes meanwhile, and rewrites the old rows
of each step in one Delta commit per table (an overwrite of the rows up to the newest
checkpoint it drops from, no application transaction: recovery and exactly-once are
unaffected).

It never deletes what a restart needs: a restart restores checkpoint ``k`` from each
entity's newest snapshot ``<= k`` plus its later events, and ``k`` is at least
``oldest_needed``, the oldest checkpoint whose state the stage's table still keeps
(``telepipe.state`` keeps the last ``KEEP`` per table) and no newer than any table's
last. So each entity keeps its newest snapshot ``<= oldest_needed`` (its base) besides
its last ``keep``, and every event after the oldest snapshot kept; an entity with no
base keeps all its events.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, write_deltalake

from telepipe.errors import ConfigError
from telepipe.operators.actors.journal import ACTOR_EVENTS, ACTOR_SNAPSHOTS
from telepipe.operators.runtime.key_index import KeyIndex
from telepipe.sinks.delta import last_checkpoint
from telepipe.state import read_checkpoint
from telepipe.state.files import STATE_DIR, checkpoint_of_dir, owner_dir

type Keep = Callable[[pa.Table], np.ndarray]  # rows -> which of them stay


@dataclass(frozen=True)
class Pruned:
    step: str
    keep: int
    oldest_needed: int
    snapshots: int  # rows deleted
    events: int


def prune(data_dir: str | Path, step: str, keep: int, oldest_needed: int) -> Pruned:
    """Delete ``step``'s snapshot rows beyond each entity's last ``keep`` and its base at
    ``oldest_needed``, and its events up to the oldest snapshot kept."""
    if keep < 1:
        raise ConfigError(f"retain_snapshots must be >= 1, got {keep}")
    root = Path(data_dir)
    snaps = _dataset(root / ACTOR_SNAPSHOTS).to_table(
        columns=["entity", "seq", "checkpoint_id"], filter=pc.field("step") == step
    )
    if not snaps.num_rows:
        return Pruned(step, keep, oldest_needed, 0, 0)
    entity = snaps.column("entity").to_numpy()
    seq = snaps.column("seq").to_numpy()
    ckpt = snaps.column("checkpoint_id").to_numpy()
    keys = KeyIndex()
    keys.reserve(entity)
    slot = keys.slots(entity)
    order = np.lexsort((-seq, slot))  # each entity's newest first
    s = slot[order]
    start = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
    rank = np.arange(len(s)) - np.repeat(start, np.diff(np.r_[start, len(s)]))
    kept = np.zeros(len(seq), bool)
    kept[order[rank < keep]] = True
    # Each entity's base: its newest snapshot at or before oldest_needed.
    base_seq = np.zeros(keys.n, np.int64)
    early = np.flatnonzero(ckpt <= oldest_needed)
    np.maximum.at(base_seq, slot[early], seq[early])
    kept |= (seq == base_seq[slot]) & (base_seq[slot] > 0)
    oldest_kept = np.full(keys.n, np.iinfo(np.int64).max)
    np.minimum.at(oldest_kept, slot[kept], seq[kept])
    cutoff = np.where(base_seq > 0, oldest_kept, 0)  # no base: every event is needed
    dropped = _rewrite(
        root / ACTOR_SNAPSHOTS, step, ckpt[~kept], _keep_snapshots(keys, kept, snaps)
    )
    events = _dataset(root / ACTOR_EVENTS).to_table(
        columns=["entity", "seq", "checkpoint_id"], filter=pc.field("step") == step
    )
    e_slot = keys.slots(events.column("entity").to_numpy())  # entities with no snapshot: new
    e_cut = np.r_[cutoff, np.zeros(keys.n - len(cutoff), np.int64)][e_slot]
    gone = events.column("seq").to_numpy() <= e_cut
    e_ckpt = events.column("checkpoint_id").to_numpy()
    n_events = _rewrite(root / ACTOR_EVENTS, step, e_ckpt[gone], _by_cutoff(keys, cutoff))
    return Pruned(step, keep, oldest_needed, dropped, n_events)


def _keep_snapshots(keys: KeyIndex, kept: np.ndarray, snaps: pa.Table) -> Keep:
    gone = _pair(keys, snaps.column("entity").to_numpy(), snaps.column("seq").to_numpy())[~kept]

    def keep(rows: pa.Table) -> np.ndarray:
        pairs = _pair(keys, rows.column("entity").to_numpy(), rows.column("seq").to_numpy())
        return ~np.isin(pairs, gone)

    return keep


def _pair(keys: KeyIndex, entity: np.ndarray, seq: np.ndarray) -> np.ndarray:
    return (keys.slots(entity).astype(np.int64) << 40) | seq


def _by_cutoff(keys: KeyIndex, cutoff: np.ndarray) -> Keep:
    def keep(rows: pa.Table) -> np.ndarray:
        s = keys.slots(rows.column("entity").to_numpy())
        cut = np.r_[cutoff, np.zeros(max(0, keys.n - len(cutoff)), np.int64)][s]
        return np.asarray(rows.column("seq").to_numpy() > cut)

    return keep


def _rewrite(path: Path, step: str, dropped_checkpoints: np.ndarray, keep: Keep) -> int:
    """Rewrite ``step``'s rows up to the newest checkpoint with a row to drop, without
    the rows ``keep`` refuses, in one commit. Returns the rows deleted."""
    if not len(dropped_checkpoints):
        return 0
    upto = int(dropped_checkpoints.max())
    where = (pc.field("step") == step) & (pc.field("checkpoint_id") <= upto)
    table = DeltaTable(str(path))
    rows = table.to_pyarrow_dataset().to_table(filter=where)
    mask = keep(rows)
    kept = rows.filter(pa.array(mask))
    write_deltalake(
        table, kept, mode="overwrite",
        predicate=f"step = '{_quoted(step)}' AND checkpoint_id <= {upto}",
        commit_properties=CommitProperties(custom_metadata={"telepipe.action": "prune"}),
    )  # fmt: skip
    return rows.num_rows - kept.num_rows


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _dataset(path: Path) -> pads.Dataset:
    if not DeltaTable.is_deltatable(str(path)):
        raise ConfigError(f"{path}: no such table (a stage with journal: true writes it)")
    return DeltaTable(str(path)).to_pyarrow_dataset()


def oldest_needed(data_dir: str | Path, table: str, app_id: str = "telepipe") -> int:
    """The oldest checkpoint a restart may restore ``table``'s chain from: the oldest
    whose state it keeps, and no newer than any table's last one."""
    root = Path(data_dir)
    lasts = [last_checkpoint(p, app_id) or 0 for p in root.iterdir()
             if (p / "_delta_log").is_dir()]  # fmt: skip
    owner = root / STATE_DIR / owner_dir(app_id, table)
    names = [p.name for p in owner.iterdir()] if owner.is_dir() else []
    # (a run's state dirs carry its writer token: 000000000007-<token>)
    kept = [k for k in map(checkpoint_of_dir, names) if k is not None]
    return min([*lasts, *kept], default=0)


def prune_store(
    data_dir: str | Path, keep: int | None = None, app_id: str = "telepipe"
) -> list[Pruned]:
    """Prune every journaled step of the store under ``data_dir``, holding its lock;
    ``keep``: snapshots per entity (default: each step's ``retain_snapshots`` as its
    last checkpoint has it)."""
    from telepipe.sinks import data_dir_lock

    root = Path(data_dir)
    with data_dir_lock.hold(root, "telepipe actors prune"):
        steps = pc.unique(
            _dataset(root / ACTOR_SNAPSHOTS).to_table(columns=["step"]).column("step")
        ).to_pylist()
        done = []
        for step in sorted(steps):
            table, name = step.split(".", 1)
            k = keep if keep is not None else _retain(root, table, name, app_id)
            done.append(prune(root, step, k, oldest_needed(root, table, app_id)))
        return done


def _retain(root: Path, table: str, step: str, app_id: str) -> int:
    for entry in DeltaTable(str(root / table)).history(limit=64):
        manifest = entry.get("telepipe.state")
        if manifest and entry.get("telepipe.app_id", "telepipe") == app_id:
            options = read_checkpoint(root, manifest).steps[step].options
            return int(options.get("retain_snapshots", 2))  # type: ignore[arg-type]
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m telepipe.operators.actors.retention",
        description="Prune the actors' event store (actor_snapshots, actor_events).",
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--keep", type=int, default=None, help="snapshots per entity")
    args = parser.parse_args(argv)
    try:
        for p in prune_store(args.data_dir, args.keep):
            print(
                f"{p.step}: kept {p.keep} snapshots per entity (and those checkpoint "
                f"{p.oldest_needed} needs): {p.snapshots} snapshot rows, {p.events} events deleted"
            )
    except ConfigError as error:
        print(f"telepipe: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
