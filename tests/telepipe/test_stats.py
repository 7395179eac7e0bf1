"""RunStats: the RSS series of an endless run stays bounded and spans the whole run."""

from __future__ import annotations

import itertools
import json

import pytest

from telepipe.errors import TelepipeError
from telepipe.stats import RSS_SAMPLES_MAX, RunStats, live_table, print_summary


def test_rss_series_stays_bounded_and_spans_the_run() -> None:
    stats = RunStats()
    # Ten hours of the runner's 0.25 s refreshes.
    for i in range(144_000):
        stats.sample_rss(i * 0.25)
    series = stats.rss_mb_over_time
    assert RSS_SAMPLES_MAX // 2 <= len(series) < RSS_SAMPLES_MAX
    times = [t for t, _ in series]
    assert times[0] == 0.0
    assert times[-1] >= 36_000 - 2 * stats.rss_sample_every_s
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 1.01 * stats.rss_sample_every_s  # evenly spread, no hole
    assert min(gaps) > 0
    assert stats.peak_rss_mb >= max(mb for _, mb in series)  # the peak counts every sample


def test_short_run_keeps_every_sample() -> None:
    stats = RunStats()
    for i in range(100):
        stats.sample_rss(i * 0.25)
    assert [t for t, _ in stats.rss_mb_over_time] == [round(i * 0.25, 2) for i in range(100)]
    assert json.loads(stats.to_json())["rss_sample_every_s"] == 0.0


def test_the_summary_counts_whatever_outputs_the_pipeline_declares() -> None:
    """Per table, in pipeline order: the demo's line is as it always was, and a pipeline
    with other outputs (press_line's) names its own."""
    from rich.console import Console

    def summary(outputs: dict[str, int]) -> str:
        stats = RunStats(received=2_000_000, elapsed_s=1.9, readings_per_s=1_050_000.0)
        stats.output_rows_by_table = outputs
        stats.committed_by_table = {"readings": 1_999_804, **outputs}
        console = Console(record=True, width=400)
        print_summary(stats, console)
        return console.export_text()

    demo = summary({"windows": 2_997, "alarms": 719})
    assert "(1,050,000 readings/s), 2,997 windows, 719 alarms, 0 late, 0 rejected" in demo
    assert "committed rows: alarms=719, readings=1,999,804, windows=2,997" in demo
    other = summary({"spikes": 3, "stuck": 0, "rates": 12})
    assert "readings/s), 3 spikes, 0 stuck, 12 rates, 0 late" in other
    raw_only = summary({})
    assert "readings/s), 0 late" in raw_only
    table = live_table(RunStats(output_rows_by_table={"spikes": 3, "stuck": 0}), 0.0)
    assert table.row_count == 12


def test_a_stats_file_that_cannot_be_written_is_one_line() -> None:
    with pytest.raises(TelepipeError, match=r"^stats_file=/etc/hostname/s.json: cannot be written"):
        RunStats().save("/etc/hostname/s.json")
