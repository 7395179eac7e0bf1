"""The runner: polls the source, pushes every item through the flow, then finishes.

It runs what ``pipelines.assembly`` opened. The poll loop is the only place that
reads the source, and it polls only after the previous items went all the way
through the synchronous Rx chain into the sinks' bounded queues, so a slow sink
stops the polling (back-pressure). A SIGINT/SIGTERM, the limit or the end of a
recorded input ends the loop; then the runner finishes: it drains (flushes every
operator) at the end of the input, or on a signal with ``drain=true``, else (a stop
by signal) takes a savepoint, and saves the stats.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import DictConfig
from rich.console import Console

from telepipe import signals
from telepipe.aeron import idle_strategy
from telepipe.config import option
from telepipe.errors import SourceError
from telepipe.markers import MAX_WATERMARK, CheckpointBarrier, Item, Watermark
from telepipe.metrics import event_clock_is_wall
from telepipe.pipelines.assembly import (
    DRAINED,
    SAVEPOINT,
    Assembly,
    Plan,
    configure,
    opened,
    recovered,
)
from telepipe.pipelines.display import Display
from telepipe.pipelines.protocols import PulledSource
from telepipe.sinks import data_dir_lock
from telepipe.stats import RunStats, print_summary

UI_EVERY_S = 0.25
# Stops that end the input: the run flushes every operator (drains). Any other stop
# (SIGINT, SIGTERM) takes a savepoint unless drain=true.
FINISHED = ("end of input", "limit", "simulator finished")


class Runner:
    """Runs one planned pipeline over a live stream or a recorded input."""

    def __init__(self, plan: Plan, console: Console | None = None) -> None:
        self.plan = plan
        self.console = console or Console(stderr=False)
        self.stats = RunStats()
        self.stop_reason = ""
        self._drain_requested = False  # SIGUSR1: telepipe stop --drain
        self._started = time.monotonic()
        self._newest_ns: int | None = None  # the newest event time seen
        self._wall_clock = event_clock_is_wall(plan.cfg, plan.live)

    def request_stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason

    def run(self) -> RunStats:
        recovery, plan = self.plan.recovery, self.plan
        restores = bool(plan.restored) or plan.restored_watermark is not None
        self.stats.resumed_from = (
            recovery.oldest if recovery is not None and (restores or not plan.live) else 0
        )
        self._gap_pending = plan.live and restores
        with opened(self.plan, self.stats) as parts:
            self._install_signals(parts.source)
            try:
                self._loop(parts)
                parts.children.stop()
                self._drain(parts)
                parts.join()
                recorder = parts.children.recorder
                if recorder is not None and recorder.error is not None:
                    raise SourceError(recorder.error)  # after the commits: they are right
            except BaseException as error:
                parts.children.abandon()
                parts.abort()
                self.request_stop(f"error: {error}")
                self._finish(parts)
                raise
        self._finish(parts)
        return self.stats

    # -- the loop -----------------------------------------------------------------------

    def _loop(self, parts: Assembly) -> None:
        source, simulator = parts.source, parts.children.simulator
        idle = idle_strategy(self.plan.aeron)
        last_data = self._started = time.monotonic()
        next_ui = 0.0
        announced = False
        cfg = self.plan.cfg
        replay = not source.live
        with Display(cfg, self.console, self.stats, self._started, replay=replay) as display:
            while not self.stop_reason:
                items = source.poll()
                for item in items:
                    self._push(item, parts)
                parts.side.take(source)
                now = time.monotonic()
                if items:
                    last_data = now
                    idle.reset()
                    if not announced and source.counters.readings:
                        announced = self._announce_running()
                elif not source.exhausted:
                    idle.idle(0)
                limit = self.plan.limit
                if limit is not None and source.counters.readings >= limit:
                    self.request_stop("limit")
                if source.exhausted:
                    self.request_stop("end of input")
                if simulator is not None and simulator.exited():
                    if simulator.returncode != 0:
                        if parts.connection is not None:
                            parts.connection.check()  # its driver gone: say that
                        raise SourceError(simulator.failure())
                    if now - last_data > self.plan.idle_limit_s:
                        self.request_stop("simulator finished")
                if now >= next_ui:
                    if parts.connection is not None:
                        parts.connection.check()  # the driver still answers
                    recorder = parts.children.recorder
                    if recorder is not None and recorder.exited():
                        raise SourceError(recorder.failure())
                    next_ui = now + UI_EVERY_S
                    self._refresh(parts)
                    display.update(source.progress())

    def _push(self, item: Item, parts: Assembly) -> None:
        if self._gap_pending and isinstance(item, pa.RecordBatch) and item.num_rows:
            self._gap(item)
        if isinstance(item, pa.RecordBatch) and item.num_rows and "ts" in item.schema.names:
            newest = pc.max(item.column("ts").cast(pa.int64())).as_py()
            if newest is not None:
                self._newest_ns = max(self._newest_ns or newest, newest)
        if isinstance(item, Watermark) and item.ts_ns < MAX_WATERMARK and self._newest_ns:
            # Event time behind the newest event time seen; wall time behind it only
            # when the publisher's clock is wall time (telepipe.metrics).
            self.stats.watermark_lag_ms = max(0, self._newest_ns - item.ts_ns) / 1e6
            if self._wall_clock:
                self.stats.event_time_lag_ms = (time.time_ns() - self._newest_ns) / 1e6
        elif isinstance(item, CheckpointBarrier):
            # Side outputs commit at the same barrier, after the rows that precede it.
            parts.side.take(parts.source)
            parts.side.barrier(item)
        parts.flow.on_next(item)

    def _announce_running(self) -> bool:
        """One line once readings flow: a supervisor or a test waits for it (the signal
        handlers are installed by then), never for a fixed time."""
        print(
            f"telepipe: running: pipeline {self.plan.cfg.pipeline.name}, readings arriving "
            f"(pid {os.getpid()}); SIGINT/SIGTERM stop it",
            file=sys.stderr,
            flush=True,
        )
        return True

    def _install_signals(self, source: PulledSource) -> None:
        def handler(signum: int, _frame: object) -> None:
            if signum == signals.DRAIN and not self.stop_reason:
                self._drain_requested = True
            self.request_stop(signal.Signals(signum).name)
            source.stop()  # a followed capture stops waiting for more

        for signum in signals.STOPS:
            signal.signal(signum, handler)
        early = signals.pending()  # a signal while the run started up
        if early is not None:
            handler(signal.Signals[early], None)

    def _gap(self, batch: pa.RecordBatch) -> None:
        """A live restart: how long and how much event time passed between the restored
        checkpoint and the first new reading (Aeron keeps nothing: it was not seen)."""
        self._gap_pending = False
        plan, s = self.plan, self.stats
        s.restored_from_savepoint = plan.from_savepoint
        s.restored_from_drain = plan.drained
        if plan.last_commit_ns is not None:
            s.gap_wall_s = round((time.time_ns() - plan.last_commit_ns) / 1e9, 3)
        last = plan.restored_event_ns
        if last is not None and "ts" in batch.schema.names:
            first = pc.min(batch.column("ts").cast(pa.int64())).as_py()
            if first is not None:
                s.gap_event_ms = round((int(first) - last) / 1e6, 3)

    # -- the finish ---------------------------------------------------------------------

    def _drain(self, parts: Assembly) -> None:
        """End the flow so that what is committed is exactly what a restart expects.

        At the end of the input (the limit, the simulator's end), or on a signal with
        ``drain=true``, every operator is flushed by a maximal watermark *before* the
        final barrier, so the rows the flush releases commit with it. Any other stop
        (SIGINT, SIGTERM: Flink's ``stop``) is a savepoint: no flush, no partial
        window, no end-of-stream detector row; the final barrier carries every
        operator's open state, and a restart (replay or live) goes on from it.
        """
        flush = self.stop_reason in FINISHED or self.plan.drain or self._drain_requested
        if parts.source.recovering and not parts.source.exhausted:
            # A replay stopped (by a signal, a drain, a limit) before it re-cut the
            # checkpoints its crashed run committed to some tables only: no final
            # barrier (its id would name one of those at other positions). What is not
            # committed is discarded; a restart recovers again.
            self.stats.stopped_with = "checkpoint"
            parts.abort()
            return
        self.stats.stopped_with = "drain" if flush else "savepoint"
        if flush:
            self._push(Watermark(MAX_WATERMARK), parts)
        barrier = parts.source.checkpoint()
        decoder = barrier.state.get("decoder")
        if isinstance(decoder, dict):
            # Drained: nothing is left open (every window closed as final): a live
            # restart starts its operators empty, a replay cannot go on from it. A
            # savepoint: a restart from it lost nothing that was read (after a crash,
            # what was read after the last checkpoint is gone uncounted).
            mark = DRAINED if flush else SAVEPOINT
            barrier = barrier.with_state("decoder", {**decoder, mark: True})
        self.stats.final_checkpoint = barrier.checkpoint_id
        self._push(barrier, parts)
        if flush:
            parts.flow.on_completed()
        else:
            for table in parts.outputs.rows:
                parts.sink.close(table)
            for publisher in parts.publishers.values():
                for table in publisher.table_names:
                    publisher.close(table)
        parts.side.close()

    def _refresh(self, parts: Assembly) -> None:
        s, c, sink = self.stats, parts.source.counters, parts.sink
        s.received, s.messages = c.readings, c.messages
        s.rejected, s.rejected_by_reason = c.rejected, dict(c.rejected_by_reason)
        s.late = c.late + parts.side.late_at_steps
        s.gaps = parts.source.gaps
        s.input_damage = dict(parts.source.damage)
        q = sink.queue_counters
        s.queue_depth, s.peak_queue_depth = q.depth, q.peak_depth
        s.blocked_s = round(q.blocked_s, 3)
        s.committed_by_table = sink.committed()
        s.dropped_by_table = sink.dropped()
        raw = self.plan.raw_table or ""
        s.committed = s.committed_by_table.get(raw, 0)
        s.dropped = s.dropped_by_table.get(raw, 0)
        derived = {o.table for o in self.plan.outputs if o.operators}
        s.output_rows_by_table = {t: n for t, n in parts.outputs.rows.items() if t in derived}
        s.sample_rss(time.monotonic() - self._started)

    def _finish(self, parts: Assembly) -> None:
        self._refresh(parts)
        s = self.stats
        s.elapsed_s = round(time.monotonic() - self._started, 3)
        s.readings_per_s = round(s.received / max(s.elapsed_s, 1e-9), 1)
        s.data_dir = str(self.plan.data_dir)
        s.input = self.plan.input_path or ""
        s.exit_reason = self.stop_reason
        s.published_by_table = {
            table: publisher.committed().get(table, 0)
            for table, publisher in parts.publishers.items()
        }
        simulator = parts.children.simulator
        if simulator is not None:
            published = simulator.counters()
            s.published = int(published.get("published", 0))
            s.backpressured_offers = int(published.get("backpressured_offers", 0))
            # Published, never polled: Aeron keeps nothing for the next run (at most once).
            s.lost_in_flight = max(0, s.published - s.received)
        s.lost = s.lost_in_flight + s.dropped
        stats_file = option(self.plan.cfg, "stats_file")
        if stats_file:
            s.save(stats_file)


def run(cfg: DictConfig, overrides: list[str], input_path: str | None = None) -> int:
    """Run a pipeline (``input_path``: over a recorded input), holding its data dir."""
    console = Console(stderr=False)
    configured = configure(cfg, overrides, input_path)  # nothing made on disk before it
    with data_dir_lock.hold(configured.data_dir, "a second run or replay"):
        planned = recovered(configured)
        if planned.ended_at is not None:
            print(
                f"telepipe: {planned.origin} is already committed up to checkpoint "
                f"{planned.ended_at} (its end) in data_dir={planned.data_dir}: nothing "
                "new to read; replay into another data_dir to run it again"
            )
            return 0
        stats = Runner(planned, console).run()
    print_summary(stats, console)
    return 0
