"""Connecting to Aeron: an embedded media driver by default, or an external one by dir.

On 2 cores a busy-spinning poll loop starves the driver's thread, so every loop
here idles with Aeron's backoff strategy (spin a little, yield, then park).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pyaeron

from telepipe.errors import ConfigError, SourceError


@dataclass(frozen=True)
class AeronOptions:
    """Where the media driver is.

    ``dir`` None starts an embedded C media driver in a fresh directory (under
    /dev/shm when it exists); otherwise it names the directory of a running
    driver (``telepipe driver``, ``aeronmd``), as ``aeron.dir`` does in Java.
    """

    dir: str | None = None
    driver_timeout_s: float = 10.0
    max_park_us: int = 1000

    def __post_init__(self) -> None:
        if self.driver_timeout_s <= 0:
            raise ConfigError(f"aeron.driver_timeout_s must be > 0, got {self.driver_timeout_s}")
        if self.max_park_us < 1:
            raise ConfigError(f"aeron.max_park_us must be >= 1, got {self.max_park_us}")


_CHANNEL = re.compile(r"^(aeron-spy:)?aeron:(ipc|udp)(\?.*)?$")


def is_channel(channel: object, spy: bool = False) -> bool:
    """An Aeron channel URI of a medium the driver has: ``aeron:ipc``, ``aeron:udp?...``
    (and ``aeron-spy:`` before either, with ``spy``). The driver checks the parameters."""
    match = _CHANNEL.match(channel) if isinstance(channel, str) else None
    return match is not None and (spy or match.group(1) is None)


def error_line(error: BaseException) -> str:
    """An Aeron error (a stack of C call sites, the innermost first) as one line: its
    first line, then the first two reasons that say more than an error code."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    reasons = []
    for line in lines[1:]:
        text = line.split("] ", 1)[1].strip() if "] " in line else ""
        if text and not _GENERIC.search(text) and text not in reasons:
            reasons.append(text)
    return f"{first}: {'; '.join(reasons[:2])}" if reasons else first


_GENERIC = re.compile(r"^\(-?\d+\)|registration error$")


def _shm_root() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def start_driver(directory: str | None = None) -> pyaeron.MediaDriver:
    """Start an embedded media driver (one shared thread) that cleans up its directory.

    A ``directory`` given must be new or an Aeron directory no driver runs in: the
    driver deletes it at start and at shutdown, so anything else is refused.
    """
    if directory is not None:
        _check_driver_dir(Path(directory))
    else:
        _remove_stale_dirs(Path(_shm_root()))
    directory = directory or tempfile.mkdtemp(prefix=_PREFIX, dir=_shm_root())
    return pyaeron.MediaDriver(
        dir=directory,
        dir_delete_on_start=True,
        dir_delete_on_shutdown=True,
        threading="shared",
    )


_PREFIX = "telepipe-aeron-"


def _remove_stale_dirs(root: Path) -> None:
    """Embedded drivers' dirs left by killed runs (a driver deletes its own at shutdown):
    those a minute old whose driver is not running. Each holds its term buffers."""
    for path in root.glob(_PREFIX + "*"):
        try:
            if time.time() - path.stat().st_mtime < 60:
                continue
            if (path / "cnc.dat").exists() and pyaeron.is_driver_active(str(path), 1000):
                continue
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _check_driver_dir(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"driver dir {path} exists and is not a directory")
    if (path / "cnc.dat").exists() and pyaeron.is_driver_active(str(path), 1000):
        raise ConfigError(f"driver dir {path}: a media driver is already running there")
    if any(path.iterdir()) and not (path / "cnc.dat").exists():
        raise ConfigError(
            f"driver dir {path} is not an Aeron directory (no cnc.dat) and not empty: "
            "the driver would delete it; give a new path"
        )


def idle_strategy(options: AeronOptions) -> pyaeron.IdleStrategy:
    return pyaeron.IdleStrategy.backoff(max_park_ns=options.max_park_us * 1000)


class AeronConnection:
    """An Aeron client, and the embedded driver it owns when no ``dir`` is given."""

    def __init__(self, options: AeronOptions | None = None) -> None:
        self.options = options or AeronOptions()
        self.driver: pyaeron.MediaDriver | None = None
        if self.options.dir is None:
            self.driver = start_driver()
            directory = self.driver.dir
        else:
            directory = self.options.dir
            timeout_ms = int(self.options.driver_timeout_s * 1000)
            if not pyaeron.is_driver_active(directory, timeout_ms):
                raise ConfigError(f"aeron.dir={directory}: no Aeron media driver is running there")
        try:
            self.client = pyaeron.Aeron(dir=directory)
        except pyaeron.AeronError as error:
            self._close_driver()
            raise SourceError(
                f"cannot connect to the Aeron driver in {directory}: {error_line(error)}"
            ) from error
        self.dir: str = directory

    def close(self) -> None:
        if not self.client.is_closed:
            self.client.close()
        self._close_driver()

    def _close_driver(self) -> None:
        if self.driver is not None:
            self.driver.close()
            self.driver = None

    def __enter__(self) -> AeronConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
