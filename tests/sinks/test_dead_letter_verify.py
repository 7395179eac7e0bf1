"""``dlq verify`` against a tamperer (issue 17, case 7): entries are authenticated with a
key kept outside the data dir, and the table's rows and Delta log are checked against
the audit entries. Each attack is made for real on a pipeline's data dir: an entry
edited with every hash recomputed, dead letters deleted or changed with deltalake, a
forged row appended, a data file truncated until polars panics reading the table."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dead_letter_data import STREAM, T0, add_letters
from deltalake import DeltaTable, write_deltalake
from helpers import ROOT

from telepipe.dead_letters import DeadLetter, dead_letters_batch
from telepipe.errors import SinkError
from telepipe.sinks.audit_log import KEY_ENV, AuditError, AuditKeyError, canonical, entry_hash
from telepipe.sinks.dead_letter_store import DeadLetterStore

# The fixtures pristine (a pipeline run's data dir), store (a copy per test) and the
# audit key in a tmp dir (autouse).
pytest_plugins = ["dead_letter_fixtures"]


def many(n: int, session: int = 41) -> list[DeadLetter]:
    return [
        DeadLetter(
            "sink_row_error", "kudu: timed out", STREAM, session, 64 * (k + 1), T0, b"%d" % k
        )
        for k in range(n)
    ]


def purged_one(store: DeadLetterStore) -> dict:
    """A real change: the first letter purged (the entry seals the table)."""
    return store.purge(store.list()["id"].to_list()[:1], confirm=True, actor="alice")


def fails(store: DeadLetterStore, *expected: str) -> str:
    ok, problem = store.verify()
    assert not ok and problem is not None and "\n" not in problem, problem
    for text in expected:
        assert text in problem, problem
    return problem


def telepipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telepipe.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_entry_edited_with_every_hash_recomputed_is_caught_by_its_mac(
    store: DeadLetterStore,
) -> None:
    purged_one(store)
    purged_one(store)
    assert store.verify() == (True, None)
    entries = [json.loads(line) for line in store.audit.path.read_text().splitlines()]
    entries[0]["actor"] = "mallory"  # then the chain rebuilt, as anyone can without a key
    prev = "0" * 64
    for entry in entries:
        entry["prev"] = prev
        entry["hash"] = prev = entry_hash(entry)
    store.audit.path.write_bytes(b"".join(canonical(e) + b"\n" for e in entries))
    fails(store, "entry 1: MAC does not match its content")
    with pytest.raises(AuditError, match="entry 1: MAC does not match"):
        purged_one(store)


def test_entries_of_another_key_or_with_their_macs_removed_do_not_verify(
    store: DeadLetterStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    purged_one(store)
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "other" / "audit.key"))
    fails(DeadLetterStore(store.data_dir), "entry 1: authenticated with another audit key")
    monkeypatch.undo()

    # An entry forged whole, without MAC, after authenticated ones.
    entries = [json.loads(line) for line in store.audit.path.read_text().splitlines()]
    forged = {k: v for k, v in entries[0].items() if k not in ("mac", "key_id")}
    forged.update(seq=2, prev=entries[0]["hash"], actor="mallory")
    forged["hash"] = entry_hash(forged)
    with open(store.audit.path, "ab") as f:
        f.write(canonical(forged) + b"\n")
    fails(store, "entry 2: has no MAC after authenticated entries")


def test_a_log_written_before_keys_is_reported_unauthenticated(store: DeadLetterStore) -> None:
    """Every MAC stripped (or a log from before keys): nothing vouches for it."""
    purged_one(store)
    entries = [json.loads(line) for line in store.audit.path.read_text().splitlines()]
    for entry in entries:
        del entry["mac"], entry["key_id"]
        entry["hash"] = entry_hash(entry)
    store.audit.path.write_bytes(b"".join(canonical(e) + b"\n" for e in entries))
    fails(store, "entries 1-1 carry no MAC: unauthenticated")
    verified = telepipe("dlq", "verify", "--data-dir", str(store.data_dir))
    assert verified.returncode == 1 and "unauthenticated" in verified.stderr
    # The next change authenticates them as they are; verify says so.
    purged_one(store)
    assert store.verify() == (True, None)
    verified = telepipe("dlq", "verify", "--data-dir", str(store.data_dir))
    assert verified.returncode == 0, verified.stderr
    assert "entries 1-1 were written before audit keys: unauthenticated" in verified.stderr


@pytest.mark.parametrize("sealed", [False, True], ids=["no dlq change yet", "after a purge"])
@pytest.mark.parametrize("rows", [1, 362])
def test_dead_letters_deleted_with_deltalake_are_named(
    store: DeadLetterStore, rows: int, sealed: bool
) -> None:
    if sealed:
        purged_one(store)
    letters = many(400)
    add_letters(store.data_dir, letters)
    assert store.verify() == (True, None)
    victims = letters[:rows]
    DeltaTable(str(store.path)).delete(f"session_id = 41 AND position <= {64 * rows}")
    problem = fails(store, "(DELETE, no telepipe command made it)", f"{rows} row")
    assert f"{rows} row{'s' if rows > 1 else ''} deleted" in problem
    assert min(v.id for v in victims) in problem
    with pytest.raises(AuditError, match="changes are refused"):
        purged_one(store)


def test_a_forged_row_appended_or_a_row_changed_is_named(store: DeadLetterStore) -> None:
    purged_one(store)
    forged = DeadLetter("wrong_schema_id", "forged", STREAM, 3, 4096, T0, b"x" * 8)
    write_deltalake(str(store.path), dead_letters_batch([forged]), mode="append")
    fails(store, "(WRITE, no telepipe command made it): 1 row added", forged.id)


def test_a_row_updated_with_deltalake_is_named_as_changed(store: DeadLetterStore) -> None:
    purged_one(store)
    target = store.list()["id"][0]
    DeltaTable(str(store.path)).update(
        predicate=f"id = '{target}'", updates={"detail": "'nothing to see'"}
    )
    fails(store, "(UPDATE, no telepipe command made it): 1 row changed", target)


def test_a_data_file_rewritten_in_place_is_named(store: DeadLetterStore) -> None:
    """Same name, same size, other content: only the seal's digest can tell."""
    purged_one(store)
    live = DeltaTable(str(store.path)).file_uris()
    path = Path(live[0].removeprefix("file://"))
    data = pl.read_parquet(path)
    changed = data.with_columns(detail=pl.col("detail").str.replace(r"^.", "X"))
    changed.write_parquet(path, compression="snappy", statistics=False)
    problem = fails(store, path.name)
    assert "changed since audit entry 1" in problem or "bytes, its commit says" in problem


def test_a_truncated_data_file_is_named_and_reading_it_is_one_line(
    store: DeadLetterStore,
) -> None:
    add_letters(store.data_dir, many(50))
    purged_one(store)
    live = [Path(u.removeprefix("file://")) for u in DeltaTable(str(store.path)).file_uris()]
    victim = max(live, key=lambda p: p.stat().st_size)
    size = victim.stat().st_size
    os.truncate(victim, size // 2)
    fails(store, f"data file {victim.name} is {size // 2} bytes, its commit says {size}")
    listed = telepipe("dlq", "list", "--data-dir", str(store.data_dir))
    assert listed.returncode == 1 and "Traceback" not in listed.stderr, listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1, listed.stderr
    with pytest.raises(SinkError, match="cannot read dead letters"):
        store.list()
    verified = telepipe("dlq", "verify", "--data-dir", str(store.data_dir))
    assert verified.returncode == 1 and victim.name in verified.stderr
    assert len(verified.stderr.strip().splitlines()) == 1, verified.stderr


def test_the_key_is_made_0600_outside_the_data_dir_on_first_use_and_says_where(
    store: DeadLetterStore, audit_key_file: Path
) -> None:
    assert not audit_key_file.exists()
    done = telepipe("dlq", "verify", "--data-dir", str(store.data_dir))
    assert done.returncode == 0, done.stderr
    assert f"created the audit key {audit_key_file} (mode 0600)" in done.stderr
    assert stat.S_IMODE(audit_key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(audit_key_file.parent.stat().st_mode) == 0o700
    again = telepipe("dlq", "verify", "--data-dir", str(store.data_dir))
    assert again.returncode == 0 and "created" not in again.stderr

    audit_key_file.chmod(0o644)
    done = telepipe(
        "dlq", "purge", store.list()["id"][0], "--confirm", "--data-dir", str(store.data_dir)
    )
    assert done.returncode == 1 and "may be read or changed by other users" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    audit_key_file.chmod(0o600)


def test_a_key_inside_the_data_dir_is_refused(
    store: DeadLetterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, str(store.data_dir / "audit.key"))
    with pytest.raises(AuditKeyError, match="is inside the data dir"):
        DeadLetterStore(store.data_dir).verify()
    assert not (store.data_dir / "audit.key").exists()


def test_a_key_defaults_to_the_user_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telepipe.sinks.audit_log import key_path

    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert key_path() == tmp_path / "xdg" / "telepipe" / "audit.key"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert key_path() == tmp_path / "home" / ".config" / "telepipe" / "audit.key"


def test_honest_changes_and_runs_verify(store: DeadLetterStore) -> None:
    """What telepipe itself does passes: a run's appends, purges, a compaction."""
    add_letters(store.data_dir, many(30))
    purged_one(store)
    add_letters(store.data_dir, many(5, session=42))  # a run after the seal
    assert store.verify() == (True, None)
    from deltalake import CommitProperties

    DeltaTable(str(store.path)).optimize.compact(
        commit_properties=CommitProperties(custom_metadata={"telepipe.action": "compact"})
    )
    assert store.verify() == (True, None)
    purged_one(store)
    assert store.verify() == (True, None)


# -- a commit removed with its letters (the log whole again), against a cut run --------

# Small polls, a checkpoint every 40 readings: checkpoints 1-4, each committed to every
# table in the order late_readings, dead_letters, readings, windows, alarms.
CHECKPOINTED = [
    "replay.batch_messages=2",
    "source.checkpoint_every_readings=40",
    "source.checkpoint_every_ms=100000000",
]
LOG = Path("dead_letters") / "_delta_log"


def replay(capture: Path, data_dir: Path, kill: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "TELEPIPE_FAULT_KILL"}
    if kill is not None:
        env["TELEPIPE_FAULT_KILL"] = kill
    done = subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "replay", "pipeline=demo", f"input={capture}",
         f"data_dir={data_dir}", "ui=never", *CHECKPOINTED],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    return done.returncode


@pytest.fixture(scope="module")
def checkpointed(
    pristine: tuple[Path, list[int]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The same capture replayed with four checkpoints."""
    data_dir = tmp_path_factory.mktemp("checkpointed") / "data"
    assert replay(pristine[0].parent / "capture", data_dir) == 0
    assert DeltaTable(str(data_dir / "dead_letters")).version() == 3
    return data_dir


def verify_fails(data_dir: Path, *expected: str) -> str:
    """``telepipe dlq verify``: exit 1, one line naming what is missing."""
    done = telepipe("dlq", "verify", "--data-dir", str(data_dir))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    said = [s for s in done.stderr.splitlines() if s and "created the audit key" not in s]
    assert len(said) == 1 and said[0].startswith("telepipe dlq verify: "), done.stderr
    for text in expected:
        assert text in said[0], said[0]
    return said[0]


@pytest.mark.parametrize("removed", [1, 2])
def test_the_newest_commits_removed_with_their_letters_are_named(
    checkpointed: Path, tmp_path: Path, removed: int
) -> None:
    """The review's case: the newest commits of dead_letters and the letters they
    appended gone, the Delta log whole again; the other tables and the state files
    still name the checkpoints."""
    data_dir = tmp_path / "data"
    shutil.copytree(checkpointed, data_dir)
    for v in range(4 - removed, 4):
        (data_dir / LOG / f"{v:020d}.json").unlink()
    held = 4 - removed
    verify_fails(
        data_dir,
        f"dead_letters: holds checkpoint {held} of app telepipe",
        "tables alarms, late_readings, readings, windows hold checkpoint 4",
        f"commits after checkpoint {held} were removed",
        "run the pipeline again to recover, then verify",
    )
    store = DeadLetterStore(data_dir)
    with pytest.raises(AuditError, match="changes are refused"):
        purged_one(store)
    # The state files alone (the other tables' newest commits removed too) tell.
    for table in ("late_readings", "readings", "windows", "alarms"):
        for v in range(4 - removed, 4):
            (data_dir / table / "_delta_log" / f"{v:020d}.json").unlink()
    verify_fails(data_dir, "state files for checkpoint 4 were written for alarms, dead_letters")


def test_a_hole_in_the_delta_log_or_a_checkpoint_past_it_is_named(
    checkpointed: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(checkpointed, data_dir)
    (data_dir / LOG / f"{1:020d}.json").unlink()
    verify_fails(data_dir, "no commit file for version 1 but goes on to version 3", "removed")

    shutil.rmtree(data_dir)
    shutil.copytree(checkpointed, data_dir)
    DeltaTable(str(data_dir / "dead_letters")).create_checkpoint()
    assert DeadLetterStore(data_dir).verify() == (True, None)
    (data_dir / LOG / f"{3:020d}.json").unlink()
    verify_fails(data_dir, "no commit file for version 3 but a checkpoint names version 3")


def test_a_run_cut_between_two_tables_commits_is_said_so_and_passes_once_recovered(
    pristine: tuple[Path, list[int]], checkpointed: Path, tmp_path: Path
) -> None:
    """A SIGKILL right after late_readings' commit of checkpoint 3 leaves dead_letters at
    2: verify fails, saying a run was cut or a commit removed, until a run recovers.
    One right after readings' commit leaves dead_letters whole (windows and alarms
    behind): verify passes."""
    capture = pristine[0].parent / "capture"
    want = DeadLetterStore(checkpointed).ids()
    cut = tmp_path / "cut"
    assert replay(capture, cut, kill="after:late_readings:3") == -9
    verify_fails(
        cut,
        "dead_letters: holds checkpoint 2 of app telepipe, but table late_readings holds "
        "checkpoint 3: a run was cut between two tables' commits",
    )
    assert replay(capture, cut) == 0
    done = telepipe("dlq", "verify", "--data-dir", str(cut))
    assert done.returncode == 0, done.stderr
    assert DeadLetterStore(cut).ids() == want

    ahead = tmp_path / "ahead"
    assert replay(capture, ahead, kill="after:readings:3") == -9
    assert DeltaTable(str(ahead / "windows")).transaction_version("telepipe") == 2
    assert DeadLetterStore(ahead).verify() == (True, None)
