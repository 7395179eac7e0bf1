"""A tcpdump of a live run over a publisher restart replays as the live run did.

The live run of ``test_live_sessions`` (a standalone driver, UDP on loopback, the idle
timeout 10 minutes) while tcpdump captures the stream: publisher 1 sends and exits (its
publication closes: Aeron sends end-of-stream heartbeats), publisher 2 starts 2 s of
event time later, and publisher 3 comes back with event time between them. Live, only
the end of stream releases publisher 1, so publisher 3 is behind the watermark: late.
A replay of the pcap passes the heartbeats on as the session's end mark, in its place;
without them publisher 1 would hold the watermark back and publisher 3 would not be
late: the tables would differ.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import polars as pl
from helpers import ROOT, Watched, free_udp_port
from pcap_builder import tcpdump_udp
from test_live_sessions import DECODING, SECOND, START, cli, finished, publish, table, wait_until

N1, N2, N3 = 50_000, 100_000, 5_000  # 100 sensors at 1 kHz: 0.5 s, 1 s, 0.05 s


def test_a_pcap_of_a_publisher_restart_replays_as_the_live_run(tmp_path: Path) -> None:
    live, replayed, pcap = tmp_path / "live", tmp_path / "replayed", tmp_path / "aeron.pcap"
    port = free_udp_port()
    with tcpdump_udp(pcap, port):
        _live(live, port)

    done = subprocess.run(
        cli("replay", f"input={pcap}", f"data_dir={replayed}", *DECODING, "replay.stream=1001",
            "ui=never"),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    def same(name: str, keep: pl.Expr | None = None) -> pl.DataFrame:
        left, right = table(live, name), table(replayed, name)
        if keep is not None:
            left, right = left.filter(keep), right.filter(keep)
        keys = [c for c, t in left.schema.items() if not t.is_nested()]
        assert left.sort(keys).equals(right.sort(keys)), name
        return left

    late = same("late_readings")
    assert late.select("sensor_id", "ts_ns").n_unique() == N3  # publisher 3's rows, all
    assert same("readings").height == N1 + N2 + N3
    cutoff = int(table(live, "windows")["window_end_ns"].max())  # type: ignore[arg-type]
    assert cutoff >= START + SECOND  # (publisher 1's window: closed by its end of stream)
    same("windows", pl.col("window_end_ns") <= cutoff)
    same("alarms", pl.col("ts_ns") < cutoff)
    same("dead_letters")


def _live(live: Path, port: int) -> None:
    """The live run of the test, publishers restarted under it."""
    driver = Watched(cli("driver"), cwd=ROOT)
    run: Watched | None = None
    try:
        aeron_dir = driver.wait_for("aeron.dir=", stream="stdout").strip().split("=", 1)[1]
        channel = f"aeron:udp?endpoint=127.0.0.1:{port}"
        common = [f"aeron.dir={aeron_dir}", "source=aeron_udp", f"source.channel={channel}"]
        run = Watched(
            cli("run", *common, *DECODING, "simulator=none", f"data_dir={live}", "ui=never"),
            cwd=ROOT,
        )
        # (a publisher waits until the run subscribed: simulator.options.connect_timeout_s)
        finished(publish(common, N1, START))  # sends and exits: its session ends
        finished(publish(common, N2, START + 2 * SECOND))

        def window_at(start_ns: int) -> bool:
            windows = table(live, "windows")
            return windows.height > 0 and (windows["window_start_ns"] == start_ns).any()

        # Publisher 1's only window [0, 1 s) closes on publisher 2's event time alone.
        wait_until(lambda: window_at(START), run, "publisher 1's window")
        finished(publish(common, N3, START + 3 * SECOND // 2))  # behind the watermark
        wait_until(lambda: table(live, "readings").height == N1 + N2 + N3, run, "every reading")
        run.process.send_signal(signal.SIGTERM)  # a savepoint: no flush
        _, err = run.finish()
        assert run.process.returncode == 0, err
    finally:
        if run is not None and run.process.poll() is None:
            run.process.kill()
        driver.process.send_signal(signal.SIGTERM)
        driver.finish()
