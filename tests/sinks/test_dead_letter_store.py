"""Dead-letter store: dead letters made by a real pipeline run over a telepipe capture of
good and malformed SBE messages, then listed, read and purged; the audit log's hash
chain catches edited, deleted, reordered and truncated entries. (Replaying them:
tests/pipelines/test_dlq_replay.py.)"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from dead_letter_data import (
    SESSION,
    STREAM,
    add_letters,
    colliding_pair,
    messages,
    readings,
)

from telepipe.errors import ConfigError, SinkError
from telepipe.sinks.audit_log import AuditError, AuditLog, audit_key
from telepipe.sinks.dead_letter_store import DeadLetterStore

# The fixtures pristine (a pipeline run's data dir), store (a copy per test) and the
# audit key in a tmp dir (autouse).
pytest_plugins = ["dead_letter_fixtures"]


def test_list_and_get_show_every_rejected_message(
    store: DeadLetterStore, pristine: tuple[Path, list[int]]
) -> None:
    payloads, reasons = messages()
    ends = pristine[1]
    listed = store.list()
    assert "payload" not in listed.columns
    assert Counter(listed["reason"]) == Counter(reasons.values())
    assert sorted(listed["position"]) == [ends[i] for i in sorted(reasons)]
    assert readings(store.data_dir).height == 10 * (20 - len(reasons))
    for row in listed.iter_rows(named=True):
        i = ends.index(row["position"])
        assert row["reason"] == reasons[i] and row["payload_bytes"] == len(payloads[i])
        assert (row["stream_id"], row["session_id"]) == (STREAM, SESSION)
        letter = store.get(row["id"][:8])
        assert letter.payload == payloads[i]  # the fragmented one reassembled
        assert letter.id == row["id"] and letter.reason == reasons[i]
    assert store.list(reason="truncated_group").height == 2
    assert store.list(limit=2).height == 2
    assert store.list(reason="nope").height == 0
    assert not store.audit.path.exists()  # reading is not a change


def test_ids_resolve_by_unique_prefix_else_one_line_errors(store: DeadLetterStore) -> None:
    pair = colliding_pair()
    add_letters(store.data_dir, pair)
    assert store.resolve([pair[0].id[:12].upper()]) == [pair[0].id]
    for given, expected in [
        ("ffff" * 5, "no dead letter with id"),
        (pair[0].id[:4], "is ambiguous: 2 dead letters match"),
        ("ab", "too short"),
        ("x' OR 1=1", "is not a dead-letter id"),
    ]:
        with pytest.raises(ConfigError, match=expected) as error:
            store.get(given)
        assert "\n" not in str(error.value)


def test_purge_needs_confirm_then_removes_exactly_those_rows(store: DeadLetterStore) -> None:
    before = store.list()
    victims = before["id"].to_list()[:2]
    with pytest.raises(ConfigError, match="purge changes the store: add --confirm"):
        store.purge(victims, confirm=False, actor="alice")
    assert store.list().equals(before) and not store.audit.path.exists()

    entry = store.purge([v[:6] for v in victims], confirm=True, actor="alice")
    assert sorted(store.list()["id"]) == sorted(set(before["id"]) - set(victims))
    assert entry["seq"] == 1 and entry["action"] == "purge" and entry["actor"] == "alice"
    assert entry["ids"] == victims and entry["detail"]["rows"] == 2
    assert store.verify() == (True, None)
    assert store.audit.entries() == [entry]


def chain(path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(path, key=audit_key())
    for k in range(n):
        log.append("purge", [f"{k:020x}"], {"rows": k}, actor="alice")
    return log


def tamper(path: Path, how: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    if how == "edit":
        entry = json.loads(lines[1])
        entry["actor"] = "mallory"
        lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    elif how == "delete":
        del lines[1]
    elif how == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif how == "truncate":
        lines[-1] = lines[-1][:40]
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("edit", "entry 2: hash does not match its content"),
        ("delete", "entry 2: found seq 3"),
        ("swap", "entry 2: found seq 3"),
        ("truncate", "entry 4: truncated"),
    ],
)
def test_verify_finds_the_first_broken_entry(tmp_path: Path, how: str, expected: str) -> None:
    log = chain(tmp_path / "_audit.jsonl")
    assert log.verify() == (True, None)
    assert log.head()[0] == 4
    tamper(log.path, how)
    ok, problem = log.verify()
    assert not ok and problem is not None and expected in problem and "\n" not in problem


def test_a_broken_chain_refuses_changes(store: DeadLetterStore) -> None:
    chain(store.audit.path, 3)
    tamper(store.audit.path, "edit")
    before = store.list()
    with pytest.raises(AuditError, match="entry 2: hash does not match"):
        store.purge(before["id"].to_list()[:1], confirm=True, actor="alice")
    assert store.list().equals(before)


@pytest.mark.parametrize("how", ["last line", "whole file"])
def test_verify_sees_the_last_entries_cut_off(store: DeadLetterStore, how: str) -> None:
    """A hash chain alone cannot show that its tail is gone; the table's commits name the
    audit entry of each change, so a log shorter than that is refused."""
    store.purge(store.list()["id"].to_list()[:1], confirm=True, actor="alice")
    assert store.verify() == (True, None)
    lines = store.audit.path.read_text().splitlines(keepends=True)
    if how == "last line":
        store.audit.path.write_text("".join(lines[:-1]))
    else:
        store.audit.path.unlink()
    ok, problem = store.verify()
    assert not ok and problem is not None and "\n" not in problem
    assert f"but the table's history has a change audited as entry {len(lines)}" in problem


def test_a_data_dir_that_is_not_there_or_lost_its_delta_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        DeadLetterStore(tmp_path / "nowhere")
    (tmp_path / "dead_letters").mkdir()
    (tmp_path / "dead_letters" / "part-0.parquet").write_bytes(b"PAR1")
    with pytest.raises(SinkError, match="no Delta log"):
        DeadLetterStore(tmp_path)
