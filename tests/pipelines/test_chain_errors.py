"""An output whose chain fails ends the run: one line naming the output and the step,
exit 1 (the sink only closed the table: the run committed nothing to it and exited 0).

The failure is at run time (a chain of mismatched columns is refused at start now): an
actor whose supervisor gives up at the first NaN reading."""

from __future__ import annotations

from pathlib import Path

import pytest

BAD_STEP = (
    "+pipeline.outputs.machines={m: {_target_: telepipe.operators.ActorStage,"
    " actor: telepipe.operators.EquipmentStateMachine, params: {run_level: 35.0,"
    " fault_level: 88.0, maintenance_quality: 2, nan_is_error: true}, max_restarts: 0}}"
)
NANS = "simulator.options.nan_fraction=0.01"


@pytest.mark.parametrize("command", ["run", "replay"])
def test_a_failing_step_ends_the_run_in_one_line(
    telepipe_cli, tmp_path: Path, command: str
) -> None:
    if command == "replay":
        recorded = telepipe_cli(
            "run", "limit.readings=20000", f"data_dir={tmp_path / 'live'}",
            f"capture_dir={tmp_path / 'capture'}", NANS, timeout=120,
        )  # fmt: skip
        assert recorded.returncode == 0, recorded.stderr
        args = ["replay", f"input={tmp_path / 'capture'}"]
    else:
        args = ["run", "limit.readings=20000", NANS]
    done = telepipe_cli(*args, f"data_dir={tmp_path / 'data'}", BAD_STEP, timeout=120)
    assert done.returncode == 1, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if not ln.startswith("telepipe: running:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("telepipe: error: pipeline.outputs.machines.m: ")
    assert "nan_reading" in errors[0] and "the supervisor gives up" in errors[0]
