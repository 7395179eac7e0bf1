"""One writer per data dir: ``hold(data_dir)`` takes an exclusive lock for a run, a
replay or a dlq change, and refuses (one line) while another process holds it.

Two replays into one data dir each see the same checkpoints at start and then
commit the same rows twice; Delta's conflict check does not catch blind appends.
The lock is ``flock`` on ``<data_dir>/.telepipe.lock``: released when its holder exits,
however it exits, so a killed run never leaves the directory locked. It is
re-entrant within a process (a ``dlq replay`` runs the pipeline under its own hold).

The lock alone is not enough: deleting the lock file lets a second process lock a
new file beside the first. So each hold also takes a writer epoch: the counter in
``<data_dir>/.telepipe.epoch``, incremented under its own ``flock``, written with a
random token of this hold. The Delta sink records its epoch in every commit and
refuses to commit once the file names another holder (``holder_of``,
``current_holder``): the newest writer wins, an older one stops in one line (fencing,
as a ZooKeeper/Kafka epoch does). Comparing the token, not the number, keeps this
sound when the epoch file is deleted too (the counter then restarts at 1, below the
running writer's): a writer that finds the file gone or naming another holder stops.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from telepipe.errors import ConfigError

LOCK_NAME = ".telepipe.lock"
EPOCH_NAME = ".telepipe.epoch"

_held: dict[str, int] = {}  # resolved data dir -> holds in this process
# resolved data dir -> (epoch, token) this process holds it with
_epochs: dict[str, tuple[int, str]] = {}


class Busy(Exception):
    """Another process holds the lock."""


def open_regular(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of a regular file that telepipe owns in a data dir: never through a
    symlink (a planted one made the lock's pid clobber its target) nor on a FIFO or a
    device (opening a FIFO blocked every command on the data dir). OSError otherwise."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def flocked(path: Path, stack: contextlib.ExitStack) -> BinaryIO:
    """Take an exclusive ``flock`` on ``path`` (created if missing) until ``stack``
    closes; ``Busy`` if another process holds it, ``OSError`` if it cannot be opened."""
    fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    lock = stack.enter_context(os.fdopen(fd, "ab"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise Busy(str(path)) from None
    return lock


_PID_MAX = 1 << 22  # Linux's highest pid_max


def holder_pid(data_dir: str | os.PathLike[str]) -> int | None:
    """The process holding ``data_dir`` (None: nobody holds it; 0: someone does but its
    lock file does not name a process). Its lock file names the holder; the lock itself
    says whether anyone still holds it. OSError if the lock file cannot be read."""
    try:
        fd = open_regular(Path(data_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raw = f.read(32).strip()
            pid = int(raw) if raw.isdigit() else 0
            return pid if 0 < pid < _PID_MAX else 0
        return None


@contextlib.contextmanager
def hold(data_dir: str | os.PathLike[str], what: str = "this command") -> Iterator[None]:
    root = Path(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"data_dir={root}: cannot create it ({error.strerror})") from None
    key = str(root.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    with contextlib.ExitStack() as stack:
        try:
            lock = flocked(root / LOCK_NAME, stack)
            os.ftruncate(lock.fileno(), 0)  # the holder's pid, for telepipe stop
            lock.write(f"{os.getpid()}\n".encode())
            lock.flush()
        except Busy:
            raise ConfigError(
                f"data_dir={root}: another telepipe process is writing it; {what} waits for "
                "it to end (one writer per data dir)"
            ) from None
        except OSError as error:
            raise ConfigError(f"data_dir={root}: cannot open its lock ({error.strerror})") from None
        try:
            holder = _next_epoch(root)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"data_dir={root}: cannot take a writer epoch in {EPOCH_NAME} ({error})"
            ) from None
        _held[key], _epochs[key] = 1, holder
        try:
            yield
        finally:
            del _held[key], _epochs[key]


def holder_of(data_dir: str | os.PathLike[str]) -> tuple[int, str] | None:
    """The writer epoch and token this process holds ``data_dir`` with (None: not held here)."""
    return _epochs.get(str(Path(data_dir).resolve()))


def epoch_of(data_dir: str | os.PathLike[str]) -> int | None:
    """The writer epoch this process holds ``data_dir`` with (None: not held here)."""
    holder = holder_of(data_dir)
    return None if holder is None else holder[0]


def current_holder(data_dir: str | os.PathLike[str]) -> tuple[int, str] | None:
    """The newest writer epoch taken in ``data_dir`` and its token (None: no epoch file)."""
    try:
        fd = open_regular(Path(data_dir) / EPOCH_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        return _parse(f.read())


def _parse(raw: bytes) -> tuple[int, str]:
    """``epoch token`` (a file of 0.2.0.dev0 holds the epoch alone: token ``""``)."""
    epoch, _, token = raw.decode("ascii").strip().partition(" ")
    return int(epoch or 0), token.strip()


def _next_epoch(root: Path) -> tuple[int, str]:
    with os.fdopen(open_regular(root / EPOCH_NAME, os.O_RDWR | os.O_CREAT), "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # brief: held by whoever increments it
        f.seek(0)
        epoch = _parse(f.read())[0] + 1
        token = secrets.token_hex(8)
        f.seek(0)
        f.truncate()
        f.write(f"{epoch} {token}\n".encode())
        f.flush()
        os.fsync(f.fileno())
        return epoch, token
