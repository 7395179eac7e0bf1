"""Dead-letter store: dead letters made by a real pipeline run over a telepipe capture of
good and malformed SBE messages, then listed, read, purged and replayed; the audit log's
hash chain catches edited, deleted, reordered and truncated entries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from deltalake import write_deltalake
from helpers import ROOT, SCHEMA_XML

from telepipe.dead_letters import DeadLetter, dead_letters_batch
from telepipe.errors import ConfigError, SinkError
from telepipe.sbe import SbeCodec
from telepipe.sinks.dead_letter_store import AuditError, AuditLog, DeadLetterStore
from telepipe.sources.capture import CaptureWriter
from telepipe.sources.frames import align

T0 = 1_767_225_600_000_000_000
STREAM, SESSION = 1001, 7
MTU_PAYLOAD = 1376
CODEC = SbeCodec.from_xml(SCHEMA_XML)


def telemetry(seq: int, n: int = 10, sensor0: int = 0) -> bytes:
    return CODEC.encode(
        {
            "sensor_id": np.arange(sensor0, sensor0 + n, dtype=np.int32),
            "ts": np.full(n, T0 + seq * 1_000_000, np.int64),
            "value": np.linspace(1.0, 50.0, n),
            "quality": np.zeros(n, np.uint8),
        },
        source_id=1,
        batch_seq=seq,
    )


def messages() -> tuple[list[bytes], dict[int, str]]:
    """20 messages; the ones at the keys are malformed with that reason (one fragmented)."""
    payloads = [telemetry(i) for i in range(20)]
    payloads[3] = payloads[3][:-5]
    payloads[7] = payloads[7] + b"junk"
    wrong = bytearray(payloads[11])
    wrong[4:6] = (999).to_bytes(2, "little")
    payloads[11] = bytes(wrong)
    payloads[13] = payloads[13][:3]
    payloads[15] = telemetry(15, n=300)[:-7]  # 6317 bytes: five fragments on the wire
    reasons = {
        3: "truncated_group",
        7: "trailing_bytes",
        11: "wrong_schema_id",
        13: "truncated_header",
        15: "truncated_group",
    }
    return payloads, reasons


def write_capture(directory: Path, payloads: list[bytes]) -> list[int]:
    """Frames as Aeron delivers them (<= 1376-byte fragments); the end position of each."""
    ends, position = [], 0
    with CaptureWriter(directory, channel="aeron:ipc", stream_id=STREAM) as writer:
        for i, payload in enumerate(payloads):
            chunks = [payload[k : k + MTU_PAYLOAD] for k in range(0, len(payload), MTU_PAYLOAD)]
            for k, chunk in enumerate(chunks):
                flags = (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
                start, position = position, position + align(len(chunk) + 32)
                writer.append(
                    chunk, received_ns=T0 + i * 1000, position=position, flags=flags,
                    term_offset=start, session_id=SESSION, stream_id=STREAM,
                )  # fmt: skip
            ends.append(position)
    return ends


def add_letters(data_dir: Path, letters: list[DeadLetter]) -> None:
    """Dead letters written as the pipeline's sink writes them (kudu/sink row errors)."""
    write_deltalake(str(data_dir / "dead_letters"), dead_letters_batch(letters), mode="append")


def good_letter(position: int = 4096) -> DeadLetter:
    """A valid message that was dead-lettered by a sink (it decodes on replay)."""
    payload = telemetry(1, n=10, sensor0=5000)
    return DeadLetter("sink_row_error", "kudu: timed out", STREAM, 99, position, T0, payload)


def colliding_pair() -> list[DeadLetter]:
    """Two letters whose ids share their first 4 hex digits (for ambiguous prefixes)."""
    seen: dict[str, DeadLetter] = {}
    for k in range(1, 100_000):
        letter = DeadLetter("sink_row_error", "x", STREAM, 98, k * 1024, T0, b"\0" * 8)
        if letter.id[:4] in seen:
            return [seen[letter.id[:4]], letter]
        seen[letter.id[:4]] = letter
    raise AssertionError("no collision")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    base = tmp_path_factory.mktemp("dlq")
    payloads, _ = messages()
    ends = write_capture(base / "capture", payloads)
    done = subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "replay", "pipeline=demo",
         f"input={base / 'capture'}", f"data_dir={base / 'data'}", "ui=never"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return base / "data", ends


@pytest.fixture
def store(pristine: tuple[Path, list[int]], tmp_path: Path) -> DeadLetterStore:
    shutil.copytree(pristine[0], tmp_path / "data")
    return DeadLetterStore(tmp_path / "data")


def readings(store: DeadLetterStore) -> pl.DataFrame:
    return pl.read_delta(str(store.data_dir / "readings"))


def test_list_and_get_show_every_rejected_message(
    store: DeadLetterStore, pristine: tuple[Path, list[int]]
) -> None:
    payloads, reasons = messages()
    ends = pristine[1]
    listed = store.list()
    assert "payload" not in listed.columns
    assert Counter(listed["reason"]) == Counter(reasons.values())
    assert sorted(listed["position"]) == [ends[i] for i in sorted(reasons)]
    assert readings(store).height == 10 * (20 - len(reasons))
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


def test_replay_returns_failures_with_the_same_ids_and_delivers_what_decodes(
    store: DeadLetterStore,
) -> None:
    failing = store.list()["id"].to_list()[:3]
    good = good_letter()
    add_letters(store.data_dir, [good])
    before_readings = readings(store).height
    with pytest.raises(ConfigError, match="replay changes the store: add --confirm"):
        store.replay([*failing, good.id], confirm=False, pipeline="demo", actor="bob")

    entry = store.replay([*failing, good.id[:10]], confirm=True, pipeline="demo", actor="bob")

    ids = set(store.list()["id"])
    assert set(failing) <= ids and good.id not in ids
    after = readings(store)
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
        store.replay([first.id, overlapping.id], confirm=True, pipeline="demo", actor="c")
    assert store.list().equals(before) and not store.audit.path.exists()

    # Fails inside the run (the sink is built there), after the letters were removed.
    with pytest.raises(ConfigError, match="delay_ms"):
        store.replay(
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


def chain(path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(path)
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


def test_a_replay_stopped_early_puts_back_what_it_did_not_read(store: DeadLetterStore) -> None:
    first = good_letter(4096)
    second = DeadLetter("sink_row_error", "x", STREAM, 99, 8192, T0, telemetry(2, sensor0=6000))
    add_letters(store.data_dir, [first, second])
    entry = store.replay(
        [first.id, second.id], confirm=True, pipeline="demo", actor="d",
        extra_overrides=["limit.readings=1", "replay.batch_messages=1"],
    )  # fmt: skip
    assert entry["detail"]["exit_reason"] == "limit" and entry["detail"]["put_back"] == 1
    ids = set(store.list()["id"])
    assert second.id in ids and first.id not in ids
    assert readings(store).filter(pl.col("sensor_id") >= 5000)["sensor_id"].max() == 5009


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


def test_a_replay_killed_after_it_took_the_letters_is_finished_by_resume(
    store: DeadLetterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILL between taking the letters out and the end entry left them nowhere but
    in the replay's capture; `dlq resume` runs that capture through and logs the end."""
    import telepipe.pipelines.runner as runner

    good = good_letter()
    add_letters(store.data_dir, [good])
    before = readings(store).height

    def killed(*_args: object, **_kwargs: object) -> int:
        raise KeyboardInterrupt  # stands for SIGKILL: nothing after it runs

    monkeypatch.setattr(runner, "run", killed)
    monkeypatch.setattr(DeadLetterStore, "_failed", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        store.replay([good.id], confirm=True, pipeline="demo", actor="bob")
    monkeypatch.undo()
    assert good.id not in set(store.list()["id"]) and readings(store).height == before
    ok, problem = store.verify()
    assert not ok and "dlq resume" in str(problem)
    with pytest.raises(ConfigError, match="did not end: finish it first with"):
        store.purge(store.list()["id"].to_list()[:1], confirm=True, actor="bob")

    entry = store.resume(actor="carol")
    assert entry["action"] == "replay" and entry["detail"]["resumed"] is True
    assert readings(store).height == before + 10
    assert store.verify() == (True, None)
    with pytest.raises(ConfigError, match="no dlq replay to finish"):
        store.resume(actor="carol")
