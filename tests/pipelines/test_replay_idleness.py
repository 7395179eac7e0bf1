"""Sessions come and go: a publisher that ended stops holding the watermark back once
it has been quiet ``source.idle_timeout_ms`` by the recorded receive times (Flink's
withIdleness), so a follower of a capture a restarted writer appended to closes the
first publisher's windows while it still follows, and replays agree.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from helpers import ROOT, Watched

START = 1_767_225_600_000_000_000


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A capture of a publisher, then of its restart (a new session) 2 s of event time
    later: the first session's 1 s windows close only by the second's event time."""
    base = tmp_path_factory.mktemp("restarted")
    capture = base / "capture"
    for run, offset in ((1, 0), (2, 2_000_000_000)):
        done = cli(
            "run", "limit.readings=20000", f"data_dir={base / f'live{run}'}",
            f"capture_dir={capture}", f"simulator.options.start_ns={START + offset}",
            "simulator.options.rate=100000", "simulator.options.late_fraction=0",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return capture


def windows(data_dir: Path) -> int:
    path = data_dir / "windows"
    if not DeltaTable.is_deltatable(str(path)):
        return 0
    return pl.read_delta(str(path)).height


def test_a_follower_is_not_stalled_by_a_publisher_that_ended(
    restarted: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "follow"
    follower = Watched(
        [sys.executable, "-m", "telepipe.cli", "replay", f"input={restarted}", "replay.follow=true",
         f"data_dir={data_dir}", "source.idle_timeout_ms=1000", "source.checkpoint_every_ms=200"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        follower.wait_for("telepipe: running:")
        deadline = time.monotonic() + 120
        # The first session's windows ([START, START + 1 s)) close while it follows.
        while windows(data_dir) == 0:
            assert follower.process.poll() is None, "".join(follower.lines["stderr"])
            assert time.monotonic() < deadline, "the follower's watermark stalled"
            time.sleep(0.1)
        follower.process.send_signal(signal.SIGTERM)
        _, err = follower.finish()
        assert follower.process.returncode == 0, err
    finally:
        if follower.process.poll() is None:
            follower.process.kill()


def test_replays_decide_idleness_alike(restarted: Path, tmp_path: Path) -> None:
    """Idleness comes from recorded receive times: two replays at other batch sizes
    and speeds give the same tables."""
    a, b = tmp_path / "a", tmp_path / "b"
    for data_dir, extra in ((a, "replay.batch_messages=1"), (b, "replay.batch_messages=64")):
        done = cli("replay", f"input={restarted}", f"data_dir={data_dir}",
                   "source.idle_timeout_ms=1000", extra)  # fmt: skip
        assert done.returncode == 0, done.stderr
    for name in ("readings", "windows", "alarms", "late_readings", "dead_letters"):
        left, right = pl.read_delta(str(a / name)), pl.read_delta(str(b / name))
        keys = [c for c, t in left.schema.items() if not t.is_nested()]
        assert left.sort(keys).equals(right.sort(keys)), name
