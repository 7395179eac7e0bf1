"""An output whose chain fails ends the run: one line naming the output and the step,
exit 1 (the sink only closed the table: the run committed nothing to it and exited 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

BAD_STEP = (
    "+pipeline.outputs.windows.again={_target_: telepipe.operators.TumblingWindow, size_ms: 1000}"
)


@pytest.mark.parametrize("command", ["run", "replay"])
def test_a_failing_step_ends_the_run_in_one_line(
    telepipe_cli, tmp_path: Path, command: str
) -> None:
    if command == "replay":
        recorded = telepipe_cli(
            "run", "limit.readings=20000", f"data_dir={tmp_path / 'live'}",
            f"capture_dir={tmp_path / 'capture'}", timeout=120,
        )  # fmt: skip
        assert recorded.returncode == 0, recorded.stderr
        args = ["replay", f"input={tmp_path / 'capture'}"]
    else:
        args = ["run", "limit.readings=20000"]
    done = telepipe_cli(*args, f"data_dir={tmp_path / 'data'}", BAD_STEP, timeout=120)
    assert done.returncode == 1, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if not ln.startswith("telepipe: running:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("telepipe: error: pipeline.outputs.windows.again: ")
    assert "no column 'ts'" in errors[0]
