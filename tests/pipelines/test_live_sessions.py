"""Sessions come and go, live: a publisher restarted mid-run (a gateway restart).

A live ``telepipe run`` (UDP on loopback, a standalone driver, ``capture_dir=``) reads
publisher 1, which sends and exits (its publication closes: an end-of-stream); then
publisher 2, a new session 3 s of event time later. The idle timeout is 10 minutes,
so only the end-of-stream can release the first publisher's last windows: they must
be committed right after publisher 2's data, while the run is still live. Then a
third publisher replays older event time (a session coming back behind the
watermark): its rows are late. A SIGTERM (savepoint) ends the run, and a replay of
its capture gives the same tables (the replay drains at the end of its input: it
also holds the windows the live run left open, which are compared no further).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
from deltalake import DeltaTable
from helpers import ROOT, Watched, free_udp_port

START = 1_767_225_600_000_000_000
SECOND = 1_000_000_000
N1, N2, N3 = 150_000, 200_000, 5_000  # 100 sensors at 1 kHz: 1.5 s, 2 s, 0.05 s of event time
SIMULATOR = [
    "simulator.options.sensors=100", "simulator.options.rate=100000",
    "simulator.options.late_fraction=0", "simulator.options.connect_timeout_s=120",
    "simulator.linger_s=0", "ui=never",
]  # fmt: skip
# Only an end-of-stream can release a session here; commits every 200 ms.
DECODING = ["source.idle_timeout_ms=600000", "source.checkpoint_every_ms=200"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "telepipe.cli", *args]


def table(data_dir: Path, name: str) -> pl.DataFrame:
    path = data_dir / name
    if not DeltaTable.is_deltatable(str(path)):
        return pl.DataFrame()
    return pl.read_delta(str(path))


def wait_until(done: Callable[[], bool], run: Watched, what: str, timeout: float = 120) -> float:
    """Poll ``done`` (readiness, never a fixed wait) while the run lives; the time it held."""
    deadline = time.monotonic() + timeout
    while not done():
        assert run.process.poll() is None, "".join(run.lines["stderr"])[-2000:]
        assert time.monotonic() < deadline, (
            f"no {what} within {timeout} s: " + "".join(run.lines["stderr"])[-2000:]
        )
        time.sleep(0.05)
    return time.monotonic()


def publish(common: list[str], readings: int, start_ns: int) -> Watched:
    return Watched(
        cli("simulate", *common, *SIMULATOR, f"limit.readings={readings}",
            f"simulator.options.start_ns={start_ns}"),
        cwd=ROOT,
    )  # fmt: skip


def finished(publisher: Watched) -> None:
    _, err = publisher.finish()
    assert publisher.process.returncode == 0, err


def test_a_publisher_restart_mid_run_live_and_on_replay(tmp_path: Path) -> None:
    live, capture, replayed = tmp_path / "live", tmp_path / "capture", tmp_path / "replayed"
    driver = Watched(cli("driver"), cwd=ROOT)
    run: Watched | None = None
    try:
        aeron_dir = driver.wait_for("aeron.dir=", stream="stdout").strip().split("=", 1)[1]
        channel = f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"
        common = [f"aeron.dir={aeron_dir}", "source=aeron_udp", f"source.channel={channel}"]
        run = Watched(
            cli("run", *common, *DECODING, "simulator=none", f"data_dir={live}",
                f"capture_dir={capture}", f"stats_file={tmp_path / 'live.json'}", "ui=never"),
            cwd=ROOT,
        )  # fmt: skip
        # The recorder (started after the run subscribed) opens its capture once it is
        # subscribed too: from then on neither misses a frame.
        wait_until(lambda: any(capture.glob("*.tpcap")), run, "capture segment")
        finished(publish(common, N1, START))  # sends and exits: its session ends
        second = publish(common, N2, START + 3 * SECOND)

        def readings_from(ts_ns: int) -> bool:
            rows = table(live, "readings")
            return rows.height > 0 and rows.filter(pl.col("ts_ns") >= ts_ns).height > 0

        def window_at(start_ns: int) -> bool:
            windows = table(live, "windows")
            return windows.height > 0 and (windows["window_start_ns"] == start_ns).any()

        arrived = wait_until(lambda: readings_from(START + 3 * SECOND), run, "publisher 2 rows")
        # Publisher 1's last window [1 s, 2 s) closes on publisher 2's event time alone.
        closed = wait_until(lambda: window_at(START + SECOND), run, "publisher 1's last window")
        print(f"publisher 1's last window committed {closed - arrived:.2f} s after publisher 2's")
        alarms = table(live, "alarms")
        assert alarms.filter(pl.col("ts_ns") >= START + SECOND).height > 0  # its last alarms
        # Publisher 2's first window [3 s, 4 s) closes on its own event time.
        wait_until(lambda: window_at(START + 3 * SECOND), run, "publisher 2's first window")
        finished(second)
        # A publisher that comes back with older event time: behind the watermark, late.
        finished(publish(common, N3, START + SECOND // 2))
        wait_until(lambda: table(live, "readings").height == N1 + N2 + N3, run, "every reading")
        run.process.send_signal(signal.SIGTERM)  # a savepoint: no flush
        _, err = run.finish()
        assert run.process.returncode == 0, err
    finally:
        if run is not None and run.process.poll() is None:
            run.process.kill()
        driver.process.send_signal(signal.SIGTERM)
        driver.finish()

    done = subprocess.run(
        cli("replay", f"input={capture}", f"data_dir={replayed}", *DECODING,
            f"stats_file={tmp_path / 'replay.json'}", "ui=never"),
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

    assert same("readings").height == N1 + N2 + N3
    # What the live run closed (up to its watermark); the replay drained the rest.
    cutoff = int(table(live, "windows")["window_end_ns"].max())  # type: ignore[arg-type]
    assert cutoff >= START + 4 * SECOND
    same("windows", pl.col("window_end_ns") <= cutoff)
    same("alarms", pl.col("ts_ns") < cutoff)
    late = same("late_readings")
    assert late.select("sensor_id", "ts_ns").n_unique() == N3  # publisher 3's rows, all
    assert int(late["ts_ns"].min()) >= START + SECOND // 2  # type: ignore[arg-type]
    same("dead_letters")
    live_stats = json.loads((tmp_path / "live.json").read_text())
    replay_stats = json.loads((tmp_path / "replay.json").read_text())
    assert live_stats["late"] == replay_stats["late"] >= N3
