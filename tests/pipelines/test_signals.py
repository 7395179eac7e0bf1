"""Ctrl-C in a terminal signals the whole foreground process group: the run's children
(the simulator, the recorder) run in groups of their own and leave stopping to the
run, which stops them in order (a recorder starting up took the SIGINT and the run
failed: 'the recorder exited -2')."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from helpers import Watched


def _children(pid: int) -> dict[int, str]:
    """``pid``'s child processes: pid -> command line."""
    found = {}
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            found[int(child)] = cmdline.decode(errors="replace")
    return found


@pytest.mark.parametrize("when", ["recorder starting", "running"])
def test_ctrl_c_to_the_group_of_a_run_that_records_is_a_clean_stop(
    tmp_path: Path, when: str
) -> None:
    capture, stats = tmp_path / "capture", tmp_path / "stats.json"
    run = Watched(
        [sys.executable, "-m", "telepipe", "run", f"data_dir={tmp_path / 'data'}",
         f"capture_dir={capture}", f"stats_file={stats}", "simulator.options.rate=50000"],
        cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    if when == "running":
        run.wait_for("telepipe: running:")
    else:  # as soon as the recorder child exists: it is still starting up
        while not any("capture" in c for c in _children(run.process.pid).values()):
            assert run.process.poll() is None, run.finish()
    children = _children(run.process.pid)
    os.killpg(run.process.pid, signal.SIGINT)
    _, err = run.finish(timeout=120)
    assert run.process.returncode == 0, err
    assert "error" not in err, err
    if stats.exists():  # the run was up: it stopped by the signal, with its stats
        assert json.loads(stats.read_text())["exit_reason"] == "SIGINT"
    for child in children:  # stopped by the run, nothing left behind
        assert (
            not Path(f"/proc/{child}").exists()
            or "zombie" in Path(f"/proc/{child}/status").read_text()
        )
