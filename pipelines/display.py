"""What a run shows on the terminal: a live stats table (titled ``telepipe run`` or
``telepipe replay``), under a progress bar for a replay.

The table names no table of its own: every table the run writes has its rows (out of
its chain, committed, dropped), whatever the pipeline calls it. The two lags are the
ones ``telepipe.metrics`` defines: the watermark behind the newest event time, and
for live runs of a wall-clock publisher the wall time behind the newest event time.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from omegaconf import DictConfig
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from telepipe.config import option
from telepipe.stats import RunStats


class Display:
    """A rich Live view when stdout is a terminal (``ui=auto``) or ``ui=always``."""

    def __init__(
        self, cfg: DictConfig, console: Console, stats: RunStats, started: float, replay: bool
    ) -> None:
        ui = str(option(cfg, "ui") or "auto")
        self.enabled = ui == "always" or (ui == "auto" and sys.stdout.isatty())
        self.stats, self.started, self.replay = stats, started, replay
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.live: Live | None = None
        if not self.enabled:
            return
        if replay:
            self.progress = Progress(
                TextColumn("replay"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[readings]} readings"),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = self.progress.add_task("replay", total=None, readings="0")
        self.live = Live(self._renderable(), console=console, refresh_per_second=4)

    def _renderable(self) -> Group:
        parts: list[RenderableType] = []
        if self.progress is not None:
            parts.append(self.progress)
        parts.append(stats_table(self.stats, self.started, self.replay))
        return Group(*parts)

    def update(self, progress: tuple[int, int | None]) -> None:
        if self.live is None:
            return
        if self.progress is not None and self.task is not None:
            done, total = progress
            self.progress.update(
                self.task, completed=done, total=total, readings=f"{self.stats.received:,}"
            )
        self.live.update(self._renderable())

    def __enter__(self) -> Display:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.__exit__(exc_type, exc, tb)
            if not self.live.console.is_terminal:  # (ui=always into a pipe or file)
                self.live.console.line()


def stats_table(stats: RunStats, started: float, replay: bool) -> Table:
    """The live statistics: the input, then one row per table, then the lags and memory."""
    elapsed = max(time.monotonic() - started, 1e-9)
    title = "telepipe replay" if replay else "telepipe run"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    committed = sum(stats.committed_by_table.values())
    rows: list[tuple[str, str]] = [
        ("received", f"{stats.received:,}"),
        ("in / s", f"{stats.received / elapsed:,.0f}"),
        ("rows committed / s", f"{committed / elapsed:,.0f}"),
        ("queue depth (peak)", f"{stats.queue_depth} ({stats.peak_queue_depth})"),
        ("time blocked", f"{stats.blocked_s:,.2f} s"),
        ("rejected / late", f"{stats.rejected:,} / {stats.late:,}"),
    ]
    names = [*stats.output_rows_by_table, *stats.committed_by_table]
    for name in dict.fromkeys(names):  # pipeline order first, then the rest
        parts = []
        if name in stats.output_rows_by_table:
            parts.append(f"{stats.output_rows_by_table[name]:,} out")
        parts.append(f"{stats.committed_by_table.get(name, 0):,} committed")
        dropped = stats.dropped_by_table.get(name, 0)
        if dropped:
            parts.append(f"{dropped:,} dropped")
        rows.append((f"table {name}", ", ".join(parts)))
    rows.append(("watermark lag", _ms(stats.watermark_lag_ms)))
    if stats.event_time_lag_ms is not None:
        rows.append(("event time lag (wall)", _ms(stats.event_time_lag_ms)))
    rows.append(("rss peak", f"{stats.peak_rss_mb:,.0f} MB"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"
