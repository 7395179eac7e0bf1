"""``telepipe validate`` refuses every config ``run`` or ``replay`` refuses at start,
with the same one line: it runs their start-up checks (``assembly.configure``, the
sink's per-table checks, replay options, the schema through each chain)."""

from __future__ import annotations

import pytest
from test_cli import ALARM, BAD, RESAMPLE

from telepipe import cli

STARTS = [(args, expected) for args, expected in BAD if args[0] in ("run", "replay")]


def _validate(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli._main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("args", "expected"), STARTS, ids=[" ".join(a) for a, _ in STARTS])
def test_validate_refuses_what_run_refuses_at_start(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch, tmp_path
) -> None:
    monkeypatch.delenv("TELEPIPE_CONF", raising=False)
    extra = [] if any(a.startswith("data_dir=") for a in args) else [f"data_dir={tmp_path}/d"]
    code, out, err = _validate([*args[1:], *extra, "aeron.driver_timeout_s=0.5"], capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("telepipe: error: "), err
    assert expected in lines[0]
    assert "config ok" not in out
    assert not (tmp_path / "d").exists()


def test_the_enumeration_covers_the_start_refusals() -> None:
    joined = " ".join(" ".join(args) for args, _ in STARTS)
    for needed in ("sink=kudu", "replay.speed=", "replay.from=", "input=", RESAMPLE, ALARM):
        assert needed in joined


@pytest.mark.parametrize(
    "pipeline", ["demo", "demo_threaded", "demo_publish", "press_line", "equipment"]
)
def test_the_packaged_pipelines_pass(pipeline: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _validate([f"pipeline={pipeline}"], capsys)
    assert code == 0, err
    assert out.startswith(f"telepipe: config ok: pipeline {pipeline} -> tables readings")


def test_a_chain_that_keeps_the_readings_columns_passes(capsys) -> None:
    dedup = "+pipeline.outputs.alarms.dedup={_target_:telepipe.operators.Dedup}"
    code, _, err = _validate(["~pipeline.outputs.alarms.alarm", dedup, ALARM], capsys)
    assert code == 0, err


def test_kudu_with_a_key_for_every_table_passes(capsys) -> None:
    code, _, err = _validate(["sink=kudu"], capsys)
    assert code == 0, err
