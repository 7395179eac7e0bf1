"""The runner: pulls the source, pushes batches through the flow, drains on exit.

The poll loop is the only place that reads the source and it runs only after
the previous items went all the way through the synchronous Rx chain into the
sink's bounded queue, so a slow sink stops the polling (back-pressure). A
SIGINT/SIGTERM, the limit or the end of a recorded input ends the loop; then the
runner checkpoints, completes the flow, flushes every table and saves the stats.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Protocol

import pyarrow as pa
from omegaconf import DictConfig
from reactivex import Observer
from reactivex.subject import Subject
from rich.console import Console

from telepipe import signals
from telepipe.aeron import AeronConnection, idle_strategy
from telepipe.config import build, option
from telepipe.dead_letters import DeadLetter, dead_letters_batch
from telepipe.errors import ConfigError, SourceError
from telepipe.markers import MAX_WATERMARK, CheckpointBarrier, Item, Watermark
from telepipe.pipelines.child import CaptureProcess, SimulatorProcess
from telepipe.pipelines.display import Display
from telepipe.pipelines.graph import (
    RESERVED_TABLES,
    connect,
    outputs_from_config,
    publishers_from_config,
)
from telepipe.pipelines.recovery import read_recovery
from telepipe.sbe import SbeCodec
from telepipe.schema import DEAD_LETTERS
from telepipe.sinks import data_dir_lock
from telepipe.sinks.aeron import AeronSink
from telepipe.sinks.delta import DeltaSink, DeltaSinkOptions
from telepipe.sinks.queued import QueuedSink
from telepipe.sources.decoder import SourceCounters, late_row_letters
from telepipe.stats import RunStats, print_summary


class PulledSource(Protocol):
    exhausted: bool

    @property
    def counters(self) -> SourceCounters: ...

    def poll(self) -> list[Item]: ...

    def checkpoint(self) -> CheckpointBarrier: ...

    def take_dead_letters(self) -> list[DeadLetter]: ...

    def take_late(self) -> list[pa.RecordBatch]: ...

    def progress(self) -> tuple[int, int | None]: ...

    def close(self) -> None: ...


class Sink(Protocol):
    queue: object

    def start(self) -> QueuedSink: ...

    def observer(self, table: str) -> Observer[Item]: ...

    def write(self, table: str, batch: pa.RecordBatch) -> None: ...

    def barrier(self, table: str, barrier: CheckpointBarrier) -> None: ...

    def close(self, table: str) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def abort(self, timeout: float = 30.0) -> None: ...

    def committed(self) -> dict[str, int]: ...

    def dropped(self) -> dict[str, int]: ...


class Runner:
    """Runs one pipeline over a live stream (``input=None``) or a recorded input."""

    def __init__(
        self, cfg: DictConfig, overrides: list[str] | None = None, input_path: str | None = None
    ) -> None:
        self.cfg = cfg
        self.overrides = overrides or []
        self.input_path = input_path
        self.stats = RunStats()
        self.stop_reason = ""
        self.limit: int | None = option(cfg, "limit.readings")
        self.data_dir = Path(str(cfg.data_dir)).resolve()
        self.console = Console(stderr=False)
        self.raw_table: str | None = None
        self.counted: dict[str, int] = {}
        self.child: SimulatorProcess | None = None
        self.publishers: dict[str, AeronSink] = {}
        self.late_at_steps = 0  # rows operators set aside (the source counts its own)
        self._started = time.monotonic()

    def request_stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason

    def run(self) -> RunStats:
        cfg = self.cfg
        source_options = build(cfg.source, "source")
        sink_options = build(cfg.sink, "sink")
        codec = build(cfg.schema, "schema")
        outputs = outputs_from_config(cfg.pipeline)
        live = self.input_path is None
        simulate = live and bool(option(cfg, "simulator.enabled"))
        if simulate:
            build(cfg.simulator.options, "simulator.options")  # fail fast, in this process
        replay_options = None
        if not live:
            from telepipe.sources.replay import ReplayOptions

            replay_options = ReplayOptions.from_config(cfg.replay)

        tables = {o.table: o.schema(codec.arrow_schema) for o in outputs}
        tables |= {"late_readings": codec.arrow_schema, "dead_letters": DEAD_LETTERS}
        self.raw_table = next((o.table for o in outputs if not o.operators), None)
        delta = isinstance(sink_options, DeltaSinkOptions)
        # Kudu keeps no checkpoint: a restart replays the input and upserts (effectively once).
        recovery = (
            read_recovery(self.data_dir, list(tables), sink_options.app_id) if delta else None
        )
        origin = "live" if live else str(Path(str(self.input_path)).resolve())
        if recovery is not None and recovery.input not in (None, origin):
            raise ConfigError(
                f"data_dir={self.data_dir} holds checkpoints of input {recovery.input}; "
                "use another data_dir for this input"
            )
        self.stats.resumed_from = recovery.oldest if recovery is not None and not live else 0
        publish = publishers_from_config(cfg.pipeline, [o.table for o in outputs])
        connection = AeronConnection(build(cfg.aeron, "aeron")) if live or publish else None
        with connection or contextlib.nullcontext():
            source: PulledSource
            if live and connection is not None:
                from telepipe.sources.aeron import AeronSource

                source = AeronSource(source_options, codec, connection)
                if recovery is not None:  # live input is not replayable: only continue the ids
                    source.decoder.checkpoint(recovery.latest)
            else:
                from telepipe.sources.replay import ReplaySource

                assert replay_options is not None and self.input_path is not None
                source = ReplaySource(
                    self.input_path,
                    replay_options,
                    codec,
                    source_options.decoder_options(),
                    recovery.resume if recovery is not None else None,
                )
            sink: Sink
            if delta:
                sink = DeltaSink(sink_options, self.data_dir, tables, {"telepipe.input": origin})
            else:
                from telepipe.sinks.kudu import KuduSink

                sink = KuduSink(sink_options, tables)
            sink.start()
            subject: Subject[Item] = Subject()
            restored = recovery.chain_states if recovery is not None and not live else {}
            self.publishers = {
                table: AeronSink(options, table, connection).start()  # type: ignore[arg-type]
                for table, options in publish.items()
            }
            for output in outputs:
                self.counted[output.table] = 0
                observers = [sink.observer(output.table)]
                if output.table in self.publishers:
                    observers.append(self.publishers[output.table].observer(output.table))
                late = functools.partial(self._late_at_step, sink, codec, source_options.stream_id)
                connect(subject, output, restored.get(output.table), late).subscribe(
                    _counting(observers, self.counted, output.table)
                )
            metrics_server = self._serve_metrics()  # before any child: a bad port fails alone
            recorder = None
            capture_dir = option(cfg, "capture_dir")
            if capture_dir and connection is not None:
                recorder = CaptureProcess.start(
                    connection.dir, source_options.channel, source_options.stream_id, capture_dir
                )
            if simulate and connection is not None:
                self.child = SimulatorProcess.start(cfg, connection.dir, self.overrides)
            self._install_signals(source)
            try:
                self._loop(source, sink, subject)
                # The simulator first: a recorder waits for its capture to stop growing,
                # which it does not while the simulator publishes (a SIGTERM took 16 s).
                if self.child is not None:
                    self.child.stop()
                if recorder is not None:
                    recorder.stop()
                self._drain(source, sink, subject, resumable=not live)
                sink.join()
                for publisher in self.publishers.values():
                    publisher.join()
            except BaseException as error:
                if recorder is not None:
                    recorder.stop(settle_s=0.0, timeout=5.0)
                if self.child is not None:
                    self.child.stop(timeout=5.0)
                sink.abort()
                for publisher in self.publishers.values():
                    publisher.abort(timeout=5.0)
                self.request_stop(f"error: {error}")
                self._finish(source, sink)
                raise
            finally:
                source.close()
                if metrics_server is not None:
                    metrics_server.shutdown()
            self._finish(source, sink)
        return self.stats

    def _loop(self, source: PulledSource, sink: Sink, subject: Subject[Item]) -> None:
        idle = idle_strategy(build(self.cfg.aeron, "aeron"))
        idle_limit = float(option(self.cfg, "limit.idle_s") or 5.0)
        last_data = self._started = time.monotonic()
        next_ui = 0.0
        announced = False
        child = self.child
        with Display(
            self.cfg, self.console, self.stats, self._started, replay=not source_live(source)
        ) as display:
            while not self.stop_reason:
                items = source.poll()
                for item in items:
                    self._push(item, source, sink, subject)
                self._drain_side_outputs(source, sink)
                now = time.monotonic()
                if items:
                    last_data = now
                    idle.reset()
                    if not announced and source.counters.readings:
                        announced = self._announce_running()
                elif not source.exhausted:
                    idle.idle(0)
                if self.limit is not None and source.counters.readings >= self.limit:
                    self.request_stop("limit")
                if source.exhausted:
                    self.request_stop("end of input")
                if child is not None and child.exited():
                    if child.returncode != 0:
                        raise SourceError(
                            f"the simulator exited with code {child.returncode}: {child.error_line()}"
                        )
                    if now - last_data > idle_limit:
                        self.request_stop("simulator finished")
                if now >= next_ui:
                    next_ui = now + 0.25
                    self._refresh(source, sink)
                    display.update(source.progress())

    def _announce_running(self) -> bool:
        """One line once readings flow: a supervisor or a test waits for it (the signal
        handlers are installed by then), never for a fixed time."""
        print(
            f"telepipe: running: pipeline {self.cfg.pipeline.name}, readings arriving "
            f"(pid {os.getpid()}); SIGINT/SIGTERM stop it",
            file=sys.stderr,
            flush=True,
        )
        return True

    def _serve_metrics(self) -> object | None:
        port = option(self.cfg, "metrics.port")
        if not port:
            return None
        from telepipe.metrics import serve

        address = str(option(self.cfg, "metrics.address") or "127.0.0.1")
        try:
            return serve(self.stats, str(self.cfg.pipeline.name), int(port), address)
        except OSError as error:
            raise ConfigError(f"metrics.port={port}: cannot listen on {address}: {error}") from None

    def _drain(
        self, source: PulledSource, sink: Sink, subject: Subject[Item], resumable: bool
    ) -> None:
        """End the flow so that what is committed is exactly what a restart expects.

        At the end of the input (or the limit) every operator is flushed by a maximal
        watermark *before* the final barrier, so the flushed windows and alarms commit
        with it. A replay stopped early (Ctrl-C, SIGTERM) is not flushed: its final
        barrier carries the open windows as state and a restart resumes them.
        """
        finished = self.stop_reason in ("end of input", "limit")
        if finished or not resumable:
            self._push(Watermark(MAX_WATERMARK), source, sink, subject)
        self._push(source.checkpoint(), source, sink, subject)
        if finished or not resumable:
            subject.on_completed()
        else:
            for name in self.counted:
                sink.close(name)
            for publisher in self.publishers.values():
                for name in publisher.table_names:
                    publisher.close(name)
        for name in RESERVED_TABLES:
            sink.close(name)

    def _push(self, item: Item, source: PulledSource, sink: Sink, subject: Subject[Item]) -> None:
        if isinstance(item, Watermark) and item.ts_ns < MAX_WATERMARK:
            self.stats.watermark_lag_ms = (time.time_ns() - item.ts_ns) / 1e6
        elif isinstance(item, CheckpointBarrier):
            # Side outputs commit at the same barrier, after the rows that precede it.
            self._drain_side_outputs(source, sink)
            for name in RESERVED_TABLES:
                sink.barrier(name, item)
        subject.on_next(item)

    def _late_at_step(
        self, sink: Sink, codec: SbeCodec, stream_id: int, where: str, rows: pa.RecordBatch
    ) -> None:
        """Rows an operator found too late: to ``late_readings`` and the dead letters."""
        sink.write("late_readings", rows)
        self.late_at_steps += rows.num_rows
        sink.write(
            "dead_letters", dead_letters_batch(late_row_letters(codec, rows, where, stream_id))
        )

    def _drain_side_outputs(self, source: PulledSource, sink: Sink) -> None:
        for batch in source.take_late():
            sink.write("late_readings", batch)
        dead = source.take_dead_letters()
        take_rejected_rows = getattr(sink, "take_dead_letters", None)
        if take_rejected_rows is not None:  # rows the store refused (Kudu per-row errors)
            dead += take_rejected_rows()
        if dead:
            sink.write("dead_letters", dead_letters_batch(dead))

    def _refresh(self, source: PulledSource, sink: Sink) -> None:
        s, c = self.stats, source.counters
        s.received, s.messages = c.readings, c.messages
        s.rejected, s.rejected_by_reason = c.rejected, dict(c.rejected_by_reason)
        s.late = c.late + self.late_at_steps
        s.gaps = getattr(source, "gaps", 0)
        s.input_damage = dict(getattr(source, "damage", {}))
        q = sink.queue.counters
        s.queue_depth, s.peak_queue_depth = q.depth, q.peak_depth
        s.blocked_s = round(q.blocked_s, 3)
        s.committed_by_table = sink.committed()
        s.dropped_by_table = sink.dropped()
        raw = self.raw_table or ""
        s.committed = s.committed_by_table.get(raw, 0)
        s.dropped = s.dropped_by_table.get(raw, 0)
        s.windows, s.alarms = self.counted.get("windows", 0), self.counted.get("alarms", 0)
        s.sample_rss(time.monotonic() - self._started)

    def _finish(self, source: PulledSource, sink: Sink) -> None:
        self._refresh(source, sink)
        s = self.stats
        s.elapsed_s = round(time.monotonic() - self._started, 3)
        s.readings_per_s = round(s.received / max(s.elapsed_s, 1e-9), 1)
        s.data_dir = str(self.data_dir)
        s.input = self.input_path or ""
        s.exit_reason = self.stop_reason
        s.published_by_table = {t: p.counters.rows for t, p in self.publishers.items()}
        if self.child is not None:
            published = self.child.counters()
            s.published = int(published.get("published", 0))
            s.backpressured_offers = int(published.get("backpressured_offers", 0))
        stats_file = option(self.cfg, "stats_file")
        if stats_file:
            s.save(stats_file)

    def _install_signals(self, source: PulledSource) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.request_stop(signal.Signals(signum).name)
            stop = getattr(source, "stop", None)
            if stop is not None:
                stop()  # a followed capture stops waiting for more

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        early = signals.pending()  # a signal while the run started up
        if early is not None:
            handler(signal.Signals[early], None)


def source_live(source: PulledSource) -> bool:
    return type(source).__name__ == "AeronSource"


def _counting(
    observers: list[Observer[Item]], counted: dict[str, int], table: str
) -> Observer[Item]:
    """One subscription feeding every sink of a table (the chain runs once), counting rows."""

    def on_next(item: Item) -> None:
        if isinstance(item, pa.RecordBatch):
            counted[table] += item.num_rows
        for observer in observers:
            observer.on_next(item)

    def on_error(error: Exception) -> None:
        for observer in observers:
            observer.on_error(error)

    def on_completed() -> None:
        for observer in observers:
            observer.on_completed()

    return Observer(on_next, on_error, on_completed)


def run(cfg: DictConfig, overrides: list[str], input_path: str | None = None) -> int:
    runner = Runner(cfg, overrides, input_path)
    with data_dir_lock.hold(runner.data_dir, "a second run or replay"):
        stats = runner.run()
    print_summary(stats, runner.console)
    return 0
