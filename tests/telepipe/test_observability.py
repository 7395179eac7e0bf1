"""Observability for any pipeline (issue 20 item 6): rows per table whatever the tables
are called, a live table titled run or replay, the two lags as documented (the
watermark behind the newest event time; wall time behind event time only for a live
wall-clock publisher), process and build-info metrics, and a Grafana dashboard whose
every metric a real run's endpoint serves."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dead_letter_data import telemetry, write_capture
from helpers import ROOT, Watched
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from telepipe.config import load
from telepipe.metrics import event_clock_is_wall
from telepipe.pipelines.display import stats_table
from telepipe.pipelines.runner import run
from telepipe.stats import RunStats

DASHBOARD = ROOT / "docs" / "grafana-telepipe.json"


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def rendered(replay: bool, stats: RunStats) -> str:
    console = Console(width=100, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(stats_table(stats, time.monotonic() - 1.0, replay))
    return console.export_text()


def test_the_live_table_says_run_or_replay_and_shows_every_table() -> None:
    stats = RunStats(
        received=1000,
        output_rows_by_table={"stats_10s": 40, "alarm_states": 1684},
        committed_by_table={"readings": 990, "stats_10s": 40, "alarm_states": 1684},
        dropped_by_table={"readings": 10},
        watermark_lag_ms=500.0,
    )
    text = rendered(False, stats)
    assert "telepipe run" in text and "telepipe replay" not in text
    assert "table alarm_states" in text and "1,684 out, 1,684 committed" in text
    assert "table readings" in text and "990 committed, 10 dropped" in text
    assert "windows" not in text and "alarms" not in text  # no demo names
    assert "500 ms" in text and "event time lag" not in text
    assert "telepipe replay" in rendered(True, stats)


def test_wall_clock_publishers() -> None:
    def cfg(*overrides: str):  # type: ignore[no-untyped-def]
        return load(list(overrides))

    assert not event_clock_is_wall(cfg(), live=False)  # a replay: the recording's time
    assert not event_clock_is_wall(cfg(), live=True)  # the simulator as fast as taken
    real_time = ["simulator.options.sensors=10", "simulator.options.rate=10000"]
    assert event_clock_is_wall(cfg(*real_time), live=True)
    assert not event_clock_is_wall(cfg(*real_time, "simulator.options.start_ns=0"), live=True)
    assert event_clock_is_wall(cfg("simulator=none"), live=True)  # another publisher


def test_a_replay_s_watermark_lag_is_event_time_behind_the_newest(tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    write_capture(capture, [telemetry(i, n=10) for i in range(30)])
    stats_file = tmp_path / "stats.json"
    overrides = [f"data_dir={tmp_path / 'data'}", f"input={capture}", "ui=never",
                 f"stats_file={stats_file}", "pipeline=press_line"]  # fmt: skip
    assert run(load(overrides), overrides, str(capture)) == 0
    stats = json.loads(stats_file.read_text())
    bound_ms = load(overrides).source.out_of_orderness_ms
    # Not the wall clock's distance to the recording (+387 s on a replay before).
    assert 0 <= stats["watermark_lag_ms"] <= bound_ms, stats["watermark_lag_ms"]
    assert stats["event_time_lag_ms"] is None
    assert {"stats_10s", "alarm_states"} <= set(stats["output_rows_by_table"])
    assert "windows" not in stats and "alarms" not in stats


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    names = {m for e in exprs for m in re.findall(r"\b((?:telepipe|process|python)_\w+)", e)}
    assert len(names) >= 15, names
    return names


def served(body: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(body):
        names.add(family.name)
        if family.type == "counter":  # served with its HELP and TYPE, samples or not
            names.add(f"{family.name}_total")
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_grafana_dashboard_queries_is_served(tmp_path: Path) -> None:
    wanted = queried_metrics()
    port = free_tcp_port()
    # The simulator in real time (10 sensors at 1 kHz): its clock is the wall clock.
    run_ = Watched(
        [sys.executable, "-m", "telepipe.cli", "run", f"data_dir={tmp_path}", "ui=never",
         f"metrics.port={port}", "simulator.options.sensors=10", "simulator.options.rate=10000"],
        cwd=ROOT,
    )  # fmt: skip
    body, missing = "", wanted
    try:
        run_.wait_for("telepipe: running:")
        deadline = time.monotonic() + 60
        while missing and time.monotonic() < deadline:  # until every family was served
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                body = r.read().decode()
            missing = wanted - served(body)
            if missing:
                time.sleep(0.2)  # a poll of the endpoint, bounded by the deadline
    finally:
        run_.process.send_signal(signal.SIGTERM)
        run_.finish()
    assert not missing, f"the dashboard queries metrics not served: {sorted(missing)}"
    assert run_.process.returncode == 0
    values = {s.name: s for f in text_string_to_metric_families(body) for s in f.samples}
    assert values["telepipe_run_info"].labels == {"pipeline": "demo", "mode": "run"}
    assert values["telepipe_build_info"].labels["version"]
    assert values["process_resident_memory_bytes"].value > 0
    bound_s = load([]).source.out_of_orderness_ms / 1e3
    assert 0 <= values["telepipe_watermark_lag_seconds"].value <= bound_s + 1.0
    # Wall time behind the newest reading of a real-time publisher: small, not minutes.
    assert -1.0 < values["telepipe_event_time_lag_seconds"].value < 5.0
