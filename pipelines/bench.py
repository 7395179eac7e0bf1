"""``telepipe bench``: how fast a pipeline's operators run on this machine, in process.

The pipeline's outputs are built from its YAML as ``telepipe run`` builds them.
Their input is the simulator's readings (``simulator.options``), SBE-encoded and
decoded by the source's own decoder, so the batches, watermarks, barriers and
late cut are those of a live run. Timed, ``bench.repeats`` times (medians):

- the decoder alone (messages -> flow items);
- each output's chain alone over the decoded items;
- every output from one Subject, as a run's flow fans out: the ceiling of
  ``telepipe run`` on this machine before Aeron and the sink.

No Aeron, no tables: nothing is written unless ``bench.out`` names a JSON file.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from omegaconf import DictConfig
from reactivex.subject import Subject
from rich.console import Console
from rich.table import Table

from telepipe.config import build
from telepipe.errors import ConfigError, TelepipeError
from telepipe.markers import Item
from telepipe.pipelines.graph import Output, connect, outputs_from_config
from telepipe.pipelines.protocols import SourceOptions
from telepipe.sbe import SbeCodec
from telepipe.sources.decoder import MessageBuffer, TelemetryDecoder
from telepipe.sources.simulator import SimulatorOptions, TelemetryGenerator


@dataclass(frozen=True)
class BenchOptions:
    readings: int = 2_000_000
    repeats: int = 3
    batch_messages: int = 64  # messages decoded per poll
    out: str | None = None  # also write the figures here, as JSON

    def __post_init__(self) -> None:
        for key in ("readings", "repeats", "batch_messages"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"bench.{key} must be an integer >= 1, got {value!r}")


def encoded_messages(codec: SbeCodec, options: SimulatorOptions, readings: int) -> list[bytes]:
    return [payload for payload, _ in TelemetryGenerator(options).messages(codec, readings)]


def decode_all(
    codec: SbeCodec, source_options: SourceOptions, messages: list[bytes], batch_messages: int
) -> tuple[list[Item], TelemetryDecoder]:
    """The flow items the source would emit for ``messages``, polled ``batch_messages`` at a time."""
    decoder = TelemetryDecoder(codec, source_options.decoder_options())
    stream_id = int(source_options.stream_id)
    buffer = MessageBuffer()
    items: list[Item] = []
    position = 0
    for payload in messages:
        buffer.add(payload, stream_id, 1, position)
        position += len(payload)
        if len(buffer) >= batch_messages:
            items += decoder.decode(buffer)
    items += decoder.decode(buffer)
    return items, decoder


def _push(items: list[Item], outputs: list[Output]) -> tuple[float, dict[str, int]]:
    """Seconds to push ``items`` through ``outputs`` fanned out from one Subject, and the
    rows each output emitted."""
    subject: Subject[Item] = Subject()
    rows = {o.table: 0 for o in outputs}
    failures: list[BaseException] = []

    def count(table: str) -> Callable[[Item], None]:
        def on_next(item: Item) -> None:
            if isinstance(item, pa.RecordBatch):
                rows[table] += item.num_rows

        return on_next

    for output in outputs:
        connect(subject, output).subscribe(count(output.table), failures.append)
    started = time.perf_counter()
    for item in items:
        subject.on_next(item)
    subject.on_completed()
    seconds = time.perf_counter() - started
    if failures:
        raise TelepipeError(f"an operator failed: {failures[0]}")
    return seconds, rows


def bench(cfg: DictConfig, console: Console | None = None) -> dict[str, object]:
    """Run the bench for ``cfg``; returns the figures (also printed, and written to
    ``bench.out`` when set)."""
    console = console or Console()
    options: BenchOptions = build(cfg.bench, "bench")
    source_options: SourceOptions = build(cfg.source, "source")
    codec: SbeCodec = build(cfg.schema, "schema")
    if "options" not in cfg.simulator:
        raise ConfigError("bench needs the simulator's options: drop simulator=none")
    sim_options: SimulatorOptions = build(cfg.simulator.options, "simulator.options")
    outputs = outputs_from_config(cfg.pipeline)
    if options.out:
        try:  # fail before the run, not after it
            Path(options.out).parent.mkdir(parents=True, exist_ok=True)
            Path(options.out).touch()
        except OSError as error:
            raise ConfigError(f"bench.out={options.out}: {error.strerror}") from None

    messages = encoded_messages(codec, sim_options, options.readings)
    items, decoder = decode_all(codec, source_options, messages, options.batch_messages)
    received = decoder.counters.readings - decoder.counters.late
    decode_s: list[float] = []
    chain_s: dict[str, list[float]] = {o.table: [] for o in outputs}
    graph_s: list[float] = []
    rows_out: dict[str, int] = {}
    for _ in range(options.repeats):
        started = time.perf_counter()
        decode_all(codec, source_options, messages, options.batch_messages)
        decode_s.append(time.perf_counter() - started)
        for output in outputs:
            seconds, rows = _push(items, [output])
            rows_out |= rows
            if output.operators:
                chain_s[output.table].append(seconds)
        seconds, rows = _push(items, outputs)
        graph_s.append(seconds)
        if rows != rows_out:
            raise TelepipeError(f"outputs differ when fanned out: {rows} vs {rows_out}")

    def rate(seconds: list[float]) -> float | None:
        if not seconds:
            return None  # readings as they arrive: nothing to time
        return round(options.readings / max(statistics.median(seconds), 1e-9), 1)

    figures: dict[str, object] = {
        "pipeline": str(cfg.pipeline.name),
        "readings": options.readings,
        "readings_to_operators": received,
        "late_at_source": decoder.counters.late,
        "sensors": sim_options.sensors,
        "repeats": options.repeats,
        "decoder_readings_per_s": rate(decode_s),
        "outputs": {
            o.table: {
                "steps": [
                    f"{s}: {type(op).__name__}" for s, op in zip(o.steps, o.operators, strict=True)
                ],
                "readings_per_s": rate(chain_s[o.table]),
                "rows_out": rows_out[o.table],
            }
            for o in outputs
        },
        "all_outputs_readings_per_s": rate(graph_s),
    }
    _print(console, figures)
    if options.out:
        Path(options.out).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _print(console: Console, figures: dict[str, object]) -> None:
    outputs: dict[str, dict[str, object]] = figures["outputs"]  # type: ignore[assignment]
    table = Table(
        title=(
            f"telepipe bench: pipeline {figures['pipeline']}, {figures['readings']:,} simulated "
            f"readings from {figures['sensors']:,} sensors, median of {figures['repeats']}"
        ),
        header_style="bold",
    )
    for name, justify in (("table", "left"), ("steps", "left"), ("rows out", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("M readings/s", justify="right")
    received = f"{figures['readings_to_operators']:,}"
    table.add_row("(source)", "decode SBE", received, _m(figures["decoder_readings_per_s"]))
    for name, o in outputs.items():
        # One step a line: joined on one, a chain of several wrapped mid-name at 80 columns.
        steps = "\n".join(o["steps"]) or "(readings as they arrive)"  # type: ignore[arg-type]
        table.add_row(name, steps, f"{o['rows_out']:,}", _m(o["readings_per_s"]))
    all_outputs = _m(figures["all_outputs_readings_per_s"])
    table.add_row("all outputs", "one flow, fanned out", "", all_outputs, style="bold")
    console.print(table)
    console.print(
        "telepipe: in process, no Aeron and no sink; `telepipe run` adds both "
        "(docs/BENCHMARKS.md has end-to-end figures)",
        highlight=False,
    )


def _m(per_s: object) -> str:
    """Readings/s as M readings/s, or "-" when there was nothing to time."""
    return "-" if per_s is None else f"{per_s / 1e6:,.2f}"  # type: ignore[operator]
