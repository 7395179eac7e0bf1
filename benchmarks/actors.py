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
- ``python_rows_per_s``: the Python-class path (a counter) over 10k entities.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, rate, timed

from telepipe.operators.actors import (
    ActorStage,
    Counter,
    EquipmentStateMachine,
    Event,
    PythonActor,
)
from telepipe.schema import READINGS

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


def python_rate(keys: int, rows: int) -> float:
    return stage_rate(ActorStage(PyCounter()), keys, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    stage_rate(ActorStage(Counter()), 1000, BATCH)  # compile
    stage_rate(ActorStage(EquipmentStateMachine()), 1000, BATCH)
    results = []
    for r in range(args.repeat):
        m: dict[str, float] = {}
        for keys in (10_000, 100_000):
            m[f"stage_rows_per_s_counter_{keys}"] = stage_rate(
                ActorStage(Counter()), keys, args.rows
            )
            m[f"stage_rows_per_s_machine_{keys}"] = stage_rate(
                ActorStage(EquipmentStateMachine()), keys, args.rows
            )
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
