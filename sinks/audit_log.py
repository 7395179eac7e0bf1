"""An append-only, hash-chained, keyed audit log: one JSON line per entry, fsynced::

    {"seq", "time", "actor", "action", "ids", "detail", "prev", "key_id", "mac", "hash"}

``mac``: HMAC-SHA256, under the audit key, of the canonical JSON (sorted keys, no
spaces, ASCII) of the entry without ``mac`` and ``hash``; ``key_id`` names the key
(not secret). ``hash``: SHA-256 of the canonical JSON of the entry without ``hash``;
``prev``: the previous entry's hash (64 zeros first). A hash chain alone has no
secret: whoever edits an entry can recompute every hash after it. The MAC needs the
key, kept outside the data dir (``audit_key``): an entry edited, forged or moved is
caught there. Removing whole entries from the end needs the head kept elsewhere
(the dead-letter store names each change's entry in its table's commits). Entries
written before keys existed (no ``key_id``/``mac``) are accepted only as a prefix
and reported as unauthenticated. Appends are refused while the log does not verify;
``locked()`` makes one change exclusive.

The key: ``$TELEPIPE_AUDIT_KEY_FILE``, else ``$XDG_CONFIG_HOME/telepipe/audit.key``,
else ``~/.config/telepipe/audit.key``; 32 random bytes as hex, created with mode 0600
on first use; refused if others may read it or if it lies inside the data dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from telepipe.errors import TelepipeError
from telepipe.sinks import data_dir_lock

LOCK_NAME = "_audit.lock"  # beside the log
GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "ids", "detail", "prev", "hash")
KEYED_FIELDS = (*FIELDS, "key_id", "mac")
KEY_ENV = "TELEPIPE_AUDIT_KEY_FILE"
KEY_BYTES = 32


class AuditError(TelepipeError):
    """The audit log does not verify, or another command holds its lock."""


class AuditKeyError(AuditError):
    """The audit key file cannot be found, made, read or trusted."""


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


@dataclass(frozen=True)
class AuditKey:
    """The secret that authenticates audit entries (and the dead-letter store's seals)."""

    secret: bytes
    path: Path
    created: bool = False

    @property
    def id(self) -> str:
        """Names the key in each entry (a MAC of a constant: it reveals nothing)."""
        return hmac.new(self.secret, b"telepipe audit key id", hashlib.sha256).hexdigest()[:16]

    def mac(self, data: bytes) -> str:
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def entry_mac(self, entry: dict[str, Any]) -> str:
        return self.mac(canonical({k: v for k, v in entry.items() if k not in ("mac", "hash")}))


def key_path() -> Path:
    """Where the audit key is: ``$TELEPIPE_AUDIT_KEY_FILE``, else the user's config dir."""
    given = os.environ.get(KEY_ENV)
    if given is not None:
        if not given.strip():
            raise AuditKeyError(f"{KEY_ENV} is set but empty: name the audit key file")
        return Path(given).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or ""
    base = Path(config) if Path(config).is_absolute() else Path.home() / ".config"
    return base / "telepipe" / "audit.key"


def audit_key(data_dir: str | os.PathLike[str] | None = None) -> AuditKey:
    """The audit key, created (mode 0600) if there is none yet. Refused inside
    ``data_dir`` (whoever can change the data could then forge entries) and when other
    users may read or change it."""
    path = key_path()
    if data_dir is not None:
        root = Path(data_dir).resolve()
        resolved = path.resolve()
        if resolved == root or root in resolved.parents:
            raise AuditKeyError(
                f"audit key {path} is inside the data dir {data_dir}: keep it outside "
                f"(set {KEY_ENV})"
            )
    created = False
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    except OSError as error:
        raise AuditKeyError(f"cannot create audit key {path}: {error.strerror}") from None
    else:
        try:
            os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        created = True
    return AuditKey(_read_key(path), path, created)


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        raise AuditKeyError(f"cannot read audit key {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AuditKeyError(f"audit key {path} is not a regular file")
        if info.st_mode & 0o077:
            raise AuditKeyError(
                f"audit key {path} may be read or changed by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}"
            )
        if info.st_uid != os.getuid():
            raise AuditKeyError(f"audit key {path} belongs to another user (uid {info.st_uid})")
        raw = f.read(4 * KEY_BYTES).strip()
    try:
        secret = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) != KEY_BYTES:
        raise AuditKeyError(f"audit key {path} is not {2 * KEY_BYTES} hex digits")
    return secret


KeySource = AuditKey | Callable[[], AuditKey]


class AuditLog:
    """An append-only, hash-chained JSON-lines log whose entries carry a MAC."""

    def __init__(self, path: str | os.PathLike[str], key: KeySource | None = None) -> None:
        """``key``: the audit key, or a callable giving it when first needed (None:
        entries cannot be appended, and their MACs are not checked)."""
        self.path = Path(path)
        self._key = key

    @property
    def key(self) -> AuditKey | None:
        if callable(self._key):
            self._key = self._key()
        return self._key

    @property
    def loaded_key(self) -> AuditKey | None:
        """The key if it was needed so far (None: not yet)."""
        return None if callable(self._key) else self._key

    def _walk(self) -> tuple[list[dict[str, Any]], str | None]:
        """The valid entries up to the first broken one, and what broke (None: intact)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], None
        except OSError as error:
            raise AuditError(f"cannot read audit log {self.path}: {error.strerror}") from None
        key = self.key
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        entries: list[dict[str, Any]] = []
        prev = GENESIS
        keyed = False
        for n, line in enumerate([*complete, tail] if tail else complete, start=1):
            where = f"audit log {self.path}: entry {n}"
            if n > len(complete):
                return entries, f"{where}: truncated (the last line has no end)"
            try:
                entry = json.loads(line)
            except ValueError:
                return entries, f"{where}: not a JSON entry (edited or damaged)"
            if not isinstance(entry, dict) or set(entry) not in (set(FIELDS), set(KEYED_FIELDS)):
                return entries, f"{where}: not an audit entry (fields {KEYED_FIELDS} expected)"
            if entry["seq"] != n:
                return entries, (
                    f"{where}: found seq {entry['seq']} (entries deleted, inserted or reordered)"
                )
            if entry["prev"] != prev:
                return entries, f"{where}: prev is not the hash of entry {n - 1} (chain broken)"
            if entry["hash"] != entry_hash(entry):
                return entries, f"{where}: hash does not match its content (entry edited)"
            if "mac" not in entry:
                if keyed:
                    return entries, (
                        f"{where}: has no MAC after authenticated entries (forged, or its "
                        "MAC removed)"
                    )
            elif key is not None:
                if entry["key_id"] != key.id:
                    return entries, (
                        f"{where}: authenticated with another audit key (id {entry['key_id']}; "
                        f"{key.path} is {key.id}): verify with that key ({KEY_ENV})"
                    )
                if not hmac.compare_digest(str(entry["mac"]), key.entry_mac(entry)):
                    return entries, (
                        f"{where}: MAC does not match its content (edited, or forged without "
                        "the audit key)"
                    )
            keyed = keyed or "mac" in entry
            entries.append(entry)
            prev = entry["hash"]
        return entries, None

    def entries(self) -> list[dict[str, Any]]:
        """Every entry; an AuditError if the log does not verify."""
        entries, problem = self._walk()
        if problem is not None:
            raise AuditError(problem)
        return entries

    def verify(self) -> tuple[bool, str | None]:
        """(True, None) if the log verifies, else (False, the first broken entry and why).
        Entries written before keys existed are accepted as a prefix only if an
        authenticated entry follows (its MAC covers their hashes through ``prev``)."""
        entries, problem = self._walk()
        if problem is None and self.unauthenticated(entries) == len(entries) and entries:
            problem = (
                f"audit log {self.path}: entries 1-{len(entries)} carry no MAC: "
                "unauthenticated (written before audit keys, or their MACs removed); the "
                "next change authenticates them as they are now"
            )
        return problem is None, problem

    @staticmethod
    def unauthenticated(entries: Sequence[dict[str, Any]]) -> int:
        """How many leading entries carry no MAC (written before audit keys)."""
        return next((k for k, e in enumerate(entries) if "mac" in e), len(entries))

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the last one) of an intact log."""
        entries = self.entries()
        return len(entries), entries[-1]["hash"] if entries else GENESIS

    def next_seq(self) -> int:
        return len(self.entries()) + 1

    def append(self, action: str, ids: Sequence[str], detail: dict[str, Any], actor: str) -> dict:
        """Append one authenticated entry (fsynced before return); refused if the log
        does not verify."""
        key = self.key
        if key is None:
            raise AuditError(f"audit log {self.path}: no audit key to authenticate entries")
        try:
            entries, problem = self._walk()
            if problem is not None:
                raise AuditError(f"{problem}; changes are refused until the log is repaired")
            entry: dict[str, Any] = {
                "seq": len(entries) + 1,
                "time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "actor": actor,
                "action": action,
                "ids": list(ids),
                "detail": detail,
                "prev": entries[-1]["hash"] if entries else GENESIS,
                "key_id": key.id,
            }
            entry["mac"] = key.entry_mac(entry)
            entry["hash"] = entry_hash(entry)
            created = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(canonical(entry) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            if created:  # the new file's directory entry too
                fd = os.open(self.path.parent, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            return entry
        except OSError as error:
            raise AuditError(f"cannot append to audit log {self.path}: {error}") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive for one mutation; another command changing the store is refused."""
        lock_path = self.path.with_name(LOCK_NAME)
        with contextlib.ExitStack() as stack:
            try:
                data_dir_lock.flocked(lock_path, stack)
            except data_dir_lock.Busy:
                raise AuditError(
                    f"another dlq command is changing {self.path.parent}; try again later"
                ) from None
            except OSError as error:
                raise AuditError(f"cannot open {lock_path}: {error.strerror}") from None
            yield
