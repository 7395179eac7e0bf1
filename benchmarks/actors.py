"""ActorStage throughput, activation cost and memory (Step 9; last line JSON).

    .venv/bin/python benchmarks/actors.py [--rows 4000000] [--repeat 3]

- ``stage_rows_per_s_<actor>_<keys>``: rows/s through ``ActorLogic.on_batch`` +
  ``on_watermark`` (a watermark after every 64k-row batch, so every row is held and
  released, as in a pipeline), entities already active, random entity per row;
  ``counter`` is the trivial ``Counter`` (no output), ``machine`` the
  ``EquipmentStateMachine`` (readings at random levels: ~1 transition in 3 rows);
- ``activation_us``: the extra cost per new entity, amortised: 1M rows each of a new
  entity, minus the same rows for active ones, per entity;
- ``memory_mb_100k``: bytes held by the stage's arrays (store, key index, buffers)
  with 100k entities of the state machine resident;
- ``python_rows_per_s``: the Python-class path (a counter) over 10k entities;
- ``recovery_entities_per_s`` / ``recovery_events_per_s``: 100k entities x 20 events
  of the state machine journaled to ``actor_events`` (Delta, written as the sink
  writes it: one commit per checkpoint, 4 checkpoints) folded back by
  ``recovery.recover`` from the table (read, filter, fold on 2 threads), timed whole;
  ``..._snap``: the same with each entity's snapshot at its 10th event in
  ``actor_snapshots`` (so 10 events of each are folded);
- ``stage_rows_per_s_machine_journal_<keys>``: the state machine with ``journal: true``
  and a checkpoint barrier every 16 batches (1 M rows: its journal rows built), to set
  beside ``stage_rows_per_s_machine_<keys>``;
- ``checkpoint_ms_<mode>`` / ``checkpoint_bytes_<mode>``: one checkpoint of the state
  machine with 100k entities, 64k rows since the last one (``on_barrier``, the
  snapshot, its files written as the sink writes them): ``store`` (journal: the
  entities are in the event store, the checkpoint keeps the rest), ``full`` (their
  state in every checkpoint too, as before the store was the source of truth:
  ``check_store``), ``none`` (no journal);
- ``--peers``: Pykka and Thespian (their own venvs, ``benchmarks/peers/actors``) on
  the same work, in the same run: ``<peer>_spawn_us``, ``<peer>_messages_per_s``,
  ``<peer>_recovery_entities_per_s``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, rate, timed
from deltalake import write_deltalake

from telepipe.operators.actors import (
    ActorStage,
    Counter,
    EquipmentStateMachine,
    Event,
    PythonActor,
)
from telepipe.operators.actors.journal import ACTOR_EVENTS, ACTOR_SNAPSHOTS, conform, store_schemas
from telepipe.operators.actors.recovery import recover
from telepipe.schema import READINGS
from telepipe.sinks.delta_types import to_delta_table

PEERS = Path(__file__).resolve().parent.parent / ".venv-peers"

BATCH = 65_536


@dataclass(frozen=True)
class PyCounter(PythonActor):
    state = {"count": np.int64}
    events = {"tick": {"count": np.int64}}
    internal = frozenset({"tick"})

    def handle(self, entity, rows, ctx):  # one event per call: the count so far
        return [Event("tick", int(rows["ts"][-1]), {"count": ctx.state["count"] + len(rows)})]

    def apply(self, state, event):
        return {"count": event.data["count"]}


def batches(n: int, keys: int, seed: int, distinct: bool = False) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    sid = rng.permutation(n).astype(np.int32) if distinct else rng.integers(0, keys, n, np.int32)
    ts = np.arange(n, dtype=np.int64) * 1000 + 10**15
    value = rng.choice(np.array([1.0, 50.0, 95.0]), n)
    out = []
    for i in range(0, n, BATCH):
        j = min(n, i + BATCH)
        columns = [
            pa.array(sid[i:j]),
            pa.array(ts[i:j], pa.timestamp("ns")),
            pa.array(value[i:j]),
            pa.array(np.zeros(j - i, np.uint8)),
        ]
        out.append(pa.RecordBatch.from_arrays(columns, schema=READINGS))
    return out


def feed(logic, items: list[pa.RecordBatch]) -> int:
    out = 0
    for batch in items:
        logic.on_batch(batch)
        last = int(batch.column("ts")[-1].value)
        out += sum(b.num_rows for b in logic.on_watermark(last + 1))
    return out


def warmed(op: ActorStage, keys: int) -> object:
    logic = op.build()
    feed(logic, batches(keys, keys, 99, distinct=True))  # every entity active
    return logic


def stage_rate(op: ActorStage, keys: int, rows: int) -> float:
    logic = warmed(op, keys)
    items = batches(rows, keys, 1)
    seconds, _ = timed(lambda: feed(logic, items))
    return rate(rows, seconds)


def activation_us(n: int) -> float:
    op = ActorStage(Counter())
    new = batches(n, n, 5, distinct=True)
    fresh = op.build()
    feed(fresh, batches(BATCH, BATCH, 6))  # compiled, buffers sized
    t_new, _ = timed(lambda: feed(fresh, new))
    again = batches(n, n, 5, distinct=True)
    t_old, _ = timed(lambda: feed(fresh, again))
    return (t_new - t_old) / n * 1e6


def memory_mb(keys: int) -> float:
    logic = warmed(ActorStage(EquipmentStateMachine()), keys)
    held = [
        *vars(logic.store).values(),  # type: ignore[attr-defined]
        *vars(logic.store.keys).values(),  # type: ignore[attr-defined]
        logic._pend,  # type: ignore[attr-defined]
    ]
    return sum(a.nbytes for a in held if isinstance(a, np.ndarray)) / 1e6


def journal_rate(keys: int, rows: int) -> float:
    logic = warmed(ActorStage(EquipmentStateMachine(), journal=True), keys)
    items = batches(rows, keys, 1)

    def run() -> None:
        for i in range(0, len(items), 16):
            feed(logic, items[i : i + 16])
            logic.on_barrier(i + 1)  # type: ignore[attr-defined]
            logic.take_side()  # type: ignore[attr-defined]

    seconds, _ = timed(run)
    return rate(rows, seconds)


def checkpoint_cost(mode: str, keys: int = 100_000) -> tuple[float, float]:
    """(ms, bytes) of one checkpoint of the state machine at ``keys`` entities."""
    from telepipe.operators.runtime.snapshot import Snapshot
    from telepipe.state import write_checkpoint

    op = ActorStage(EquipmentStateMachine(), journal=mode != "none", check_store=mode == "full")
    logic = warmed(op, keys)
    logic.on_barrier(1)  # type: ignore[attr-defined]
    logic.take_side()  # type: ignore[attr-defined]
    feed(logic, batches(BATCH, keys, 3))
    with tempfile.TemporaryDirectory(prefix="actors-checkpoint-") as tmp:

        def checkpoint() -> str:
            logic.on_barrier(2)  # type: ignore[attr-defined]
            logic.take_side()  # type: ignore[attr-defined]
            return write_checkpoint(tmp, "telepipe", "t", 2, {"m": Snapshot.take(logic)})

        seconds, _ = timed(checkpoint)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return seconds * 1e3, float(size)


def python_rate(keys: int, rows: int) -> float:
    return stage_rate(ActorStage(PyCounter()), keys, rows)


def journaled(base: Path, entities: int, per: int, snapshot_every: int) -> ActorStage:
    """``entities`` x ``per`` events of the state machine (every row changes its state)
    journaled under ``base`` as the pipeline's sink writes them; returns the stage."""
    op = ActorStage(EquipmentStateMachine(), journal=True, snapshot_every=snapshot_every)
    schemas = store_schemas([("t.m", op.__dict__["_spec"])])
    logic = op.build()
    n = entities * per
    sid = np.tile(np.arange(entities, dtype=np.int32), per)
    ts = np.arange(n, dtype=np.int64) * 1000 + 10**15
    value = np.where((np.arange(n) // entities) % 2 == 0, 50.0, 1.0)  # running, idle, ...
    checkpoints = 4
    for k, part in enumerate(np.array_split(np.arange(n), checkpoints), start=1):
        for i in range(part[0], part[-1] + 1, BATCH):
            j = min(part[-1] + 1, i + BATCH)
            columns = [pa.array(sid[i:j]), pa.array(ts[i:j], pa.timestamp("ns")),
                       pa.array(value[i:j]), pa.array(np.zeros(j - i, np.uint8))]  # fmt: skip
            logic.on_batch(pa.RecordBatch.from_arrays(columns, schema=READINGS))
        logic.on_watermark(int(ts[part[-1]]) + 1)
        logic.on_barrier(k)
        for tag, batch in logic.take_side():
            if tag in schemas:
                rows = to_delta_table(conform(batch, schemas[tag], "t.m"))
                write_deltalake(str(base / tag), rows, mode="append")
    for table in (ACTOR_EVENTS, ACTOR_SNAPSHOTS):
        assert (base / table).exists(), table
    return op


def recovery_rates(entities: int, per: int, snapshot_every: int) -> tuple[float, float]:
    """(entities/s, events folded/s) of ``recover`` from the Delta tables, timed whole."""
    with tempfile.TemporaryDirectory(prefix="actors-recovery-") as tmp:
        op = journaled(Path(tmp), entities, per, snapshot_every)
        recover(tmp, op, "t.m", checkpoint=4)  # warm: compiled, files cached
        seconds, state = timed(lambda: recover(tmp, op, "t.m", checkpoint=4))
        assert isinstance(state, dict)
        assert len(state["sensor_id"]) == entities and int(state["seq"].min()) == per
        folded = entities * (per - (snapshot_every if snapshot_every < per else 0))
        return rate(entities, seconds), rate(folded, seconds)


def peer_figures(rows: int, entities: int) -> dict[str, float]:
    """Pykka and Thespian on the same work, each in its own venv (absent: skipped)."""
    out: dict[str, float] = {}
    script = Path(__file__).resolve().parent / "peers" / "actors" / "peer_bench.py"
    for peer in ("pykka", "thespian"):
        python = PEERS / peer / "bin" / "python"
        if not python.exists():
            print(f"{peer}: no {python} (bash benchmarks/peers/actors/setup.sh)", file=sys.stderr)
            continue
        done = subprocess.run(
            [str(python), str(script), peer, str(rows), str(entities)],
            capture_output=True, text=True, timeout=1800, check=True,
        )  # fmt: skip
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        for key in ("spawn_us", "messages_per_s", "recovery_entities_per_s"):
            out[f"{peer}_{key}"] = float(figures[key])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only-recovery", action="store_true")
    parser.add_argument("--peers", action="store_true", help="Pykka and Thespian too")
    args = parser.parse_args()
    stage_rate(ActorStage(Counter()), 1000, BATCH)  # compile
    stage_rate(ActorStage(EquipmentStateMachine()), 1000, BATCH)
    results = []
    for r in range(args.repeat):
        m: dict[str, float] = {}
        m["recovery_entities_per_s"], m["recovery_events_per_s"] = recovery_rates(
            100_000, 20, 10**9
        )
        m["recovery_entities_per_s_snap"], m["recovery_events_per_s_snap"] = recovery_rates(
            100_000, 20, 10
        )
        if args.peers:
            m.update(peer_figures(100_000, 2_000))
        if args.only_recovery:
            results.append(m)
            print(f"pass {r + 1}: " + ", ".join(f"{k}={v:,.3f}" for k, v in m.items()), flush=True)
            continue
        for keys in (10_000, 100_000):
            m[f"stage_rows_per_s_counter_{keys}"] = stage_rate(
                ActorStage(Counter()), keys, args.rows
            )
            m[f"stage_rows_per_s_machine_{keys}"] = stage_rate(
                ActorStage(EquipmentStateMachine()), keys, args.rows
            )
            m[f"stage_rows_per_s_machine_journal_{keys}"] = journal_rate(keys, args.rows)
        for mode in ("store", "full", "none"):
            m[f"checkpoint_ms_{mode}"], m[f"checkpoint_bytes_{mode}"] = checkpoint_cost(mode)
        m["activation_us"] = activation_us(1_000_000)
        m["memory_mb_100k"] = memory_mb(100_000)
        m["python_rows_per_s"] = python_rate(10_000, 400_000)
        results.append(m)
        print(f"pass {r + 1}: " + ", ".join(f"{k}={v:,.3f}" for k, v in m.items()), flush=True)
    summary: dict[str, object] = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "rows": args.rows,
        "batch_rows": BATCH,
    }
    return emit(summary, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
