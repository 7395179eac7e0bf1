"""RunStats: the RSS series of an endless run stays bounded and spans the whole run."""

from __future__ import annotations

import itertools
import json

from telepipe.stats import RSS_SAMPLES_MAX, RunStats


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
