"""What a run shows on the terminal: a live stats table, or a progress bar for a replay."""

from __future__ import annotations

import sys
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

from telepipe.config import option
from telepipe.stats import RunStats, live_table


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
        parts.append(live_table(self.stats, self.started))
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
