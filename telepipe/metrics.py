"""Run statistics at a Prometheus endpoint (``metrics.port=9464``), read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from telepipe.stats import RunStats


class RunStatsCollector:
    """Exposes a live ``RunStats``; nothing is counted twice, it is read when scraped."""

    def __init__(self, stats: RunStats, pipeline: str) -> None:
        self.stats = stats
        self.pipeline = pipeline

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
            "telepipe_rows_committed", "Rows committed, by table", "table", s.committed_by_table
        )
        yield self._by(
            "telepipe_rows_dropped", "Rows dropped by a queue policy", "table", s.dropped_by_table
        )
        yield self._gauge("telepipe_queue_depth", "Items waiting in the sink queue", s.queue_depth)
        yield self._counter(
            "telepipe_blocked_seconds", "Time producers waited on a full queue", s.blocked_s
        )
        yield self._gauge("telepipe_peak_rss_bytes", "Peak resident memory", s.peak_rss_mb * 2**20)
        if s.watermark_lag_ms is not None:
            yield self._gauge(
                "telepipe_watermark_lag_seconds",
                "Wall time minus the watermark",
                s.watermark_lag_ms / 1e3,
            )


def serve(stats: RunStats, pipeline: str, port: int, address: str = "127.0.0.1") -> Any:
    """Start the endpoint on a daemon thread; returns the server (``shutdown()`` to stop)."""
    registry = CollectorRegistry()
    registry.register(RunStatsCollector(stats, pipeline))
    server, _thread = start_http_server(port, address, registry)
    return server
