"""``telepipe stop``: a live run stopped from another shell, with a savepoint or
drained (Flink's ``stop`` and ``stop --drain``), and its one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, Watched


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("drain", [False, True])
def test_stop_ends_a_live_run_with_a_savepoint_or_drained(tmp_path: Path, drain: bool) -> None:
    data_dir, stats_file = tmp_path / "data", tmp_path / "stats.json"
    run = Watched(
        [sys.executable, "-m", "telepipe", "run", f"data_dir={data_dir}", f"stats_file={stats_file}",
         "ui=never", "simulator.options.rate=100000"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        run.wait_for("telepipe: running:")
        stopped = cli("stop", f"--data-dir={data_dir}", *(["--drain"] if drain else []))
        _, err = run.finish(timeout=180)
    finally:
        if run.process.poll() is None:
            run.process.kill()
    assert stopped.returncode == 0, stopped.stderr
    assert run.process.returncode == 0, err
    stats = json.loads(stats_file.read_text())
    how = "drained" if drain else "with a savepoint"
    assert stopped.stdout.startswith(f"telepipe: pid {run.process.pid} ended, asked to stop {how}")
    assert f"its tables hold checkpoint {stats['final_checkpoint']}" in stopped.stdout
    assert stats["stopped_with"] == ("drain" if drain else "savepoint")
    assert stats["exit_reason"] == ("SIGUSR1" if drain else "SIGTERM")


def test_stop_refuses_in_one_line(tmp_path: Path) -> None:
    missing = cli("stop", f"--data-dir={tmp_path / 'nowhere'}")
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("nowhere: no such directory")
    idle = cli("stop", f"--data-dir={tmp_path}")
    assert idle.returncode == 2
    assert (
        idle.stderr.strip()
        == f"telepipe: error: data_dir={tmp_path}: no telepipe process is writing it"
    )
    (tmp_path / ".telepipe.lock").write_text("12345\n")  # a lock file nobody holds
    assert cli("stop", f"--data-dir={tmp_path}").stderr == idle.stderr
    bad = cli("stop", f"--data-dir={tmp_path}", "--timeout=-1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--timeout" in bad.stderr


def test_stop_reads_only_a_regular_lock_file(tmp_path: Path) -> None:
    """A directory, a FIFO or a symlink where the lock file goes is one line, exit 2:
    never a traceback, a hang on the FIFO, or a write through the link."""
    import os

    (tmp_path / "dir" / ".telepipe.lock").mkdir(parents=True)
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / ".telepipe.lock")
    (tmp_path / "link").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("important")
    (tmp_path / "link" / ".telepipe.lock").symlink_to(victim)
    for name in ("dir", "fifo", "link"):
        done = cli("stop", f"--data-dir={tmp_path / name}", "--timeout=5")
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr.count("\n") == 1 and "cannot read its lock file" in done.stderr, name
        run = cli("run", f"data_dir={tmp_path / name}", "limit.readings=1000", "ui=never")
        assert run.returncode == 2, (name, run.stderr)
        assert run.stderr.count("\n") == 1 and "cannot open its lock" in run.stderr, name
    assert victim.read_text() == "important"
