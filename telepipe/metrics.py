"""Run statistics at a Prometheus endpoint (``metrics.port=9464``), read at scrape time.

Besides the run's counters and gauges (rows per table, whatever the pipeline's tables
are called), the endpoint serves the process metrics of ``prometheus_client``
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open fds, ...), the
Python platform and GC metrics, ``telepipe_build_info`` and ``telepipe_run_info``.
``docs/grafana-telepipe.json`` is a dashboard of them.

Two lags, both in seconds:

- ``telepipe_watermark_lag_seconds``: event time behind the newest event time seen
  (the newest reading's ``ts`` minus the watermark): how far the event-time clock the
  operators close windows by trails the data. About ``source.out_of_orderness_ms``,
  more while a slow or idle publisher session holds the watermark back; never below 0.
  The same on a live run and on any replay of its capture.
- ``telepipe_event_time_lag_seconds``: wall time behind the newest event time, for a
  live run whose publisher stamps readings with the wall clock only (see
  ``event_clock_is_wall``): how old the newest reading is when it arrives. Not served
  otherwise (a replay, or a simulator running faster than real time, would show the
  distance to another clock).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from telepipe import __version__
from telepipe.config import option
from telepipe.stats import RunStats


def event_clock_is_wall(cfg: DictConfig, live: bool) -> bool:
    """Whether a run's event time is the publisher's wall clock, so that wall time minus
    the newest event time is how old a reading is when it arrives. Never for a recorded
    input (its event time is the recording's). Live with the built-in simulator: only
    when it publishes in real time (``simulator.options.rate`` = sensors x 1e6 /
    ``period_us``, within 1 %) from now (``start_ns: null``); its default rate 0 (as
    fast as taken) runs event time ahead of the clock. Live from another publisher
    (``simulator=none``): assumed to stamp readings with its wall clock."""
    if not live:
        return False
    if not option(cfg, "simulator.enabled"):
        return True
    o = cfg.simulator.options
    if o.get("start_ns") is not None:
        return False
    real_time = float(o.sensors) * 1e6 / float(o.period_us)
    rate = float(o.rate or 0.0)
    return rate > 0 and abs(rate - real_time) <= 0.01 * real_time


class RunStatsCollector:
    """Exposes a live ``RunStats``; nothing is counted twice, it is read when scraped."""

    def __init__(self, stats: RunStats, pipeline: str, mode: str = "run") -> None:
        self.stats = stats
        self.pipeline = pipeline
        self.mode = mode

    def _counter(self, name: str, help_text: str, value: float) -> Metric:
        metric = CounterMetricFamily(name, help_text, labels=["pipeline"])
        metric.add_metric([self.pipeline], value)
        return metric

    def _gauge(self, name: str, help_text: str, value: float) -> Metric:
        metric = GaugeMetricFamily(name, help_text, labels=["pipeline"])
        metric.add_metric([self.pipeline], value)
        return metric

    def _by(self, name: str, help_text: str, label: str, values: dict[str, int]) -> Metric:
        metric = CounterMetricFamily(name, help_text, labels=["pipeline", label])
        for key, value in sorted(values.items()):
            metric.add_metric([self.pipeline, key], value)
        return metric

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        info = GaugeMetricFamily(
            "telepipe_build_info",
            "telepipe's version and the Python it runs on (always 1)",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        run = GaugeMetricFamily(
            "telepipe_run_info", "The pipeline and the mode (run or replay) (always 1)",
            labels=["pipeline", "mode"],
        )  # fmt: skip
        run.add_metric([self.pipeline, self.mode], 1)
        yield run
        yield self._counter(
            "telepipe_readings_received", "Readings decoded from the source", s.received
        )
        yield self._counter(
            "telepipe_messages_received", "Messages taken from the source", s.messages
        )
        yield self._counter("telepipe_readings_late", "Readings set aside as late", s.late)
        yield self._by(
            "telepipe_messages_rejected", "Messages dead-lettered, by reason", "reason",
            s.rejected_by_reason,
        )  # fmt: skip
        yield self._by(
            "telepipe_rows_out", "Rows out of each output's chain of operators, by table",
            "table", s.output_rows_by_table,
        )  # fmt: skip
        yield self._by(
            "telepipe_rows_committed", "Rows committed, by table", "table", s.committed_by_table
        )
        yield self._by(
            "telepipe_rows_dropped", "Rows dropped by a queue policy", "table", s.dropped_by_table
        )
        yield self._gauge("telepipe_queue_depth", "Items waiting in the sink queue", s.queue_depth)
        yield self._gauge(
            "telepipe_queue_depth_peak", "Most items the sink queue held", s.peak_queue_depth
        )
        yield self._counter(
            "telepipe_blocked_seconds", "Time producers waited on a full queue", s.blocked_s
        )
        yield self._gauge("telepipe_peak_rss_bytes", "Peak resident memory", s.peak_rss_mb * 2**20)
        if s.watermark_lag_ms is not None:
            yield self._gauge(
                "telepipe_watermark_lag_seconds",
                "Event time behind the newest event time seen (newest ts minus the watermark)",
                s.watermark_lag_ms / 1e3,
            )
        if s.event_time_lag_ms is not None:
            yield self._gauge(
                "telepipe_event_time_lag_seconds",
                "Wall time behind the newest event time (live runs of a wall-clock publisher)",
                s.event_time_lag_ms / 1e3,
            )


def serve(
    stats: RunStats, pipeline: str, port: int, address: str = "127.0.0.1", mode: str = "run"
) -> Any:
    """Start the endpoint on a daemon thread; returns the server (``shutdown()`` to stop)."""
    registry = CollectorRegistry()
    registry.register(RunStatsCollector(stats, pipeline, mode))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    server, _thread = start_http_server(port, address, registry)
    return server
