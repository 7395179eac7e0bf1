"""The media driver killed under a live run (SIGKILL): the run ends in one line saying
so, exit 1, its stats written, its simulator and scratch files gone. Aeron's default
error handler used to print one line of its own and exit() the process on the spot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from helpers import ROOT, Watched


def children_of(pid: int) -> list[int]:
    """Processes started by run ``pid`` (they carry TELEPIPE_PARENT_PID)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"TELEPIPE_PARENT_PID={pid}".encode() in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def test_a_killed_driver_ends_the_run_in_one_line(tmp_path: Path) -> None:
    aeron_dir = Path("/dev/shm" if Path("/dev/shm").is_dir() else tmp_path) / f"tp-{os.getpid()}"
    driver = Watched(
        [sys.executable, "-m", "telepipe", "driver", "--dir", str(aeron_dir)], cwd=ROOT
    )
    run = None
    try:
        driver.wait_for(f"aeron.dir={aeron_dir}", stream="stdout")
        stats = tmp_path / "stats.json"
        run = Watched(
            [sys.executable, "-m", "telepipe", "run", f"aeron.dir={aeron_dir}",
             "aeron.driver_timeout_s=2", f"data_dir={tmp_path / 'data'}",
             f"stats_file={stats}", "ui=never"],
            cwd=ROOT,
        )  # fmt: skip
        run.wait_for("telepipe: running:")
        assert children_of(run.process.pid), "no simulator started"
        driver.process.send_signal(signal.SIGKILL)
        _, err = run.finish(timeout=120)
    finally:
        for watched in (driver, run):
            if watched is not None and watched.process.poll() is None:
                watched.process.kill()
        shutil.rmtree(aeron_dir, ignore_errors=True)
    assert run.process.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("telepipe: error: ") and "Traceback" not in err, err
    assert "stopped answering" in last or "the simulator" in last, last
    assert json.loads(stats.read_text())["received"] > 0
    deadline = time.monotonic() + 60
    while children_of(run.process.pid):  # the simulator gets SIGTERM as its run exits
        assert time.monotonic() < deadline, "the run's simulator outlived it"
        time.sleep(0.05)
    assert not list(Path(tempfile.gettempdir()).glob(f"telepipe-sim-{run.process.pid}-*"))
