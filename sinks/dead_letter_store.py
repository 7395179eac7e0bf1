"""The dead-letter store: the ``dead_letters`` Delta table of a data dir, and its audit log.

Pipelines append dead letters to ``<data_dir>/dead_letters`` (through their sink);
this module reads, lists, purges, deletes and puts them back, and verifies the
audit log. Ids are the letters' stable content ids (``telepipe.dead_letters``)
and may be abbreviated, as in git, to a unique prefix of at least ``MIN_PREFIX``
hex digits.

Every change is appended to ``<data_dir>/dead_letters/_audit.jsonl``
(``sinks.audit_log``; Delta ignores and never vacuums ``_`` files), authenticated
with the audit key kept outside the data dir, and sealing the table as the change
left it (``sinks.dead_letter_seal``); the table's commit of the change names the
entry's seq, so a log cut short is seen. ``verify`` checks the log, then the table's
rows and Delta log against the newest seal. Changes are refused while either does not
verify, and take the log's lock.

Running letters back through a pipeline (``dlq replay``, ``dlq resume``) is
``telepipe.pipelines.dlq``'s: it uses this store and the runner.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from telepipe.dead_letters import DeadLetter
from telepipe.errors import ConfigError, SinkError
from telepipe.schema import DEAD_LETTERS
from telepipe.sinks import data_dir_lock, dead_letter_seal
from telepipe.sinks.audit_log import AuditError, AuditKey, AuditLog, audit_key

TABLE = "dead_letters"
AUDIT_NAME = "_audit.jsonl"
MIN_PREFIX = 4
LISTED = [n for n in DEAD_LETTERS.names if n != "payload"]
_HEX = re.compile(r"[0-9a-f]+")


class DeadLetterStore:
    """The dead letters of one data dir: read, purge, replay; every change audited."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise ConfigError(f"--data-dir {self.data_dir}: no such directory")
        self.path = self.data_dir / TABLE
        self.audit = AuditLog(self.path / AUDIT_NAME, key=lambda: audit_key(self.data_dir))
        if not DeltaTable.is_deltatable(str(self.path)) and any(self.path.glob("*.parquet")):
            raise SinkError(f"{self.path} holds data files but no Delta log (_delta_log)")

    # -- reading ---------------------------------------------------------------

    def _read(self, columns: Sequence[str] | None = None, where: Any = None) -> pl.DataFrame:
        # Read with polars' native Delta scan: reading through deltalake's pyarrow dataset
        # sometimes aborts the interpreter at exit (delta-rs issue #2184).
        names = list(columns or DEAD_LETTERS.names)
        if not DeltaTable.is_deltatable(str(self.path)):
            empty = pa.schema([DEAD_LETTERS.field(n) for n in names]).empty_table()
            return cast(pl.DataFrame, pl.from_arrow(empty))
        damaged = self._damaged_file()
        if damaged is not None:  # polars would panic (a Rust panic printed to stderr)
            raise SinkError(
                f"cannot read dead letters in {self.path}: {damaged}; `telepipe dlq verify` "
                "checks the rest"
            )
        try:
            frame = pl.scan_delta(str(self.path)).select(names)
            return (frame.filter(where) if where is not None else frame).collect()
        except (DeltaError, OSError, pl.exceptions.PolarsError) as error:
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise SinkError(f"cannot read dead letters in {self.path}: {first}") from None
        except pl.exceptions.PanicException as error:  # a damaged data file (BaseException)
            first = (str(error).strip().splitlines() or ["panic"])[0]
            raise SinkError(
                f"cannot read dead letters in {self.path}: polars panicked ({first}); "
                "`telepipe dlq verify` names the damaged file"
            ) from None

    def _damaged_file(self) -> str | None:
        """A live data file missing or not the size its commit recorded (cheap: stat)."""
        try:
            live = dead_letter_seal.live_files(DeltaTable(str(self.path)))
        except (DeltaError, OSError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return f"cannot read its Delta log ({first})"
        for rel, size in sorted(live.items()):
            try:
                actual = (self.path / rel).stat().st_size
            except OSError:
                return f"data file {rel} is missing"
            if actual != size:
                return f"data file {rel} is {actual} bytes, its commit says {size}"
        return None

    def ids(self) -> list[str]:
        """Every distinct id in the store, sorted."""
        return sorted(set(self._read(["id"])["id"].to_list()))

    def resolve(self, ids: Iterable[str]) -> list[str]:
        """Full ids for ids or unique prefixes (in the order given, without repeats)."""
        given = list(ids)
        if not given:
            raise ConfigError("give at least one dead-letter id (see `telepipe dlq list`)")
        known = self.ids()
        resolved: list[str] = []
        for raw in given:
            text = raw.strip().lower()
            if not _HEX.fullmatch(text):
                raise ConfigError(f"{raw!r} is not a dead-letter id (ids are hex digits)")
            if len(text) < MIN_PREFIX:
                raise ConfigError(
                    f"id prefix {raw!r} is too short: give at least {MIN_PREFIX} hex digits"
                )
            matches = [k for k in known if k.startswith(text)]
            if not matches:
                raise ConfigError(f"no dead letter with id {raw} in {self.path}")
            if len(matches) > 1:
                shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
                raise ConfigError(
                    f"id prefix {raw} is ambiguous: {len(matches)} dead letters match ({shown})"
                )
            if not _HEX.fullmatch(matches[0]):  # never build a predicate from anything else
                raise SinkError(f"{self.path}: stored id {matches[0]!r} is not hex")
            if matches[0] not in resolved:
                resolved.append(matches[0])
        return resolved

    def rows(self, full_ids: Sequence[str]) -> list[dict[str, Any]]:
        """One row (all columns) per id, in the order given."""
        found: dict[str, dict[str, Any]] = {}
        for row in self._read(where=pl.col("id").is_in(list(full_ids))).to_dicts():
            found.setdefault(row["id"], row)
        return [found[i] for i in full_ids if i in found]

    def get(self, id: str) -> DeadLetter:
        """The dead letter with this id (or unique prefix); ConfigError if there is none."""
        full = self.resolve([id])
        rows = self.rows(full)
        if not rows:
            raise ConfigError(f"no dead letter with id {id} in {self.path}")
        row = rows[0]
        return DeadLetter(*(row[n] for n in DEAD_LETTERS.names if n != "id"))

    # -- changing --------------------------------------------------------------

    def delete(self, full_ids: Sequence[str], action: str, seq: int) -> int:
        assert full_ids and all(_HEX.fullmatch(i) for i in full_ids)
        predicate = "id IN (" + ", ".join(f"'{i}'" for i in full_ids) + ")"
        properties = CommitProperties(
            custom_metadata={"telepipe.dlq.action": action, "telepipe.dlq.audit_seq": str(seq)}
        )
        try:
            metrics = DeltaTable(str(self.path)).delete(predicate, commit_properties=properties)
        except (DeltaError, OSError) as error:
            raise SinkError(f"cannot delete dead letters in {self.path}: {error}") from None
        return int(metrics.get("num_deleted_rows", 0))

    def put_back(self, rows: Sequence[dict[str, Any]], seq: int) -> int:
        """Letters of the replay audited as entry ``seq`` that are not in the table again."""
        present = set(self.ids())
        missing = [r for r in rows if r["id"] not in present]
        if missing:
            table = pa.Table.from_pylist(missing, schema=DEAD_LETTERS)
            properties = CommitProperties(
                custom_metadata={
                    "telepipe.dlq.action": "put_back",
                    "telepipe.dlq.audit_seq": str(seq),
                }
            )
            write_deltalake(str(self.path), table, mode="append", commit_properties=properties)
        return len(missing)

    def prepare(self, ids: Iterable[str], confirm: bool, verb: str) -> list[str]:
        if not confirm:
            raise ConfigError(f"{verb} changes the store: add --confirm")
        given = list(ids)
        self.resolve(given)  # unknown ids fail before anything is locked or written
        return given

    def purge(self, ids: Iterable[str], confirm: bool, actor: str) -> dict[str, Any]:
        """Delete these dead letters; returns the audit entry."""
        given = self.prepare(ids, confirm, "purge")
        with data_dir_lock.hold(self.data_dir, "dlq purge"), self.audit.locked():
            seq = self.next_seq()  # also refuses a broken chain
            full = self.resolve(given)
            reasons = Counter(r["reason"] for r in self.rows(full))
            deleted = self.delete(full, "purge", seq)
            detail = {"rows": deleted, "reasons": dict(sorted(reasons.items()))}
            return self.record("purge", full, detail, actor)

    @property
    def key(self) -> AuditKey:
        """The audit key (created on first use: ``key.created``)."""
        key = self.audit.key
        assert key is not None
        return key

    def record(
        self, action: str, ids: Sequence[str], detail: dict[str, Any], actor: str
    ) -> dict[str, Any]:
        """Append an audit entry sealing the table as it is now."""
        try:
            table = dead_letter_seal.seal(self.path, self.key)
        except (dead_letter_seal.Damaged, DeltaError, OSError) as error:
            table = {"unsealed": str(error)}  # the entry still records the change
        return self.audit.append(action, ids, {**detail, "table": table}, actor)

    def next_seq(self) -> int:
        """The next entry's number; refused after a replay that never ended, and while
        the log or the table does not verify (a change would seal what it found)."""
        entries = self.audit.entries()
        if entries and entries[-1]["action"] == "replay_start":
            raise ConfigError(
                f"the dlq replay started at audit entry {len(entries)} did not end: finish it "
                f"first with `telepipe dlq resume --data-dir {self.data_dir}`"
            )
        problem = self.check_table(entries)
        if problem is not None:
            raise AuditError(f"{problem}; changes are refused until this is resolved")
        return len(entries) + 1

    def check_table(self, entries: Sequence[dict[str, Any]]) -> str | None:
        """The table's Delta log has no hole, its rows and Delta log are what the audit
        entries' newest seal and the commits since account for, and it holds the newest
        checkpoint the data dir's other tables and state files name (a commit removed
        with its letters leaves the log whole, the table behind the others)."""
        try:
            return (
                dead_letter_seal.log_gaps(self.path)
                or dead_letter_seal.check(self.path, self.key, entries)
                or dead_letter_seal.checkpoint_lag(
                    self.data_dir,
                    TABLE,
                    skip=self._replay_under_way(entries),
                    running=self._running(),
                )
            )
        except (DeltaError, OSError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return f"cannot check {self.path}: {first}"

    def _replay_under_way(self, entries: Sequence[dict[str, Any]]) -> list[str]:
        """The app id of the dlq replay the last entry started (its run may be mid-way)."""
        last = entries[-1] if entries else None
        if last is None or last["action"] != "replay_start" or not isinstance(last["detail"], dict):
            return []
        return [str(last["detail"].get("app_id", ""))]

    def _running(self) -> int | None:
        """The pid of another process holding the data dir (a run committing), if any."""
        try:
            pid = data_dir_lock.holder_pid(self.data_dir)
        except OSError:
            return None
        return None if pid is None or pid == os.getpid() else pid

    def deleted_at(self, seq: int) -> bool:
        """The replay audited as entry ``seq`` already took its letters out of the table."""
        history = (
            DeltaTable(str(self.path)).history() if DeltaTable.is_deltatable(str(self.path)) else []
        )
        return any(c.get("telepipe.dlq.audit_seq") == str(seq) for c in history)

    def consumed_positions(self, origin: str) -> dict[str, int]:
        """The positions (``stream:session`` -> position) of the last commit of a run
        over the input ``origin`` (a dlq replay's capture), none if it committed none."""
        try:
            for commit in DeltaTable(str(self.path)).history(limit=1000):
                if commit.get("telepipe.input") == origin and "telepipe.positions" in commit:
                    positions: dict[str, int] = json.loads(commit["telepipe.positions"])
                    return positions
        except (DeltaError, OSError, ValueError) as error:
            raise SinkError(f"cannot read the history of {self.path}: {error}") from None
        return {}

    def verify(self) -> tuple[bool, str | None]:
        """The audit log verifies (hash chain and MACs), no entry the table's history
        points at is missing (a chain alone cannot show that its last entries were cut
        off), and the table's rows and Delta log are what the entries account for."""
        ok, problem = self.audit.verify()
        if not ok:
            return ok, problem
        gap = dead_letter_seal.log_gaps(self.path)  # before Delta refuses the log
        if gap is not None:
            return False, gap
        entries = self.audit.entries()
        n = len(entries)
        anchored = self._audited_seq()
        if anchored > n:
            return False, (
                f"audit log {self.audit.path}: {n} entries, but the table's history has a "
                f"change audited as entry {anchored}: entries were removed"
            )
        if entries and entries[-1]["action"] == "replay_start" and not self._replaying():
            return False, (
                f"audit log {self.audit.path}: the replay started at entry {n} has no end "
                f"entry and none is running: it died (finish it: `telepipe dlq resume "
                f"--data-dir {self.data_dir}`), or its end entry was removed"
            )
        problem = self.check_table(entries)
        if problem is not None:
            return False, problem
        return True, None

    def _replaying(self) -> bool:
        """Another dlq command holds the store's lock (a replay in progress)."""
        try:
            with self.audit.locked():
                return False
        except AuditError:
            return True

    def _audited_seq(self) -> int:
        """The newest audit entry a commit of the table names (0: none)."""
        if not DeltaTable.is_deltatable(str(self.path)):
            return 0
        try:
            history = DeltaTable(str(self.path)).history()
        except (DeltaError, OSError) as error:
            raise SinkError(f"cannot read the history of {self.path}: {error}") from None
        seqs = [int(c["telepipe.dlq.audit_seq"]) for c in history if "telepipe.dlq.audit_seq" in c]
        return max(seqs, default=0)

    def list(self, reason: str | None = None, limit: int | None = None) -> pl.DataFrame:
        """Dead letters (oldest first), without payloads but with ``payload_bytes``."""
        if limit is not None and limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {limit}")
        frame = self._read([*LISTED, "payload"])
        frame = frame.with_columns(payload_bytes=pl.col("payload").bin.size()).drop("payload")
        if reason is not None:
            frame = frame.filter(pl.col("reason") == reason)
        frame = frame.sort(["received_ns", "stream_id", "session_id", "position", "id"])
        frame = frame.unique("id", keep="first", maintain_order=True)  # a row late at two steps
        return frame.head(limit) if limit is not None else frame
