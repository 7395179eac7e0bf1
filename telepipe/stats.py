"""Run statistics: kept by the runner, shown live, summarised at exit, saved as JSON."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from telepipe.errors import TelepipeError

RSS_SAMPLES_MAX = 512


@dataclass
class RunStats:
    published: int = 0
    received: int = 0
    messages: int = 0
    committed: int = 0
    dropped: int = 0
    backpressured_offers: int = 0
    peak_queue_depth: int = 0
    peak_rss_mb: float = 0.0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    late: int = 0
    gaps: int = 0
    input_damage: dict[str, int] = field(default_factory=dict)  # replay: unreadable input
    queue_depth: int = 0
    blocked_s: float = 0.0
    # Event time behind the newest event time seen (newest ts minus the watermark).
    watermark_lag_ms: float | None = None
    # Wall time behind the newest event time: live runs of a wall-clock publisher only
    # (telepipe.metrics.event_clock_is_wall), else None.
    event_time_lag_ms: float | None = None
    committed_by_table: dict[str, int] = field(default_factory=dict)
    dropped_by_table: dict[str, int] = field(default_factory=dict)
    published_by_table: dict[str, int] = field(default_factory=dict)
    # Rows out of each output's chain of operators (outputs without operators, the
    # readings as they come, are ``received`` less ``late``), in pipeline order.
    output_rows_by_table: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    readings_per_s: float = 0.0
    data_dir: str = ""
    input: str = ""
    resumed_from: int = 0  # the checkpoint the operators were restored from (0: none)
    exit_reason: str = ""
    # How the run ended: "savepoint" (a stop by signal: open state committed, nothing
    # flushed; a restart goes on from it), "drain" (every operator flushed), or
    # "checkpoint" (a replay stopped while recovering: nothing more committed; a
    # restart resumes from the last checkpoint, losing nothing of a recorded input).
    stopped_with: str = ""
    final_checkpoint: int = 0
    # A live restart: wall time from the restored checkpoint's commit to the first new
    # reading, and event time from the newest reading it had read to that reading.
    gap_wall_s: float | None = None
    gap_event_ms: float | None = None
    # The restored checkpoint was a stop's savepoint; false after a crash, where what
    # the crashed run read after its last checkpoint was lost (and is not counted).
    restored_from_savepoint: bool | None = None
    # The last run was drained (stop --drain): nothing open to restore, nothing lost;
    # the operators start empty and only the watermark goes on.
    restored_from_drain: bool = False
    # Readings not committed and gone for good (live input: at most once): published
    # by the run's simulator but never read (Aeron keeps nothing), plus dropped ones.
    lost_in_flight: int = 0
    lost: int = 0

    # (seconds, MB), evenly spread over the whole run and never more than
    # RSS_SAMPLES_MAX: when full, every other sample goes and the spacing doubles.
    rss_mb_over_time: list[tuple[float, float]] = field(default_factory=list)
    rss_sample_every_s: float = 0.0

    def sample_rss(self, at_s: float) -> None:
        rss = round(psutil.Process().memory_info().rss / 2**20, 1)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        series = self.rss_mb_over_time
        if series and at_s - series[-1][0] < self.rss_sample_every_s:
            return
        series.append((round(at_s, 2), rss))
        if len(series) >= RSS_SAMPLES_MAX:
            del series[1::2]
            self.rss_sample_every_s = max(2 * self.rss_sample_every_s, series[1][0] - series[0][0])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        """Write the stats as JSON; a one-line ``TelepipeError`` naming ``stats_file`` if
        the file cannot be written (its directory checked at start; the disk may not)."""
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(self.to_json() + "\n")
        except OSError as error:
            raise TelepipeError(
                f"stats_file={path}: cannot be written ({error.strerror or error}); "
                "the run itself ended and committed"
            ) from None


def live_table(stats: RunStats, started: float) -> Table:
    elapsed = max(time.monotonic() - started, 1e-9)
    table = Table(title="telepipe run", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    lag = "-" if stats.watermark_lag_ms is None else f"{stats.watermark_lag_ms:,.0f} ms"
    rows = [
        ("received", f"{stats.received:,}"),
        ("in / s", f"{stats.received / elapsed:,.0f}"),
        ("committed", f"{stats.committed:,}"),
        ("out / s", f"{stats.committed / elapsed:,.0f}"),
        ("queue depth (peak)", f"{stats.queue_depth} ({stats.peak_queue_depth})"),
        ("time blocked", f"{stats.blocked_s:,.2f} s"),
        ("dropped", f"{stats.dropped:,}"),
        ("rejected / late", f"{stats.rejected:,} / {stats.late:,}"),
        ("watermark lag", lag),
        *((table, f"{rows:,}") for table, rows in stats.output_rows_by_table.items()),
        ("rss peak", f"{stats.peak_rss_mb:,.0f} MB"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_summary(stats: RunStats, console: Console | None = None) -> None:
    console = console or Console()
    tables = ", ".join(f"{k}={v:,}" for k, v in sorted(stats.committed_by_table.items()))
    outputs = "".join(f"{rows:,} {table}, " for table, rows in stats.output_rows_by_table.items())
    console.print(
        f"telepipe: {stats.received:,} readings in {stats.elapsed_s:.2f} s "
        f"({stats.readings_per_s:,.0f} readings/s), {outputs}"
        f"{stats.late:,} late, {stats.rejected:,} rejected, "
        f"{stats.dropped:,} dropped; back-pressured offers {stats.backpressured_offers:,}; "
        f"peak RSS {stats.peak_rss_mb:,.0f} MB",
        highlight=False,
        soft_wrap=True,
    )
    if stats.input_damage:
        damage = ", ".join(f"{k}={v:,}" for k, v in stats.input_damage.items())
        console.print(
            f"telepipe: input damage: {damage} (`telepipe inspect {stats.input}` says where)",
            highlight=False,
            soft_wrap=True,
        )
    if stats.resumed_from and stats.gap_wall_s is not None:
        event = (
            "" if stats.gap_event_ms is None else f", {stats.gap_event_ms / 1e3:,.3f} s event time"
        )
        what = "savepoint" if stats.restored_from_savepoint else "checkpoint"
        crash = (
            ""
            if stats.restored_from_savepoint
            else " (the last run did not stop with a savepoint: what it read after this "
            "checkpoint was lost)"
        )
        done = f"restored every operator from {what} {stats.resumed_from}{crash}"
        if stats.restored_from_drain:
            done = (
                f"the last run was drained at checkpoint {stats.resumed_from}: the operators "
                "start empty (nothing was left open), the watermark goes on from it"
            )
        console.print(
            f"telepipe: {done}; gap to the first new reading: {stats.gap_wall_s:,.3f} s wall"
            f"{event}",
            highlight=False,
            soft_wrap=True,
        )
    if stats.stopped_with == "savepoint":
        console.print(
            f"telepipe: stopped with a savepoint (checkpoint {stats.final_checkpoint}, "
            f"nothing flushed; {stats.lost:,} readings lost); a restart on this "
            "data_dir goes on from it",
            highlight=False,
            soft_wrap=True,
        )
    if stats.stopped_with == "checkpoint":
        console.print(
            "telepipe: stopped while recovering, before every checkpoint of the crashed "
            "run was taken again: no savepoint, nothing more committed; a restart "
            "recovers again and loses nothing",
            highlight=False,
            soft_wrap=True,
        )
    dead = stats.committed_by_table.get("dead_letters", 0)
    if dead:  # the decoder's: rejected messages, and messages of late readings
        late = max(dead - stats.rejected, 0)
        tables += (
            f" (dead letters: {late:,} messages of late readings, {stats.rejected:,} rejected)"
        )
    console.print(f"telepipe: committed rows: {tables}", highlight=False, soft_wrap=True)
    if not stats.data_dir:
        return
    console.print(f"telepipe: Delta tables in {stats.data_dir}", highlight=False, soft_wrap=True)
    data_dir = stats.data_dir
    table = next(iter(stats.output_rows_by_table), "readings")
    steps = [
        f'open them in a notebook (notebooks/explore_demo.ipynb; pl.read_delta("{data_dir}/{table}"))',
        f"`telepipe dlq list --data-dir {data_dir}` for the dead letters",
    ]
    if stats.input:
        steps.insert(1, f"`telepipe inspect {stats.input}` for what the input holds")
    else:
        steps.insert(1, "`telepipe inspect DIR` for a capture (capture_dir=DIR records one)")
    console.print("telepipe: next: " + "; ".join(steps), highlight=False, soft_wrap=True)
