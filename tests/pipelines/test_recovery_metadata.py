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


def test_a_commit_naming_another_checkpoints_or_tables_state_is_refused(tmp_path: Path) -> None:
    commit(tmp_path, "t", 1, {**good(tmp_path, "t", 2), "telepipe.checkpoint_id": "1"})
    refused(tmp_path, "table t", "checkpoint 2", "for checkpoint 1")
    for table, app in (("u", APP), ("t", "other-app")):
        data_dir = tmp_path / f"{table}-{app}"
        commit(data_dir, "t", 1, {**good(data_dir, table, 1, app)})
        refused(data_dir, "table t", "another table or app id")
    # the manifest's own id differs from its directory's and the commit's
    data_dir = tmp_path / "renamed"
    meta = good(data_dir, "t", 1)
    moved = good(data_dir, "t", 2)["telepipe.state"]
    manifest = data_dir / moved
    (data_dir / meta["telepipe.state"]).unlink()
    (data_dir / meta["telepipe.state"]).parent.rmdir()
    manifest.parent.rename((data_dir / meta["telepipe.state"]).parent)
    commit(data_dir, "t", 1, meta)
    refused(data_dir, "table t", "checkpoint 2's", "say 1")
