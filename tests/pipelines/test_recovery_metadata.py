"""Forged or damaged checkpoint commits are refused by ``read_recovery`` in one line
naming the table (a ConfigError: exit 2), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, Transaction, write_deltalake

from pipelines.recovery import read_recovery
from telepipe.errors import ConfigError
from telepipe.state import write_checkpoint

APP = "telepipe"


def commit(data_dir: Path, table: str, k: int, meta: dict[str, str]) -> None:
    write_deltalake(
        str(data_dir / table),
        pa.table({"x": pa.array([k], pa.int64())}),
        mode="append",
        commit_properties=CommitProperties(
            app_transactions=[Transaction(app_id=APP, version=k)],
            custom_metadata={"telepipe.app_id": APP, **meta},
        ),
    )


def good(data_dir: Path, table: str, k: int, app: str = APP) -> dict[str, str]:
    state = write_checkpoint(data_dir, app, table, k, {"decoder": {"positions": {}}})
    return {
        "telepipe.checkpoint_id": str(k),
        "telepipe.positions": json.dumps({"1001:7": 10 * k}),
        "telepipe.state": state,
    }


def refused(data_dir: Path, *needles: str) -> str:
    with pytest.raises(ConfigError) as caught:
        read_recovery(data_dir, ["t"], APP)
    text = str(caught.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def test_good_commits_are_read(tmp_path: Path) -> None:
    commit(tmp_path, "t", 1, good(tmp_path, "t", 1))
    commit(tmp_path, "t", 2, good(tmp_path, "t", 2))
    recovery = read_recovery(tmp_path, ["t"], APP)
    assert recovery is not None and recovery.oldest == 2
    assert recovery.resume is not None and recovery.resume.positions == {"1001:7": 20}


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda m: m.update({"telepipe.checkpoint_id": "abc"}), ["table t", "'abc'"]),
        (lambda m: m.update({"telepipe.positions": "{not json"}), ["table t", "not JSON"]),
        (lambda m: m.update({"telepipe.positions": "[1, 2]"}), ["table t", "stream -> offset"]),
        (lambda m: m.pop("telepipe.positions"), ["table t", "no telepipe.positions"]),
    ],
)
def test_a_forged_commit_is_one_line_naming_the_table(tmp_path: Path, change, needles) -> None:
    meta = good(tmp_path, "t", 1)
    change(meta)
    commit(tmp_path, "t", 1, meta)
    refused(tmp_path, *needles)
