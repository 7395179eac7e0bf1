"""Where a restarted pipeline resumes, read from its tables' last Delta commits.

Every table commits every checkpoint with its chain's state, so after a crash
the tables hold checkpoints k_min <= ... <= k_max (the writer commits tables one
after another). The input resumes after k_min's positions with the decoder and
every chain restored from their k_min state; the barriers k_min+1..k_max are
re-cut at exactly the recorded positions, and each table skips the checkpoints
it already holds. Sound because replay is deterministic: the same frames give
the same rows between the same barriers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deltalake import CommitProperties, DeltaTable

from telepipe.errors import ConfigError, SnapshotError
from telepipe.sinks.delta import last_checkpoint
from telepipe.sources.replay import Resume
from telepipe.state import read_checkpoint

if TYPE_CHECKING:
    from telepipe.pipelines.graph import Output


@dataclass(frozen=True)
class Recovery:
    oldest: int  # the checkpoint every table holds
    latest: int  # the newest checkpoint any table holds
    input: str | None
    resume: Resume | None  # None: start the input from its beginning
    chain_states: dict[str, dict[str, object]]  # table -> step -> snapshot


def read_recovery(data_dir: Path, tables: list[str], app_id: str) -> Recovery | None:
    held = {t: last_checkpoint(data_dir / t, app_id) or 0 for t in tables}
    latest = max(held.values(), default=0)
    if latest == 0:
        return None
    oldest = min(held.values())
    commits: dict[str, dict[int, dict[str, str]]] = {}
    for table, k in held.items():
        if k:
            commits[table] = _checkpoint_commits(data_dir / table, oldest, k, app_id)
    barriers: dict[int, dict[str, int]] = {}
    inputs: set[str] = set()
    final = None  # the checkpoint taken after the end-of-input flush, if one is re-cut
    for table, table_commits in commits.items():
        for k, meta in table_commits.items():
            if "telepipe.input" in meta:
                inputs.add(meta["telepipe.input"])
            if k > oldest:
                barriers[k] = _positions(meta, data_dir, table, k)
                if meta.get("telepipe.end_of_input") == "true":
                    final = k
    if len(inputs) > 1:
        raise ConfigError(
            f"data_dir={data_dir}: its tables hold checkpoints of several inputs: {sorted(inputs)}"
        )
    missing = [k for k in range(oldest + 1, latest + 1) if k not in barriers]
    if missing:
        raise ConfigError(
            f"data_dir={data_dir}: checkpoints {missing[:5]} are in no table's history"
        )
    if oldest == 0:
        return Recovery(0, latest, next(iter(inputs), None), Resume({}, None, barriers, final), {})
    chain_states: dict[str, dict[str, object]] = {}
    decoder_state = None
    positions: dict[str, int] = {}
    for table in tables:
        commit = commits[table].get(oldest)
        if commit is None or "telepipe.state" not in commit:
            raise ConfigError(
                f"data_dir={data_dir}: table {table} has no state for checkpoint {oldest}"
            )
        try:  # Arrow and JSON only, inside data_dir: nothing read can run code
            state = read_checkpoint(
                data_dir, commit["telepipe.state"], checkpoint_id=oldest, owner=(app_id, table)
            )
        except SnapshotError as error:
            raise ConfigError(
                f"data_dir={data_dir}: table {table}'s state for checkpoint {oldest} "
                f"cannot be read: {error}; restore that file, or start over in another data_dir"
            ) from None
        if state.decoder is not None:
            decoder_state = state.decoder
        chain_states[table] = dict(state.steps)
        positions = _positions(commit, data_dir, table, oldest)
    return Recovery(
        oldest,
        latest,
        next(iter(inputs), None),
        Resume(positions, decoder_state, barriers, final),
        chain_states,
    )


def _checkpoint_commits(
    path: Path, oldest: int, latest: int, app_id: str
) -> dict[int, dict[str, str]]:
    """Commit metadata by checkpoint id, for checkpoints oldest..latest of one table.

    Only this app id's commits count: a DLQ replay or a purge commits too.
    """
    found: dict[int, dict[str, str]] = {}
    for entry in DeltaTable(str(path)).history(limit=2 * (latest - oldest) + 256):
        raw = entry.get("telepipe.checkpoint_id")
        if entry.get("telepipe.app_id", "telepipe") != app_id or raw is None:
            continue
        k = _checkpoint_id(raw)
        if k is None:
            raise ConfigError(
                f"data_dir={path.parent}: table {path.name}: a commit's "
                f"telepipe.checkpoint_id={str(raw)[:80]!r} is not a checkpoint id "
                "(a forged or damaged commit); start over in another data_dir"
            )
        if oldest <= k <= latest:
            found.setdefault(
                k, {key: str(v) for key, v in entry.items() if key.startswith("telepipe.")}
            )
    return found


def _checkpoint_id(raw: object) -> int | None:
    """A commit's ``telepipe.checkpoint_id`` as telepipe writes it (decimal digits), else None."""
    text = str(raw)
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    return int(text)


def _positions(meta: dict[str, str], data_dir: Path, table: str, k: int) -> dict[str, int]:
    """A checkpoint commit's ``telepipe.positions``: a JSON object of stream -> offset;
    anything else is a one-line ``ConfigError`` naming the table and the checkpoint."""
    where = f"data_dir={data_dir}: table {table}'s commit of checkpoint {k}"
    raw = meta.get("telepipe.positions")
    if raw is None:
        raise ConfigError(f"{where} has no telepipe.positions (a forged or damaged commit)")
    try:
        positions = json.loads(raw)
    except (ValueError, RecursionError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{where}: telepipe.positions is not JSON ({reason})") from None
    if not isinstance(positions, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in positions.values()
    ):
        raise ConfigError(
            f"{where}: telepipe.positions is not an object of stream -> offset: {raw[:80]!r}"
        )
    return positions


def actor_states(
    outputs: Iterable[Output],
    states: dict[str, dict[str, object]],
    data_dir: Path,
    checkpoint: int | None,
    app_id: str,
    entities_only: bool = False,
) -> dict[str, dict[str, object]]:
    """``states`` (table -> step -> snapshot) with every journaled ``ActorStage``'s
    entities read back from the event store at ``checkpoint`` (None: its table's own
    last, a live restart after a crash): the store is their source of truth, the
    checkpoint keeps only what it does not hold (``actors.with_store``).

    A live restart after a crash between two tables' commits may find the store behind
    the stage's table (the events of the checkpoints between are lost with the crash:
    the entities go on from the store's newest, reported on stderr) or ahead of it (the
    rows of checkpoints the stage's table never committed are orphans the new run
    would journal again: they are deleted, this run holding the data dir). The events
    are the store's truth, snapshots only shorten the fold: a crash between the two
    store tables' commits restores from ``actor_events``' checkpoint, and rows of either
    table past the checkpoint restored are deleted the same way (the new run numbers
    its events on from there).

    ``entities_only`` (a live restart after a drain or with ``fresh=true``): table ->
    step -> an empty stage holding only its entities from the store, for each journaled
    step, whatever ``states`` holds; the chains' other steps start empty."""
    from telepipe.operators.actors import ActorStage, entities_from_store, with_store
    from telepipe.operators.actors.journal import ACTOR_EVENTS, STORE_TABLES
    from telepipe.operators.runtime.snapshot import Snapshot

    out = {} if entities_only else dict(states)
    store_k: int | None = None
    store_ks: dict[str, int] = {}
    for output in outputs:
        saved = states.get(output.table)
        if not saved and not entities_only:
            continue
        chain = {} if entities_only else dict(saved or {})
        for step, op in zip(output.steps, output.operators, strict=True):
            if not isinstance(op, ActorStage) or not op.journal:
                continue
            if step not in chain and not entities_only:
                continue
            if store_k is None:
                store_ks = {t: last_checkpoint(data_dir / t, app_id) or 0 for t in STORE_TABLES}
                store_k = store_ks[ACTOR_EVENTS]
            live = checkpoint is None
            k = checkpoint or last_checkpoint(data_dir / output.table, app_id) or 0
            where = f"{output.table}.{step}"
            if live and store_k < k:
                print(
                    f"telepipe: {where}: the event store holds checkpoint {store_k}, table "
                    f"{output.table} {k} (a crash between their commits): the entities' "
                    f"events of checkpoints {store_k + 1}..{k} are lost, they go on from "
                    f"checkpoint {store_k}",
                    file=sys.stderr,
                )
                k = store_k
            if live and max(store_ks.values()) > k:
                _drop_orphans(data_dir, where, k, [t for t, at in store_ks.items() if at > k])
            try:
                if entities_only:
                    if k > 0:  # else no checkpoint: no entity
                        chain[step] = entities_from_store(data_dir, op, where, checkpoint=k)
                    continue
                snapshot = chain[step]
                assert isinstance(snapshot, Snapshot)
                chain[step] = with_store(data_dir, op, where, snapshot, checkpoint=k)
            except (SnapshotError, ConfigError) as error:
                remedy = (
                    " (fresh and drained restarts keep the entities too: rename the step to "
                    "start its entities anew, or use another data_dir)"
                    if entities_only
                    else ""
                )
                raise ConfigError(
                    f"data_dir={data_dir}: step {where} cannot be restored from the event "
                    f"store at checkpoint {k}: {error}{remedy}"
                ) from None
        if chain:
            out[output.table] = chain
    return out


def _drop_orphans(data_dir: Path, step: str, checkpoint: int, tables: list[str]) -> None:
    """Delete the event store's rows of ``step`` after ``checkpoint`` in ``tables`` (a
    live restart from it: they were committed by the run before, its table or
    ``actor_events`` never was)."""
    for table in tables:
        DeltaTable(str(data_dir / table)).delete(
            f"step = '{step}' AND checkpoint_id > {int(checkpoint)}",
            commit_properties=CommitProperties(custom_metadata={"telepipe.action": "orphans"}),
        )
