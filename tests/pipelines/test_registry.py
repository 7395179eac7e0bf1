"""Sources and sinks come from a registry keyed by their options' type: the built-in
kinds, a one-line error for an unknown one, and a plugin's sink that a run opens and
fills like any other (in process, over a recorded input)."""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from dead_letter_data import telemetry, write_capture

from telepipe.boundary import BoundaryOptions
from telepipe.config import load
from telepipe.errors import ConfigError
from telepipe.markers import CheckpointBarrier
from telepipe.pipelines import registry
from telepipe.pipelines.assembly import Opens, plan
from telepipe.pipelines.registry import SinkContext, SinkKind, sink_kind, source_kind
from telepipe.pipelines.runner import Runner
from telepipe.sinks.aeron import AeronSinkOptions
from telepipe.sinks.delta import DeltaSinkOptions
from telepipe.sinks.kudu import KuduSinkOptions
from telepipe.sinks.queued import QueuedSink
from telepipe.sources.aeron import AeronSourceOptions


@dataclass(frozen=True)
class MemorySinkOptions:
    capacity: int = 4


class MemorySink(QueuedSink):
    """A plugin's sink: rows and checkpoints kept in memory, by table."""

    kind = "memory sink"

    def __init__(self, options: MemorySinkOptions, tables: dict[str, pa.Schema | None]) -> None:
        super().__init__(list(tables), BoundaryOptions(options.capacity))
        self.rows: dict[str, list[pa.RecordBatch]] = {t: [] for t in tables}
        self.checkpoints: dict[str, list[int]] = {t: [] for t in tables}
        self.ended: set[str] = set()

    def on_rows(self, table: str, batch: pa.RecordBatch) -> None:
        self.rows[table].append(batch)

    def on_barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        self.checkpoints[table].append(barrier.checkpoint_id)

    def on_end(self, table: str) -> None:
        self.ended.add(table)

    def committed(self) -> dict[str, int]:
        return {t: sum(b.num_rows for b in batches) for t, batches in self.rows.items()}


opened_sinks: list[MemorySink] = []


def open_memory(options: MemorySinkOptions, ctx: SinkContext) -> MemorySink:
    sink = MemorySink(options, ctx.tables)
    opened_sinks.append(sink)
    return sink


MEMORY = SinkKind("memory", MemorySinkOptions, open_memory)


def test_the_built_in_kinds_are_found_by_their_options_type() -> None:
    assert source_kind(AeronSourceOptions()).name == "aeron"
    assert sink_kind(DeltaSinkOptions()).name == "delta"
    assert sink_kind(KuduSinkOptions()).name == "kudu"
    assert sink_kind(AeronSinkOptions()).name == "aeron"
    assert sink_kind(DeltaSinkOptions()).recover is not None  # Delta keeps checkpoints
    assert sink_kind(KuduSinkOptions()).recover is None  # Kudu upserts a replay instead


def test_an_unknown_options_type_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        sink_kind(MemorySinkOptions(), "pipeline.publish.alarms")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("pipeline.publish.alarms: ")
    assert "MemorySinkOptions is not a registered sink" in message
    assert "telepipe.sinks" in message  # where a plugin registers one


def test_a_plugin_registers_a_kind_through_an_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = SimpleNamespace(load=lambda: MEMORY)
    monkeypatch.setattr(registry, "_loaded_groups", set())
    monkeypatch.setattr(registry, "_SINKS", dict(registry._SINKS))
    monkeypatch.setattr(
        registry.importlib.metadata,
        "entry_points",
        lambda group: [entry] if group == registry.SINK_GROUP else [],
    )
    assert sink_kind(MemorySinkOptions()) is MEMORY


def test_a_run_opens_a_plugin_s_sink_and_fills_every_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_SINKS", dict(registry._SINKS))
    registry.register_sink(MEMORY)
    assert sink_kind(MemorySinkOptions()) is MEMORY
    capture = tmp_path / "capture"
    write_capture(capture, [telemetry(i, n=10) for i in range(30)])
    overrides = [f"data_dir={tmp_path / 'data'}", f"input={capture}", "ui=never"]
    planned = plan(load(overrides), overrides, str(capture))
    planned = dataclasses.replace(planned, sink=Opens(MEMORY, MemorySinkOptions()))
    opened_sinks.clear()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = Runner(planned).run()
    finally:  # the runner's handlers stop a run; this process goes on
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    (sink,) = opened_sinks
    assert stats.exit_reason == "end of input"
    assert stats.received == 300 and stats.committed_by_table["readings"] == 300
    assert sink.committed() == stats.committed_by_table
    assert set(sink.rows) == {"readings", "windows", "alarms", "late_readings", "dead_letters"}
    assert sink.ended == set(sink.rows)  # every table closed at the end of the input
    assert all(ids and ids == sink.checkpoints["readings"] for ids in sink.checkpoints.values())
    assert stats.output_rows_by_table == {
        "windows": sum(b.num_rows for b in sink.rows["windows"]),
        "alarms": 0,
    }
    assert not (tmp_path / "data" / "readings").exists()  # nothing went to Delta
