"""``dlq replay`` and ``dlq resume`` (telepipe.pipelines.dlq): dead letters made by a
real pipeline run go back through the pipeline into the same data dir; what decodes
lands, what fails comes back with the same id, every step is audited."""

from __future__ import annotations

import polars as pl
import pytest
from dead_letter_data import (
    STREAM,
    T0,
    add_letters,
    good_letter,
    readings,
    telemetry,
)

from telepipe.dead_letters import DeadLetter
from telepipe.errors import ConfigError
from telepipe.pipelines import dlq
from telepipe.sinks.dead_letter_store import DeadLetterStore

# The fixtures pristine (a pipeline run's data dir), store (a copy per test) and the
# audit key in a tmp dir (autouse).
pytest_plugins = ["dead_letter_fixtures"]


def test_replay_returns_failures_with_the_same_ids_and_delivers_what_decodes(
    store: DeadLetterStore,
) -> None:
    failing = store.list()["id"].to_list()[:3]
    good = good_letter()
    add_letters(store.data_dir, [good])
    before_readings = readings(store.data_dir).height
    with pytest.raises(ConfigError, match="replay changes the store: add --confirm"):
        dlq.replay(store, [*failing, good.id], confirm=False, pipeline="demo", actor="bob")

    entry = dlq.replay(store, [*failing, good.id[:10]], confirm=True, pipeline="demo", actor="bob")

    ids = set(store.list()["id"])
    assert set(failing) <= ids and good.id not in ids
    after = readings(store.data_dir)
    assert after.height == before_readings + 10
    assert sorted(after.filter(pl.col("sensor_id") >= 5000)["sensor_id"]) == list(range(5000, 5010))
    start, done = store.audit.entries()
    assert start["action"] == "replay_start" and done["action"] == "replay"
    assert done["ids"] == [*failing, good.id] and done["actor"] == "bob"
    assert done["detail"]["came_back"] == 3 and done["detail"]["came_back_ids"] == failing
    assert done["detail"]["readings_committed"] == 10
    assert done["detail"]["app_id"] == f"telepipe-dlq-{start['seq']}" == entry["detail"]["app_id"]
    assert store.verify() == (True, None)
    assert not (store.data_dir / "_telepipe_dlq").exists()
    # The replay's end entry cut off: no commit names it, but a start without an end
    # while no replay runs is refused.
    lines = store.audit.path.read_text().splitlines(keepends=True)
    store.audit.path.write_text("".join(lines[:-1]))
    ok, problem = store.verify()
    assert not ok and problem is not None and "\n" not in problem
    assert "the replay started at entry 1 has no end entry and none is running" in problem


def test_replay_refuses_overlapping_letters_and_puts_letters_back_when_the_run_fails(
    store: DeadLetterStore,
) -> None:
    first, overlapping = good_letter(4096), good_letter(4096 + 64)
    add_letters(store.data_dir, [first, overlapping])
    before = store.list()
    with pytest.raises(ConfigError, match="overlap in stream 1001 session 99"):
        dlq.replay(store, [first.id, overlapping.id], confirm=True, pipeline="demo", actor="c")
    assert store.list().equals(before) and not store.audit.path.exists()

    # Fails inside the run (the sink is built there), after the letters were removed.
    with pytest.raises(ConfigError, match="delay_ms"):
        dlq.replay(
            store,
            [first.id],
            confirm=True,
            pipeline="demo",
            actor="c",
            extra_overrides=["sink.delay_ms=-1"],
        )
    assert sorted(store.list()["id"]) == sorted(before["id"])
    done = store.audit.entries()[-1]
    assert done["action"] == "replay" and done["detail"]["put_back"] == 1
    assert "delay_ms" in done["detail"]["error"]


def test_a_replay_stopped_early_puts_back_what_it_did_not_read(store: DeadLetterStore) -> None:
    first = good_letter(4096)
    second = DeadLetter("sink_row_error", "x", STREAM, 99, 8192, T0, telemetry(2, sensor0=6000))
    add_letters(store.data_dir, [first, second])
    entry = dlq.replay(
        store, [first.id, second.id], confirm=True, pipeline="demo", actor="d",
        extra_overrides=["limit.readings=1", "replay.batch_messages=1"],
    )  # fmt: skip
    assert entry["detail"]["exit_reason"] == "limit" and entry["detail"]["put_back"] == 1
    ids = set(store.list()["id"])
    assert second.id in ids and first.id not in ids
    assert readings(store.data_dir).filter(pl.col("sensor_id") >= 5000)["sensor_id"].max() == 5009


def test_a_replay_killed_after_it_took_the_letters_is_finished_by_resume(
    store: DeadLetterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILL between taking the letters out and the end entry left them nowhere but
    in the replay's capture; `dlq resume` runs that capture through and logs the end."""
    good = good_letter()
    add_letters(store.data_dir, [good])
    before = readings(store.data_dir).height

    def killed(*_args: object, **_kwargs: object) -> int:
        raise KeyboardInterrupt  # stands for SIGKILL: nothing after it runs

    monkeypatch.setattr(dlq, "_failed", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        dlq.replay(store, [good.id], confirm=True, pipeline="demo", actor="bob", run=killed)
    monkeypatch.undo()
    assert good.id not in set(store.list()["id"]) and readings(store.data_dir).height == before
    ok, problem = store.verify()
    assert not ok and "dlq resume" in str(problem)
    with pytest.raises(ConfigError, match="did not end: finish it first with"):
        store.purge(store.list()["id"].to_list()[:1], confirm=True, actor="bob")

    entry = dlq.resume(store, actor="carol")
    assert entry["action"] == "replay" and entry["detail"]["resumed"] is True
    assert readings(store.data_dir).height == before + 10
    assert store.verify() == (True, None)
    with pytest.raises(ConfigError, match="no dlq replay to finish"):
        dlq.resume(store, actor="carol")
