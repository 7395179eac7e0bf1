"""The runner: pulls the source, pushes batches through the flow, drains on exit.

The poll loop is the only place that reads the source and it runs only after
the previous items went all the way through the synchronous Rx chain into the
sink's bounded queue, so a slow sink stops the polling (back-pressure), and a
SIGINT/SIGTERM ends the loop, then the runner checkpoints, completes the flow,
flushes every table and writes the statistics.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pyarrow as pa
from omegaconf import DictConfig
from reactivex import Observer
from reactivex.subject import Subject
from rich.console import Console
from rich.live import Live

from telepipe.aeron import AeronConnection, idle_strategy
from telepipe.config import build, option
from telepipe.errors import SourceError, TelepipeError
from telepipe.markers import Item, Watermark
from telepipe.pipelines.child import SimulatorProcess
from telepipe.pipelines.graph import RESERVED_TABLES, connect, outputs_from_config
from telepipe.schema import DEAD_LETTERS
from telepipe.sinks.delta import DeltaSink
from telepipe.sources.aeron import AeronSource
from telepipe.sources.decoder import dead_letters_batch
from telepipe.stats import RunStats, live_table, print_summary


class Runner:
    def __init__(self, cfg: DictConfig, overrides: list[str] | None = None) -> None:
        self.cfg = cfg
        self.overrides = overrides or []
        self.stats = RunStats()
        self.stop_reason = ""
        self.limit: int | None = option(cfg, "limit.readings")
        self.data_dir = Path(str(cfg.data_dir)).resolve()
        self.console = Console(stderr=False)
        self.raw_table: str | None = None
        self._started = time.monotonic()

    def request_stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason

    def run(self) -> RunStats:
        cfg = self.cfg
        aeron_options = build(cfg.aeron, "aeron")
        source_options = build(cfg.source, "source")
        sink_options = build(cfg.sink, "sink")
        codec = build(cfg.schema, "schema")
        outputs = outputs_from_config(cfg.pipeline)
        simulator_enabled = bool(option(cfg, "simulator.enabled"))
        if simulator_enabled:
            build(cfg.simulator.options, "simulator.options")  # fail fast, in this process

        tables = {o.table: o.schema(codec.arrow_schema) for o in outputs}
        self.raw_table = next((o.table for o in outputs if not o.operators), None)
        tables |= {"late_readings": codec.arrow_schema, "dead_letters": DEAD_LETTERS}
        with AeronConnection(aeron_options) as connection:
            source = AeronSource(source_options, codec, connection)
            sink = DeltaSink(sink_options, self.data_dir, tables).start()
            subject: Subject[Item] = Subject()
            counted: dict[str, int] = {}
            for output in outputs:
                counted[output.table] = 0
                connect(subject, output).subscribe(
                    _counting(sink.observer(output.table), counted, output.table)
                )

            child = (
                SimulatorProcess.start(cfg, connection.dir, self.overrides)
                if simulator_enabled
                else None
            )
            self._install_signals()
            try:
                self._loop(source, sink, subject, child, counted)
                if child is not None:
                    child.stop()
                self._drain_side_outputs(source, sink)
                subject.on_next(source.checkpoint())
                subject.on_completed()
                for name in RESERVED_TABLES:
                    sink.close(name)
                sink.join()
            except BaseException as error:
                if child is not None:
                    child.stop(timeout=5.0)
                sink.abort()
                self.request_stop(f"error: {error}")
                self._finish(source, sink, child, counted)
                raise
            finally:
                source.close()
            self._finish(source, sink, child, counted)
        return self.stats

    def _loop(
        self,
        source: AeronSource,
        sink: DeltaSink,
        subject: Subject[Item],
        child: SimulatorProcess | None,
        counted: dict[str, int],
    ) -> None:
        idle = idle_strategy(build(self.cfg.aeron, "aeron"))
        idle_limit = float(option(self.cfg, "limit.idle_s") or 5.0)
        started = time.monotonic()
        self._started = started
        last_data = started
        next_ui = 0.0
        live = self._live()
        with live if live is not None else _null():
            while not self.stop_reason:
                items = source.poll()
                for item in items:
                    if isinstance(item, Watermark):
                        self.stats.watermark_lag_ms = (time.time_ns() - item.ts_ns) / 1e6
                    subject.on_next(item)
                self._drain_side_outputs(source, sink)
                now = time.monotonic()
                if items:
                    last_data = now
                    idle.reset()
                else:
                    idle.idle(0)
                received = source.counters.readings
                if self.limit is not None and received >= self.limit:
                    self.request_stop("limit")
                if child is not None and child.exited():
                    if child.returncode != 0:
                        raise SourceError(
                            f"the simulator exited with code {child.returncode}: {child.error_line()}"
                        )
                    if now - last_data > idle_limit:
                        self.request_stop("simulator finished")
                if now >= next_ui:
                    next_ui = now + 0.5
                    self._refresh(source, sink, counted)
                    if live is not None:
                        live.update(live_table(self.stats, started))

    def _live(self) -> Live | None:
        ui = str(option(self.cfg, "ui") or "auto")
        show = ui == "always" or (ui == "auto" and sys.stdout.isatty())
        if not show:
            return None
        return Live(
            live_table(self.stats, time.monotonic()), console=self.console, refresh_per_second=2
        )

    def _drain_side_outputs(self, source: AeronSource, sink: DeltaSink) -> None:
        for batch in source.take_late():
            sink.write("late_readings", batch)
        dead = source.take_dead_letters()
        if dead:
            sink.write("dead_letters", dead_letters_batch(dead))

    def _refresh(self, source: AeronSource, sink: DeltaSink, counted: dict[str, int]) -> None:
        s = self.stats
        s.received = source.counters.readings
        s.messages = source.counters.messages
        s.rejected = source.counters.rejected
        s.rejected_by_reason = dict(source.counters.rejected_by_reason)
        s.late = source.counters.late
        q = sink.queue.counters
        s.queue_depth, s.peak_queue_depth = q.depth, q.peak_depth
        s.blocked_s = round(q.blocked_s, 3)
        s.committed_by_table = sink.committed()
        s.dropped_by_table = sink.dropped()
        raw = self.raw_table or ""
        s.committed = s.committed_by_table.get(raw, 0)
        s.dropped = s.dropped_by_table.get(raw, 0)
        s.windows, s.alarms = counted.get("windows", 0), counted.get("alarms", 0)
        s.sample_rss(time.monotonic() - self._started)

    def _finish(
        self,
        source: AeronSource,
        sink: DeltaSink,
        child: SimulatorProcess | None,
        counted: dict[str, int],
    ) -> None:
        self._refresh(source, sink, counted)
        s = self.stats
        s.elapsed_s = round(time.monotonic() - self._started, 3)
        s.readings_per_s = round(s.received / max(s.elapsed_s, 1e-9), 1)
        s.data_dir = str(self.data_dir)
        s.exit_reason = self.stop_reason
        if child is not None:
            published = child.counters()
            s.published = int(published.get("published", 0))
            s.backpressured_offers = int(published.get("backpressured_offers", 0))
        stats_file = option(self.cfg, "stats_file")
        if stats_file:
            s.save(stats_file)

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.request_stop(signal.Signals(signum).name)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def _counting(observer: Observer[Item], counted: dict[str, int], table: str) -> Observer[Item]:
    def on_next(item: Item) -> None:
        if isinstance(item, pa.RecordBatch):
            counted[table] += item.num_rows
        observer.on_next(item)

    return Observer(on_next, observer.on_error, observer.on_completed)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def run(cfg: DictConfig, overrides: list[str]) -> int:
    runner = Runner(cfg, overrides)
    try:
        stats = runner.run()
    except TelepipeError:
        raise
    print_summary(stats, runner.console)
    return 0
