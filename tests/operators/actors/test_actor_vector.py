"""ActorStage, vectorised path: the built-in actors equal a plain-Python reference on random
rows, however the input is cut and watermarked, with or without passivation; entities
keyed by a mapping (dict, CSV, Parquet); the output schema is fixed."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from actor_reference import counter_reference, drive, frame, machine_reference, random_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from telepipe.errors import ConfigError
from telepipe.operators import ActorStage, Counter, EquipmentStateMachine

MAPPING = {s: 100 + s % 3 for s in range(9)}  # 9 sensors on 3 machines


def _machine_frame(events: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        events,
        schema=["equipment_id", "ts", "seq", "event", "from_state", "to_state", "duration_ns"],
        orient="row",
    )


cuts = st.lists(st.integers(0, 300), max_size=12)
marks = st.lists(st.booleans(), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=cuts, marks=marks, idle=st.sampled_from([0, 2, 50]),
       max_active=st.sampled_from([1, 2, 1000]))  # fmt: skip
def test_equipment_state_machine_equals_the_reference(seed, cuts, marks, idle, max_active) -> None:
    rows = random_rows(np.random.default_rng(seed), 300, 9, alarms=True)
    op = ActorStage(
        EquipmentStateMachine(run_level=10.0, fault_level=90.0), key="equipment_id",
        mapping=MAPPING, idle_ms=idle, max_active=max_active, with_state=True,
    )  # fmt: skip
    logic = op.build()
    got = frame(drive(logic, rows, cuts, marks))
    events, state = machine_reference(rows, MAPPING.get, 10.0, 90.0)
    want = _machine_frame(events)
    cols = want.columns
    got_cmp = got.select(cols).with_columns(pl.col("ts").cast(pl.Int64))
    assert got_cmp.to_dicts() == want.cast(got_cmp.schema).to_dicts()
    snap = logic.snapshot()
    by_id = dict(zip(snap["sensor_id"].tolist(), range(len(snap["sensor_id"])), strict=True))
    assert set(by_id) == set(state)
    for e, s in state.items():
        i = by_id[e]
        assert snap["state_state"][i] == s["state"]
        assert snap["state_changes"][i] == s["changes"]
        assert snap["seq"][i] == s["seq"]
        spent = [snap[f"state_{k}_ns"][i] for k in ("idle", "running", "fault", "maintenance")]
        assert spent == s["time"]
    counters = logic.counters()
    assert counters["active"] + counters["passive"] == len(state)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=cuts, marks=marks, every=st.integers(0, 4))
def test_counter_equals_the_reference(seed, cuts, marks, every) -> None:
    rows = random_rows(np.random.default_rng(seed), 300, 20, alarms=False)
    logic = ActorStage(Counter(every=every), max_active=3).build()
    got = frame(drive(logic, rows, cuts, marks))
    events, state = counter_reference(rows, every)
    if not events:
        assert got.is_empty()
    else:
        assert got["event"].unique().to_list() == ["reached"]
        assert (
            list(
                zip(
                    got["sensor_id"],
                    got["ts"].cast(pl.Int64),
                    got["seq"],
                    got["count"],
                    strict=True,
                )
            )
            == events
        )
    snap = logic.snapshot()
    assert snap["sensor_id"].tolist() == sorted(state)
    assert snap["state_count"].tolist() == [state[e]["count"] for e in sorted(state)]
    assert snap["state_last_ts"].tolist() == [state[e]["last_ts"] for e in sorted(state)]


def test_passivation_keeps_state_and_counts() -> None:
    rows = [(s, t, 1.0, 0, 0) for t in range(0, 40_000_000, 1_000_000) for s in range(5)]
    rows += [(9, 100_000_000, 1.0, 0, 0)]
    eager = ActorStage(Counter(), idle_ms=5).build()
    lazy = ActorStage(Counter()).build()
    drive(eager, rows, [*range(0, len(rows), 7), len(rows) - 1], [True])
    drive(lazy, rows, [], [True])
    assert eager.snapshot()["state_count"].tolist() == lazy.snapshot()["state_count"].tolist()
    counters = eager.counters()
    assert counters["passive"] >= 5 and counters["activations"] == 6


@pytest.mark.parametrize("kind", ["dict", "csv", "parquet"])
def test_a_mapping_from_a_dict_a_csv_or_a_parquet_file(kind, tmp_path) -> None:
    table = pa.table({"sensor_id": list(MAPPING), "equipment_id": list(MAPPING.values())})
    if kind == "dict":
        mapping: object = MAPPING
    elif kind == "csv":
        mapping = str(tmp_path / "m.csv")
        pl.from_arrow(table).write_csv(mapping)  # type: ignore[union-attr]
    else:
        mapping = str(tmp_path / "m.parquet")
        pq.write_table(table, mapping)
    rows = random_rows(np.random.default_rng(1), 200, 12, alarms=True)  # sensors 9..11 unmapped
    logic = ActorStage(EquipmentStateMachine(), key="equipment_id", mapping=mapping).build()
    got = frame(drive(logic, rows, [50, 120], [True]))
    assert set(got["equipment_id"].to_list()) <= {100, 101, 102}
    assert logic.counters()["unmapped_rows"] == sum(r[0] >= 9 for r in rows)


def test_the_output_schema_is_fixed_and_bad_options_are_one_line() -> None:
    op = ActorStage(EquipmentStateMachine(), key="equipment_id", mapping={1: 7})
    assert op.output_schema.names[:8] == [
        "equipment_id", "ts", "seq", "event", "from_state", "to_state", "alarms", "duration_ns",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"^ActorStage.key 'equipment_id' needs a mapping"):
        ActorStage(Counter(), key="equipment_id")
    with pytest.raises(ConfigError, match=r"^ActorStage.strategy must be one of"):
        ActorStage(Counter(), strategy="one_for_some")
    with pytest.raises(ConfigError, match=r"no such file"):
        ActorStage(Counter(), key="equipment_id", mapping="/nonexistent.csv")
    with pytest.raises(ConfigError, match=r"run_level must be <= fault_level"):
        EquipmentStateMachine(run_level=95.0, fault_level=90.0)
