"""``telepipe actors``: maintenance of the actors' event store.

    telepipe actors prune [--data-dir DIR] [--keep K]

``prune`` keeps each journaled step's last K snapshots per entity (default: the step's
``retain_snapshots`` as its last checkpoint has it) and each entity's snapshot at the
oldest checkpoint a restart may restore, and deletes the events before the oldest
snapshot kept (``telepipe.operators.actors.retention``). It holds the data dir's lock:
run it while no run writes the data dir; checkpoints and exactly-once are unaffected.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from telepipe.errors import ConfigError

DEFAULT_DATA_DIR = "data/demo"


def add_parser(subparsers: Any) -> None:
    text = "maintain the actors' event store (actor_events, actor_snapshots)"
    parser = subparsers.add_parser("actors", help=text, description=text)
    actions = parser.add_subparsers(dest="actors_action", metavar="ACTION", required=True)
    text = "delete snapshots and events no restart needs (offline, under the data dir's lock)"
    p = actions.add_parser("prune", help=text, description=text)
    p.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help=f"the pipeline's data_dir ({DEFAULT_DATA_DIR})"
    )
    p.add_argument(
        "--keep",
        type=int,
        default=None,
        metavar="K",
        help="snapshots kept per entity (default: each step's retain_snapshots)",
    )


def main(args: argparse.Namespace) -> int:
    from telepipe.operators.actors.journal import ACTOR_EVENTS, ACTOR_SNAPSHOTS
    from telepipe.operators.actors.retention import prune_store

    root = Path(args.data_dir)
    if args.keep is not None and args.keep < 1:
        raise ConfigError(f"--keep must be >= 1 (snapshots per entity), got {args.keep}")
    if not root.is_dir():
        raise ConfigError(f"data_dir={root}: no such directory")
    missing = [t for t in (ACTOR_EVENTS, ACTOR_SNAPSHOTS) if not (root / t / "_delta_log").is_dir()]
    if missing:
        raise ConfigError(
            f"data_dir={root}: no event store ({', '.join(missing)} missing: a pipeline with "
            "an ActorStage with journal: true writes it)"
        )
    try:
        pruned = prune_store(root, args.keep)
    except (OSError, ValueError, KeyError) as error:  # a damaged table or checkpoint
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"data_dir={root}: cannot prune its event store: {reason}") from None
    if not pruned:
        print(f"telepipe: data_dir={root}: the event store holds no snapshot: nothing to prune")
    for p in pruned:
        print(
            f"telepipe: {p.step}: kept {p.keep} snapshots per entity (and those checkpoint "
            f"{p.oldest_needed} needs): {p.snapshots:,} snapshot rows, {p.events:,} events "
            "deleted"
        )
    return 0
