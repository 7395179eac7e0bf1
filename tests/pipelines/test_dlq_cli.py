"""``telepipe dlq``: list, inspect, purge, replay and verify from the command line, over dead
letters a real pipeline run made from a telepipe capture of good and malformed messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dead_letter_data import CODEC, RUN_COMMIT, T0, colliding_pair, good_letter, telemetry
from deltalake import write_deltalake
from helpers import ROOT

from telepipe.dead_letters import dead_letters_batch
from telepipe.sinks.audit_log import AuditLog, audit_key
from telepipe.sources.capture import CaptureWriter
from telepipe.sources.decoder import late_row_letters
from telepipe.sources.frames import align

# The audit key in a tmp dir (autouse), for the CLI processes too.
pytest_plugins = ["dead_letter_fixtures"]

REASONS = {2: "truncated_group", 5: "wrong_schema_id", 8: "trailing_bytes"}


ENTRY = ["-m", "telepipe.cli"]


def telepipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *ENTRY, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def capture(directory: Path) -> None:
    payloads = [telemetry(i) for i in range(10)]
    payloads[2] = payloads[2][:-5]
    wrong = bytearray(payloads[5])
    wrong[4:6] = (999).to_bytes(2, "little")
    payloads[5] = bytes(wrong)
    payloads[8] += b"junk"
    position = 0
    with CaptureWriter(directory, channel="aeron:ipc", stream_id=1001) as writer:
        for i, payload in enumerate(payloads):
            position += align(len(payload) + 32)
            writer.append(
                payload, received_ns=T0 + i, position=position, session_id=7, stream_id=1001
            )


GOOD = good_letter(4096)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dlq_cli")
    capture(base / "capture")
    done = subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "replay", "pipeline=demo",
         f"input={base / 'capture'}", f"data_dir={base / 'data'}", "ui=never"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return base


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the pipeline's data dir plus a good letter and two with a common prefix."""
    shutil.copytree(pristine / "data", tmp_path / "data")
    batch = dead_letters_batch([GOOD, *colliding_pair()])
    write_deltalake(
        str(tmp_path / "data" / "dead_letters"), batch, mode="append", commit_properties=RUN_COMMIT
    )
    return tmp_path / "data"


def letters(data: Path) -> pl.DataFrame:
    return pl.read_delta(str(data / "dead_letters")).sort("position")


def ids_by_reason(data: Path) -> dict[str, str]:
    return {r["reason"]: r["id"] for r in letters(data).iter_rows(named=True)}


def one_line(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], done.stderr


def test_list_and_inspect(data: Path) -> None:
    ids = ids_by_reason(data)
    assert set(REASONS.values()) <= set(ids)
    listed = telepipe("dlq", "list", "--data-dir", str(data))
    assert listed.returncode == 0, listed.stderr
    for reason, id_ in ids.items():
        assert reason in listed.stdout and id_ in listed.stdout
    assert "6 of 6 dead letters" in listed.stdout
    as_json = telepipe(
        "dlq", "list", "--data-dir", str(data), "--json", "--reason", "wrong_schema_id"
    )
    rows = json.loads(as_json.stdout)
    assert [r["id"] for r in rows] == [ids["wrong_schema_id"]]
    assert "payload" not in rows[0] and rows[0]["payload_bytes"] == len(telemetry(5))
    limited = json.loads(
        telepipe("dlq", "list", "--data-dir", str(data), "--json", "--limit", "2").stdout
    )
    assert len(limited) == 2

    shown = telepipe("dlq", "inspect", ids["truncated_group"][:7], "--data-dir", str(data))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert ids["truncated_group"] in out and "session_id  7" in out
    assert "decode      rejected: truncated_group:" in out
    assert "00000000  0c 00 01 00 85 1c 01 00" in out  # header: blockLength 12, template 1, 7301
    good = telepipe("dlq", "inspect", GOOD.id, "--data-dir", str(data))
    assert "decode      ok: 10 readings" in good.stdout and "sink_row_error" in good.stdout
    assert not (data / "dead_letters" / "_audit.jsonl").exists()


def test_purge_needs_confirm_then_removes_the_rows_and_audits(data: Path) -> None:
    before = letters(data)
    target = ids_by_reason(data)["trailing_bytes"]
    one_line(telepipe("dlq", "purge", target, "--data-dir", str(data)), 2, "add --confirm")
    assert letters(data).equals(before)
    assert not (data / "dead_letters" / "_audit.jsonl").exists()

    done = telepipe("dlq", "purge", target[:8], "--confirm", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert "purged 1 dead letters" in done.stdout
    assert sorted(letters(data)["id"]) == sorted(set(before["id"]) - {target})
    (entry,) = AuditLog(data / "dead_letters" / "_audit.jsonl").entries()
    assert entry["action"] == "purge" and entry["ids"] == [target]
    verified = telepipe("dlq", "verify", "--data-dir", str(data))
    assert verified.returncode == 0 and "audit log and table ok: 1 entries" in verified.stdout


def test_replay_brings_failures_back_and_delivers_what_decodes(data: Path) -> None:
    ids = ids_by_reason(data)
    failing = ids["wrong_schema_id"]
    readings_before = pl.read_delta(str(data / "readings")).height
    one_line(telepipe("dlq", "replay", failing, "--data-dir", str(data)), 2, "add --confirm")

    done = telepipe(
        "dlq", "replay", failing[:6], GOOD.id[:6], "--confirm", "--pipeline", "demo",
        "--data-dir", str(data),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"1 came back ({failing})" in done.stdout and "10 readings committed" in done.stdout
    after = set(letters(data)["id"])
    assert failing in after and GOOD.id not in after
    readings = pl.read_delta(str(data / "readings"))
    assert readings.height == readings_before + 10
    assert readings.filter(pl.col("sensor_id") >= 5000).height == 10
    actions = [e["action"] for e in AuditLog(data / "dead_letters" / "_audit.jsonl").entries()]
    assert actions == ["replay_start", "replay"]


@pytest.mark.parametrize(
    ("how", "entry"), [("edit", 2), ("delete", 2), ("swap", 2), ("truncate", 3)]
)
def test_verify_names_the_broken_entry(tmp_path: Path, how: str, entry: int) -> None:
    log = AuditLog(tmp_path / "dead_letters" / "_audit.jsonl", key=audit_key())
    for k in range(3):
        log.append("purge", [f"{k:020x}"], {"rows": 1}, actor="alice")
    assert telepipe("dlq", "verify", "--data-dir", str(tmp_path)).returncode == 0
    lines = log.path.read_text().splitlines(keepends=True)
    if how == "edit":
        lines[1] = lines[1].replace('"rows":1', '"rows":2')
    elif how == "delete":
        del lines[1]
    elif how == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[2] = lines[2][:-20]
    log.path.write_text("".join(lines))
    one_line(telepipe("dlq", "verify", "--data-dir", str(tmp_path)), 1, f"entry {entry}:")


def test_unknown_or_ambiguous_ids_are_one_line_exit_2(data: Path) -> None:
    prefix = colliding_pair()[0].id[:4]
    d = ["--data-dir", str(data)]
    one_line(telepipe("dlq", "inspect", "ffffffff", *d), 2, "no dead letter with id ffffffff")
    one_line(
        telepipe("dlq", "purge", prefix, "--confirm", *d), 2, f"id prefix {prefix} is ambiguous"
    )
    one_line(telepipe("dlq", "replay", "ab", "--confirm", *d), 2, "too short")
    assert not (data / "dead_letters" / "_audit.jsonl").exists()


def test_the_original_replay_still_resumes_after_a_dlq_replay(pristine: Path, data: Path) -> None:
    failing = ids_by_reason(data)["wrong_schema_id"]
    assert telepipe("dlq", "replay", failing, "--confirm", "--data-dir", str(data)).returncode == 0
    before = pl.read_delta(str(data / "readings")).height
    again = subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "replay", "pipeline=demo",
         f"input={pristine / 'capture'}", f"data_dir={data}", "ui=never"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert pl.read_delta(str(data / "readings")).height == before


def test_late_rows_are_dead_letters_and_a_replay_delivers_them(tmp_path: Path) -> None:
    # A session's message 500 ms behind its newest ts (the bound is 50 ms): late at the source.
    payloads = [telemetry(i) for i in range(10)]
    payloads[6] = CODEC.encode(
        {"sensor_id": np.arange(100, 104, dtype=np.int32),
         "ts": np.full(4, T0 - 500_000_000, np.int64), "value": np.ones(4),
         "quality": np.zeros(4, np.uint8)},
        source_id=1, batch_seq=6,
    )  # fmt: skip
    position, positions = 0, []
    with CaptureWriter(tmp_path / "capture", channel="aeron:ipc", stream_id=1001) as writer:
        for i, payload in enumerate(payloads):
            position += align(len(payload) + 32)
            positions.append(position)
            writer.append(
                payload, received_ns=T0 + i, position=position, session_id=7, stream_id=1001
            )
    data = tmp_path / "data"
    done = telepipe(
        "replay", "pipeline=demo", f"input={tmp_path / 'capture'}", f"data_dir={data}", "ui=never"
    )
    assert done.returncode == 0, done.stderr
    (late,) = letters(data).filter(pl.col("reason") == "late_reading").iter_rows(named=True)
    assert (late["session_id"], late["position"]) == (7, positions[6])
    assert late["payload"] == payloads[6] and "4 of 4 readings" in late["detail"]
    assert pl.read_delta(str(data / "late_readings")).height == 4

    # Rows an operator set aside have no wire position: the replay lays them out in ts
    # order (ids would put them out of order, 100 ms apart: late again at the source).
    step_rows = {"sensor_id": np.arange(200, 210, dtype=np.int32),
                 "ts": T0 - np.arange(10, dtype=np.int64) * 100_000_000,
                 "value": np.ones(10), "quality": np.zeros(10, np.uint8)}  # fmt: skip
    rows = CODEC.decode_one(CODEC.encode(step_rows, source_id=0, batch_seq=0)).batch
    at_step = late_row_letters(CODEC, rows, "windows.tumble", 1001)
    assert len({d.id for d in at_step}) == 10 and {d.position for d in at_step} == {0}
    write_deltalake(
        str(data / "dead_letters"),
        dead_letters_batch(at_step),
        mode="append",
        commit_properties=RUN_COMMIT,
    )
    listed = telepipe("dlq", "list", "--data-dir", str(data), "--reason", "late_reading")
    assert "11 of 11 dead letters" in listed.stdout, listed.stdout

    ids = [late["id"], *(d.id for d in at_step)]
    done = telepipe(
        "dlq", "replay", *ids, "--confirm", "--pipeline", "demo", "--data-dir", str(data)
    )
    assert done.returncode == 0, done.stderr
    assert "0 came back" in done.stdout and "14 readings committed" in done.stdout, done.stdout
    readings = pl.read_delta(str(data / "readings"))
    assert readings.filter(pl.col("sensor_id").is_between(100, 103)).height == 4
    assert readings.filter(pl.col("sensor_id").is_between(200, 209)).height == 10
    assert letters(data).filter(pl.col("reason") == "late_reading").height == 0


def test_a_ctrl_c_while_a_replay_takes_letters_out_loses_none(data: Path) -> None:
    """The signal lands right after the replay_start entry, as the letters leave the
    store: it is kept until the replay's run takes it, which stops early and puts back
    what it did not read (it cut the replay there, exit 0, and the store was stuck)."""
    ids = ids_by_reason(data)
    failing = ids["wrong_schema_id"]
    readings_before = pl.read_delta(str(data / "readings")).height
    code = (
        "import os, signal, sys\n"
        "from telepipe.sinks.dead_letter_store import DeadLetterStore\n"
        "delete = DeadLetterStore.delete\n"
        "def interrupted(self, *a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return delete(self, *a, **k)\n"
        "DeadLetterStore.delete = interrupted\n"
        "from telepipe.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "dlq", "replay", failing, GOOD.id, "--confirm",
         "--pipeline", "demo", "--data-dir", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    actions = [e["action"] for e in AuditLog(data / "dead_letters" / "_audit.jsonl").entries()]
    assert actions == ["replay_start", "replay"]
    present = set(letters(data)["id"])
    delivered = pl.read_delta(str(data / "readings")).height - readings_before
    assert failing in present
    assert (GOOD.id in present and delivered == 0) or (GOOD.id not in present and delivered == 10)
    assert telepipe("dlq", "verify", "--data-dir", str(data)).returncode == 0
