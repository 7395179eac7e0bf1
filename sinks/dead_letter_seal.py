"""What the ``dead_letters`` table holds, authenticated: seals, and checking the table
and its Delta log against them.

A seal is what a ``dlq`` change records in its (keyed) audit entry: the table's Delta
version and, for each live data file, its row count and a digest of its rows (the sum,
mod 2^256, of an HMAC of each row under the audit key: any set of rows has one digest,
however files are split or compacted, and nobody without the key can make rows that
fit a digest). ``check`` then proves, against the newest seal:

- each file the seal names is still there, unchanged, unless a commit since removed it;
- each commit since the seal is one telepipe makes: a run's append (its commit names a
  ``telepipe.app_id``, removes nothing), a compaction that keeps the same rows, a
  vacuum, or a ``dlq`` change naming an audit entry at or after the seal whose ids it
  touches; anything else (a delete or update with deltalake, an append without a run's
  metadata) is named with the rows it deleted, added or changed;
- each live data file is the size its commit recorded and readable (a truncated file
  that makes polars panic is named);
- the files the Delta log holds now are those the commits since the seal leave.

Rows appended since the seal and removed with their commit leave the log whole:
``log_gaps`` names a commit file missing below the newest version, and
``checkpoint_lag`` a table holding an older checkpoint than another table of the
data dir or than the state files written for it (a run cut between two tables'
commits looks the same until the next run recovers: the message says both).

What it cannot prove: rows appended since the newest seal by a commit that carries a
run's metadata are taken as a run's (the Delta sink does not sign its commits); what
happened before the first keyed entry; commits since the seal whose log files are gone
(Delta's log retention, 30 days by default) cannot be checked and are reported; a
compaction of files appended since the seal and vacuumed since is checked by row
counts only.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from telepipe.dead_letters import DeadLetter
from telepipe.schema import DEAD_LETTERS
from telepipe.sinks.audit_log import AuditKey

MODULUS = 1 << 256
SHOWN_IDS = 5
RUN_OPERATIONS = ("WRITE", "CREATE TABLE")
DLQ_ACTIONS = {"purge": "purge", "replay": "replay_start", "put_back": "replay_start"}


class Damaged(Exception):
    """A data file is missing, of the wrong size or unreadable (the message says which)."""


@dataclass
class FileRows:
    """The rows of one data file, as (id, row MAC) pairs."""

    rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    wrong_ids: set[str] = field(default_factory=set)  # rows whose id is not their content's

    @property
    def count(self) -> int:
        return self.rows.total()

    @property
    def digest(self) -> int:
        return sum(int(mac, 16) * n for (_, mac), n in self.rows.items()) % MODULUS


def row_mac(key: AuditKey, row: dict[str, Any]) -> str:
    values = [row[n].hex() if n == "payload" else row[n] for n in DEAD_LETTERS.names]
    return key.mac(json.dumps(values, separators=(",", ":")).encode())


def read_file(table: Path, rel: str, key: AuditKey, size: int | None = None) -> FileRows:
    """The rows of data file ``rel``; ``Damaged`` if it is gone, not ``size`` bytes or
    unreadable."""
    path = table / rel
    try:
        actual = path.stat().st_size
    except OSError:
        raise Damaged(f"data file {rel} is missing") from None
    if size is not None and actual != size:
        raise Damaged(
            f"data file {rel} is {actual} bytes, its commit says {size} (truncated or rewritten)"
        )
    try:
        data = pq.read_table(path, columns=DEAD_LETTERS.names)
    except (pa.ArrowException, OSError, KeyError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise Damaged(f"data file {rel} cannot be read ({first})") from None
    out = FileRows()
    for row in data.to_pylist():
        out.rows[(row["id"], row_mac(key, row))] += 1
        if DeadLetter(*(row[n] for n in DEAD_LETTERS.names if n != "id")).id != row["id"]:
            out.wrong_ids.add(row["id"])
    return out


def seal(table: Path, key: AuditKey) -> dict[str, Any]:
    """The table as it is now: its version and each live file's rows and digest."""
    if not DeltaTable.is_deltatable(str(table)):
        return {"version": -1, "files": {}}
    dt = DeltaTable(str(table))
    files = {}
    for rel, size in live_files(dt).items():
        rows = read_file(table, rel, key, size)
        files[rel] = [rows.count, f"{rows.digest:064x}"]
    return {"version": dt.version(), "files": files}


def last_seal(entries: Sequence[dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
    """(seq, seal) of the newest keyed entry that sealed the table ((0, None): none)."""
    for entry in reversed(entries):
        table = entry["detail"].get("table") if isinstance(entry["detail"], dict) else None
        if "mac" in entry and isinstance(table, dict) and isinstance(table.get("files"), dict):
            return entry["seq"], table
    return 0, None


def live_files(dt: DeltaTable) -> dict[str, int]:
    actions = pa.table(dt.get_add_actions(flatten=True))
    return {
        unquote(p): int(s)
        for p, s in zip(
            actions.column("path").to_pylist(),
            actions.column("size_bytes").to_pylist(),
            strict=True,
        )
    }


def _ids(ids: Iterable[str]) -> str:
    shown = sorted(ids)
    more = len(shown) - SHOWN_IDS
    text = ", ".join(shown[:SHOWN_IDS]) + (f", ... ({more} more)" if more > 0 else "")
    return f"id{'s' if len(shown) > 1 else ''} {text}"


@dataclass
class Diff:
    deleted: set[str]
    added: set[str]
    changed: set[str]

    def describe(self) -> str:
        parts = []
        for what, ids in (
            ("deleted", self.deleted),
            ("added", self.added),
            ("changed", self.changed),
        ):
            if ids:
                parts.append(f"{len(ids)} row{'s' if len(ids) > 1 else ''} {what} ({_ids(ids)})")
        return ", ".join(parts) or "no rows changed"


def _diff(removed: Sequence[FileRows], added: Sequence[FileRows]) -> Diff:
    before: Counter[tuple[str, str]] = sum((f.rows for f in removed), Counter())
    after: Counter[tuple[str, str]] = sum((f.rows for f in added), Counter())
    gone = {i for i, _ in before - after}
    new = {i for i, _ in after - before}
    return Diff(gone - new, new - gone, gone & new)


class _Check:
    def __init__(self, table: Path, key: AuditKey, entries: Sequence[dict[str, Any]]) -> None:
        self.table = table
        self.key = key
        self.entries = entries
        self.sealed_at, sealed = last_seal(entries)
        self.seal = sealed or {"version": -1, "files": {}}
        self.where = (
            f"audit entry {self.sealed_at}" if self.sealed_at else "the table's first commit"
        )
        # Rows of files known so far: from the seal (digest only) or read.
        self.read: dict[str, FileRows] = {}
        self.sizes: dict[str, int] = {}
        self.records: dict[str, int] = {}  # rows by data file, as its commit's stats say

    def rows(self, rel: str) -> FileRows:
        if rel not in self.read:
            self.read[rel] = read_file(self.table, rel, self.key, self.sizes.get(rel))
        return self.read[rel]

    def digest(self, rels: Iterable[str]) -> tuple[int, int]:
        """(rows, digest) of these files: from the seal where it names them, else read."""
        rows = total = 0
        for rel in rels:
            if rel in self.seal["files"] and rel not in self.read:
                count, digest = self.seal["files"][rel]
                rows, total = rows + int(count), total + int(digest, 16)
            else:
                got = self.rows(rel)
                rows, total = rows + got.count, total + got.digest
        return rows, total % MODULUS

    def run(self) -> str | None:
        version = int(self.seal["version"])
        if not DeltaTable.is_deltatable(str(self.table)):
            if version >= 0:
                return (
                    f"{self.table}: the table is gone ({self.where} sealed its version {version})"
                )
            return None
        try:
            dt = DeltaTable(str(self.table))
            current = dt.version()
            live_now = live_files(dt)
        except (DeltaError, OSError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return f"cannot read the Delta log of {self.table}: {first}"
        if current < version:
            return (
                f"{self.table}: its Delta log ends at version {current}, but {self.where} "
                f"sealed version {version}: commits were removed"
            )
        live = set(self.seal["files"])
        for v in range(version + 1, current + 1):
            try:
                problem = self.commit(v, live)
            except Damaged as error:
                problem = f"{self.table} version {v}: {error}"
            if problem is not None:
                return problem
        for rel in sorted(live - set(live_now)):
            return (
                f"{self.table}: data file {rel} left the table without a commit removing it "
                f"since {self.where} (its Delta log was rewritten)"
            )
        for rel in sorted(set(live_now) - live):
            return (
                f"{self.table}: data file {rel} is in the table but no commit since "
                f"{self.where} added it (its Delta log was rewritten)"
            )
        for rel, size in sorted(live_now.items()):
            self.sizes[rel] = size
            self.read.pop(rel, None)
            try:
                got = self.rows(rel)
            except Damaged as error:
                return f"{self.table}: {error}"
            sealed = self.seal["files"].get(rel)
            if sealed is not None and (int(sealed[0]), int(sealed[1], 16)) != (
                got.count,
                got.digest,
            ):
                return (
                    f"{self.table}: data file {rel} changed since {self.where}: it holds "
                    f"{got.count} rows, the seal says {sealed[0]}, and their digest differs"
                )
            if got.wrong_ids:
                return (
                    f"{self.table}: data file {rel}: {len(got.wrong_ids)} rows whose id is not "
                    f"the hash of their content ({_ids(got.wrong_ids)})"
                )
        return None

    def commit(self, v: int, live: set[str]) -> str | None:
        """Check commit ``v`` and apply it to ``live``; a problem, or None."""
        path = self.table / "_delta_log" / f"{v:020d}.json"
        where = f"{self.table} version {v}"
        try:
            lines = path.read_bytes().splitlines()
            actions = [json.loads(line) for line in lines if line.strip()]
        except FileNotFoundError:
            return (
                f"{where}: its commit file is gone (removed, or expired by Delta's log "
                f"retention): the commits since {self.where} cannot be checked"
            )
        except (OSError, ValueError) as error:
            return f"{where}: cannot read its commit file ({error})"
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        adds = [unquote(a["add"]["path"]) for a in actions if "add" in a]
        removes = [unquote(a["remove"]["path"]) for a in actions if "remove" in a]
        for a in actions:
            if "add" in a:
                rel = unquote(a["add"]["path"])
                self.sizes[rel] = int(a["add"].get("size", 0))
                with contextlib.suppress(TypeError, ValueError, KeyError):
                    self.records[rel] = int(json.loads(a["add"]["stats"])["numRecords"])
        for rel in removes:
            if rel not in live:
                return f"{where}: removes data file {rel}, which the table did not hold"
        problem = self.classify(where, info, adds, removes)
        live.difference_update(removes)
        live.update(adds)
        return problem

    def classify(
        self, where: str, info: dict[str, Any], adds: list[str], removes: list[str]
    ) -> str | None:
        operation = info.get("operation", "?")
        mark = info.get("telepipe.action")
        if mark == "vacuum" and not adds and not removes:
            return None
        if mark == "compact" and operation == "OPTIMIZE":
            try:
                before = self.digest(removes)
            except Damaged:
                # Files a run appended since the seal, compacted, then vacuumed (after
                # vacuum_retention_hours): only their row counts are left to compare.
                if all(r in self.seal["files"] or r in self.records for r in removes):
                    counted = sum(
                        int(self.seal["files"][r][0])
                        if r in self.seal["files"]
                        else self.records[r]
                        for r in removes
                    )
                    if counted == self.digest(adds)[0]:
                        return None
                raise
            if before != self.digest(adds):
                return f"{where}: a compaction that changed rows: {self.diff(removes, adds)}"
            return None
        action = info.get("telepipe.dlq.action")
        if action in DLQ_ACTIONS and "telepipe.dlq.audit_seq" in info:
            return self.dlq_change(
                where, str(action), info["telepipe.dlq.audit_seq"], adds, removes
            )
        if operation in RUN_OPERATIONS and not removes:
            if "telepipe.app_id" in info:
                return None  # a run's append (unsigned: see the module's doc)
            if self.digest(adds)[0] == 0:
                return None  # the table created empty
            if action == "put_back" and not self.sealed_at:
                return None  # before keys: put_back commits named no entry
        return f"{where} ({operation}, no telepipe command made it): {self.diff(removes, adds)}"

    def dlq_change(
        self, where: str, action: str, raw_seq: object, adds: list[str], removes: list[str]
    ) -> str | None:
        try:
            seq = int(str(raw_seq))
        except ValueError:
            seq = 0
        entry = self.entries[seq - 1] if 1 <= seq <= len(self.entries) else None
        if entry is None or entry["action"] != DLQ_ACTIONS[action] or seq < self.sealed_at:
            return (
                f"{where} (a dlq {action} naming audit entry {raw_seq}, which made no such "
                f"change after {self.where}): {self.diff(removes, adds)}"
            )
        diff = _diff([self.rows(r) for r in removes], [self.rows(r) for r in adds])
        touched = diff.added if action == "put_back" else diff.deleted
        stray = (touched - set(entry["ids"])) | diff.changed
        stray |= diff.deleted if action == "put_back" else diff.added
        if stray:
            return (
                f"{where} (a dlq {action} of audit entry {seq}) touched rows the entry does "
                f"not name: {diff.describe()}"
            )
        return None

    def diff(self, removes: list[str], adds: list[str]) -> str:
        try:
            return _diff([self.rows(r) for r in removes], [self.rows(r) for r in adds]).describe()
        except Damaged as error:
            return f"its rows cannot be named ({error})"


def check(table: Path, key: AuditKey, entries: Sequence[dict[str, Any]]) -> str | None:
    """The first thing in the table or its Delta log that the audit entries do not
    account for (one line), or None."""
    return _Check(table, key, entries).run()


# -- what a removed commit leaves behind --------------------------------------------
#
# A seal covers the table up to its version; rows a run appended since are the run's
# (unsigned). Removing the newest commits, with their letters, leaves a Delta log
# that is whole again, so ``check`` alone passes it. What such a removal leaves
# behind: a Delta log whose versions have a hole (or a checkpoint past its last commit
# file), and a table that holds an older checkpoint than the data dir's other tables
# (every checkpoint commits every table, empty commits included) or than the state
# files written for it (``_telepipe_state``, written before each table's commit).

_COMMIT_FILE = re.compile(r"([0-9]{20})\.json")
_CHECKPOINT_FILE = re.compile(r"([0-9]{20})\.checkpoint(\.[^/]+)?\.(parquet|json)")
_STATE_CHECKPOINT = re.compile(r"([0-9]{12})(-[0-9a-f]{1,32})?")
#: How many of a table's newest commits are read for the app ids that commit to it.
RECENT = 64
DEFAULT_APP = "telepipe"
STATE_NOTE = "each before its table's commit"


def log_gaps(table: Path) -> str | None:
    """Commit files missing from the table's Delta log below its newest version (one
    line), or None. Delta's log retention removes only the oldest commits, and only
    below a checkpoint; any other hole is a removed commit."""
    log = table / "_delta_log"
    if not log.is_dir():
        return None
    commits: set[int] = set()
    checkpoints: set[int] = set()
    for path in log.iterdir():
        if m := _COMMIT_FILE.fullmatch(path.name):
            commits.add(int(m[1]))
        elif m := _CHECKPOINT_FILE.fullmatch(path.name):
            checkpoints.add(int(m[1]))
    last = None
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        last = int(json.loads((log / "_last_checkpoint").read_text())["version"])
    named = checkpoints | ({last} if last is not None else set())
    if not commits and not named:
        return None
    newest = max(commits | named)
    low = min(commits) if commits else newest
    missing = [v for v in range(low, newest + 1) if v not in commits]
    if missing:
        shown = ", ".join(map(str, missing[:SHOWN_IDS])) + (
            ", ..." if len(missing) > SHOWN_IDS else ""
        )
        through = (
            f"goes on to version {newest}"
            if newest in commits
            else f"a checkpoint names version {newest}"
        )
        return (
            f"{table}: its Delta log has no commit file for version{'s' * (len(missing) > 1)} "
            f"{shown} but {through}: commits were removed (Delta's log retention "
            "removes only the oldest, below a checkpoint)"
        )
    if last is not None and last not in checkpoints:
        return (
            f"{table}: _delta_log/_last_checkpoint names version {last}, but no checkpoint "
            "file of that version is there: it was removed"
        )
    if low > 0 and not any(c >= low - 1 for c in checkpoints):
        return (
            f"{table}: its Delta log starts at version {low} with no checkpoint to start "
            f"from: versions 0-{low - 1} were removed"
        )
    return None


def _recent_apps(path: Path) -> set[str]:
    """The app ids of the checkpoint commits among a table's newest ``RECENT``."""
    try:
        history = DeltaTable(str(path)).history(limit=RECENT)
    except (DeltaError, OSError):
        return set()
    return {
        str(c.get("telepipe.app_id", DEFAULT_APP)) for c in history if "telepipe.checkpoint_id" in c
    }


def _committed(path: Path, app: str) -> int:
    """The newest checkpoint of ``app`` the table's commits hold (its Delta application
    transaction; 0: none)."""
    try:
        return int(DeltaTable(str(path)).transaction_version(app) or 0)
    except (DeltaError, OSError):
        return 0


def _state_saved(data_dir: Path, app: str, table: str) -> int:
    """The newest checkpoint whose state files were written for (app, table) (0: none)."""
    from telepipe.state.files import STATE_DIR, owner_dir

    owner = data_dir / STATE_DIR / owner_dir(app, table)
    try:
        names = [p.name for p in owner.iterdir() if (p / "manifest.json").is_file()]
    except OSError:
        return 0
    found = [int(m[1]) for n in names if (m := _STATE_CHECKPOINT.fullmatch(n))]
    return max(found, default=0)


def checkpoint_lag(
    data_dir: Path, table: str, skip: Iterable[str] = (), running: int | None = None
) -> str | None:
    """The table holds an older checkpoint of some app id than another table of the
    data dir commits, or than the state files written for any of them (one line), or
    None. ``skip``: app ids not to compare (a dlq replay under way); ``running``: the
    pid of a run holding the data dir now, if any."""
    path = data_dir / table
    if not (path / "_delta_log").is_dir():
        return None
    try:
        others = sorted(
            p.name for p in data_dir.iterdir() if p.name != table and (p / "_delta_log").is_dir()
        )
    except OSError:
        return None
    apps: set[str] = set()
    for name in [table, *others]:
        apps |= _recent_apps(data_dir / name)
    for app in sorted(apps - set(skip)):
        held = _committed(path, app)
        tables = {name: k for name in others if (k := _committed(data_dir / name, app)) > held}
        saved = {
            name: k for name in [table, *others] if (k := _state_saved(data_dir, app, name)) > held
        }
        if tables:
            newest = max(tables.values())
            names = sorted(n for n, k in tables.items() if k == newest)
            plural = len(names) > 1
            evidence = (
                f"table{'s' * plural} {', '.join(names)} hold{'s' * (not plural)} "
                f"checkpoint {newest}"
            )
        elif saved:
            newest = max(saved.values())
            names = sorted(n for n, k in saved.items() if k == newest)
            evidence = (
                f"state files for checkpoint {newest} were written for {', '.join(names)} "
                f"({STATE_NOTE})"
            )
        else:
            continue
        holds = f"holds checkpoint {held}" if held else "holds no checkpoint"
        now = (
            f"; a run{f' (pid {running})' if running else ''} holds the data dir now: verify "
            "again when it has stopped"
            if running is not None
            else ""
        )
        return (
            f"{path}: {holds} of app {app}, but {evidence}: a run was cut between two "
            f"tables' commits, or {table}' commits after checkpoint {held} were removed with "
            f"the dead letters they held; run the pipeline again to recover, then verify{now}"
        )
    return None
