"""Entities' state back from the event store: snapshot rows plus the later events.

``recover(data_dir, stage, step)`` reads ``actor_snapshots`` and ``actor_events``
(``journal``) of one step for all its key groups or some (one scan of each table,
filtered by step, checkpoint and key group: no query per entity), takes each
entity's newest snapshot and folds its later events with the actor type's own
``apply`` (an apply-only numba kernel, ``_fold_kernels``; key groups split over
``threads``). ``apply`` is the only thing that changes state, live as here, so the
state it gives is the state the stage held at that checkpoint (tested).

Events come from the journal in the order they were applied; the fold checks each
entity's run ``seq = snapshot + 1, + 2, ...`` in one pass and sorts only if the
table's files came back in another order (after a compaction). A gap is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable

from telepipe.errors import ConfigError, SnapshotError
from telepipe.markers import State
from telepipe.operators.actors._fold_kernels import IN_ORDER, _fold_kernel, _order_kernel
from telepipe.operators.actors.journal import ACTOR_EVENTS, ACTOR_SNAPSHOTS
from telepipe.operators.actors.spec import EVENT_HEAD, Event, PythonActor, Spec, VectorActor
from telepipe.operators.actors.stage import BOTH, STORE, ActorStage
from telepipe.operators.runtime.key_index import KeyIndex
from telepipe.operators.runtime.snapshot import Snapshot


def last_checkpoint(data_dir: str | Path, app_id: str = "telepipe") -> int:
    """The newest checkpoint both store tables hold (0: none)."""
    held = []
    for table in (ACTOR_EVENTS, ACTOR_SNAPSHOTS):
        try:
            held.append(DeltaTable(str(Path(data_dir) / table)).transaction_version(app_id) or 0)
        except Exception:  # no such table: nothing held
            held.append(0)
    return min(held)


def recover(
    data_dir: str | Path,
    stage: ActorStage,
    step: str,
    checkpoint: int | None = None,
    key_groups: Iterable[int] | None = None,
    threads: int = 2,
) -> State:
    """The state of ``stage``'s entities at ``checkpoint`` (default: the newest both
    tables hold) from the store under ``data_dir``, for ``key_groups`` (default: all).
    ``step`` is how the rows name the stage: ``table.step``. Keyed rows sorted by
    entity id: ``sensor_id`` (the entity id), ``seq``, ``status``, ``state_<column>``,
    as ``ActorLogic.snapshot`` has them, and ``store_seq`` (the seq of the snapshot
    row it started from, 0: none)."""
    spec: Spec = stage.__dict__["_spec"]
    actor = stage.__dict__["_actor"]
    k = last_checkpoint(data_dir) if checkpoint is None else checkpoint
    groups = None if key_groups is None else sorted(set(key_groups))
    state_cols = [f"state_{n}" for n in spec.state_dtype.names or ()]
    snaps = _read(
        Path(data_dir) / ACTOR_SNAPSHOTS, step, k, groups,
        ["entity", "seq", "status", *state_cols],
    )  # fmt: skip
    payload = list((spec.event_dtype.names or ())[len(EVENT_HEAD) :])
    events = _read(
        Path(data_dir) / ACTOR_EVENTS, step, k, groups,
        ["key_group", "entity", "seq", "ts_ns", "event", *payload],
    )  # fmt: skip
    keys = KeyIndex()
    snap_ids = snaps.column("entity").to_numpy()
    event_ids = events.column("entity").to_numpy()
    keys.reserve(np.concatenate([snap_ids, event_ids]))
    snap_slots, slot = keys.slots(snap_ids), keys.slots(event_ids)
    n = keys.n
    # Each entity's newest snapshot.
    base = np.zeros(n, np.int64)
    status = np.zeros(n, np.int8)
    state = np.repeat(spec.initial, n)
    if snaps.num_rows:
        seq = snaps.column("seq").to_numpy()
        order = np.lexsort((seq, snap_slots))
        s = snap_slots[order]
        newest = order[np.r_[s[1:] != s[:-1], True]]
        at = snap_slots[newest]
        base[at] = seq[newest]
        status[at] = snaps.column("status").to_numpy()[newest]
        for name in spec.state_dtype.names or ():
            state[name][at] = snaps.column(f"state_{name}").to_numpy()[newest]
    seq_out = base.copy()
    if events.num_rows:
        ev = _event_records(spec, events, slot)
        group = events.column("key_group").to_numpy()
        if _order_kernel(slot, ev["seq"], base, base.copy()) != IN_ORDER:
            order = np.lexsort((ev["seq"], slot))
            ev, slot, group = ev[order], slot[order], group[order]
            _check_runs(keys, slot, ev["seq"], base)
        if isinstance(actor, VectorActor):
            apply = type(actor).apply
            parts = max(1, min(threads, 64))
            if parts == 1:
                _fold_kernel(apply, ev, slot, base, group, 0, 1, state, seq_out)
            else:
                with ThreadPoolExecutor(parts) as pool:
                    done = [
                        pool.submit(
                            _fold_kernel, apply, ev, slot, base, group, p, parts, state, seq_out
                        )
                        for p in range(parts)
                    ]
                    for future in done:
                        future.result()
        else:
            assert isinstance(actor, PythonActor)
            _fold_python(actor, spec, ev, slot, base, state, seq_out)
    ids = keys.keys
    order = np.argsort(ids, kind="stable")
    out: State = {
        "sensor_id": ids[order].copy(),
        "seq": seq_out[order],
        "status": status[order],
        "store_seq": base[order],
    }
    for name in spec.state_dtype.names or ():
        out[f"state_{name}"] = np.ascontiguousarray(state[name][order])
    return out


def with_store(
    data_dir: str | Path,
    stage: ActorStage,
    step: str,
    snapshot: Snapshot,
    checkpoint: int,
    key_groups: Iterable[int] | None = None,
) -> Snapshot:
    """``snapshot`` (an ``ActorStage``'s, taken at ``checkpoint``) with its entities'
    state read back from the event store (``recover``), ready to restore. One whose
    entities are in the checkpoint is returned as it is; with ``check_store`` the
    store's fold must equal them (every entity with an event), else ``SnapshotError``."""
    at = snapshot.state.get("entities_at") if isinstance(snapshot.state, dict) else None
    if at not in (STORE, BOTH):
        return snapshot
    got = recover(data_dir, stage, step, checkpoint=checkpoint, key_groups=key_groups)
    state = dict(snapshot.state)
    if at == BOTH:
        _check_same(got, state, step, checkpoint)
        return snapshot
    state.update(got)
    return dataclasses.replace(snapshot, state=state)


def entities_from_store(
    data_dir: str | Path,
    stage: ActorStage,
    step: str,
    checkpoint: int,
    key_groups: Iterable[int] | None = None,
) -> Snapshot:
    """An empty stage's snapshot holding only its entities, read back from the event
    store at ``checkpoint``: no held rows, timers or watermark. A live restart after a
    drain or with ``fresh=true`` starts from it: those concern the open windows and
    detectors, while an entity's state (a machine's state machine) and its event numbers
    go on (an empty actor would journal event numbers the store already holds)."""
    snapshot = Snapshot.take(stage.build())
    got = recover(data_dir, stage, step, checkpoint=checkpoint, key_groups=key_groups)
    return dataclasses.replace(snapshot, state={**snapshot.state, **got})


def _check_same(got: State, saved: State, step: str, checkpoint: int) -> None:
    ids = np.asarray(saved["sensor_id"])
    had = np.asarray(saved["seq"]) > 0  # an entity whose rows all failed has no event
    mine = np.asarray(got["sensor_id"])
    if mine.tolist() != ids[had].tolist():
        extra = sorted(set(mine.tolist()) ^ set(ids[had].tolist()))[:3]
        raise SnapshotError(
            f"step {step!r}: the event store at checkpoint {checkpoint} holds other "
            f"entities than its checkpoint (e.g. {extra})"
        )
    for column in ("seq", "store_seq", *(c for c in got if c.startswith("state_"))):
        a, b = np.asarray(got[column]), np.asarray(saved[column])[had]
        differ = np.flatnonzero(a != b)
        if len(differ):
            i = differ[0]
            raise SnapshotError(
                f"step {step!r}: the event store folds entity {int(mine[i])}'s {column} to "
                f"{a[i]!r} at checkpoint {checkpoint}, its checkpoint holds {b[i]!r}"
            )


def _read(
    path: Path, step: str, checkpoint: int, groups: list[int] | None, columns: list[str]
) -> pa.Table:
    if not DeltaTable.is_deltatable(str(path)):
        raise ConfigError(f"{path}: no such table (a stage with journal: true writes it)")
    options = pads.ParquetReadOptions(dictionary_columns={"step", "event"})
    dataset = DeltaTable(str(path)).to_pyarrow_dataset(parquet_read_options=options)
    where = (pc.field("step") == step) & (pc.field("checkpoint_id") <= checkpoint)
    if groups is not None:
        where &= pc.field("key_group").isin(groups)
    return dataset.to_table(columns=columns, filter=where)


def _event_records(spec: Spec, events: pa.Table, slot: np.ndarray) -> np.ndarray:
    """The journal's rows as event records of the actor type (nulls as 0)."""
    ev = np.zeros(events.num_rows, spec.event_dtype)
    ev["entity"] = slot
    ev["seq"] = events.column("seq").to_numpy()
    ev["ts"] = events.column("ts_ns").to_numpy()
    names = events.column("event").combine_chunks()
    if not isinstance(names, pa.DictionaryArray):
        names = names.dictionary_encode()
    codes = np.array([spec.code(str(v)) for v in names.dictionary.to_pylist()], np.int8)
    ev["type"] = codes[names.indices.to_numpy(zero_copy_only=False)]
    for name in (spec.event_dtype.names or ())[len(EVENT_HEAD) :]:
        ev[name] = events.column(name).fill_null(0).to_numpy()
    return ev


def _check_runs(keys: KeyIndex, slot: np.ndarray, seq: np.ndarray, base: np.ndarray) -> None:
    """Sorted by (slot, seq): each entity's events after its snapshot run base + 1, ..."""
    after = seq > base[slot]
    s, q = slot[after], seq[after]
    first = np.r_[True, s[1:] != s[:-1]]
    expected = np.where(first, base[s] + 1, np.r_[0, q[:-1]] + 1)
    bad = np.flatnonzero(q != expected)
    if len(bad):
        i = bad[0]
        raise SnapshotError(
            f"actor_events: entity {int(keys.keys[s[i]])} has event {int(q[i])} where "
            f"{int(expected[i])} was due (a journal with a gap or a duplicate)"
        )


def _fold_python(
    actor: PythonActor,
    spec: Spec,
    ev: np.ndarray,
    slot: np.ndarray,
    base: np.ndarray,
    state: np.ndarray,
    seq: np.ndarray,
) -> None:
    """The Python-class path's fold: its ``apply`` per event (the slow path)."""
    names = spec.state_dtype.names or ()
    current: dict[int, dict[str, Any]] = {}
    for i in np.flatnonzero(ev["seq"] > base[slot]):
        s = int(slot[i])
        st = current.get(s)
        if st is None:
            st = current[s] = {n: state[n][s].item() for n in names}
        e = ev[i]
        code = int(e["type"])
        data = {c: e[c].item() for c in spec.payload[code - 1]}
        current[s] = actor.apply(st, Event(spec.event_names[code - 1], int(e["ts"]), data))
        seq[s] = int(e["seq"])
    for s, st in current.items():
        for n in names:
            state[n][s] = st[n]
