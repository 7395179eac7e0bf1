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
    driver deletes it at start and at shutdown, so anything else is refused. Without
    one the driver's directory goes inside a fresh 0700 directory: the driver makes
    its files 0644 under the usual umask, and its term buffers (every message) and
    ``cnc.dat`` were readable by any local user.
    """
    if directory is not None:
        _check_driver_dir(Path(directory))
    else:
        _remove_stale_dirs(Path(_shm_root()))
        directory = os.path.join(tempfile.mkdtemp(prefix=_PREFIX, dir=_shm_root()), _NESTED)
    return pyaeron.MediaDriver(
        dir=directory,
        dir_delete_on_start=True,
        dir_delete_on_shutdown=True,
        threading="shared",
    )


def remove_private_parent(directory: str) -> None:
    """After a driver of ``start_driver()`` closed (it deletes its own directory):
    the private directory around it."""
    path = Path(directory)
    if path.name == _NESTED and path.parent.name.startswith(_PREFIX):
        shutil.rmtree(path.parent, ignore_errors=True)


_PREFIX = "telepipe-aeron-"
_NESTED = "driver"


def _remove_stale_dirs(root: Path) -> None:
    """Embedded drivers' dirs left by killed runs (a driver deletes its own at shutdown):
    those a minute old whose driver is not running. Each holds its term buffers."""
    for path in root.glob(_PREFIX + "*"):
        try:
            if time.time() - path.stat().st_mtime < 60:
                continue
            driver = path / _NESTED if (path / _NESTED).is_dir() else path
            if (driver / "cnc.dat").exists() and pyaeron.is_driver_active(str(driver), 1000):
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
    """An Aeron client, and the embedded driver it owns when no ``dir`` is given.

    The client's errors come to ``_on_error``, not Aeron's default handler, which
    prints them and calls ``exit()``: a driver killed under a run ended it with one
    Aeron line, no stats, its children left running. A lost driver closes the client;
    ``check`` then raises one line saying so, and the run ends as on any failure.
    """

    def __init__(self, options: AeronOptions | None = None) -> None:
        self.options = options or AeronOptions()
        self.driver: pyaeron.MediaDriver | None = None
        self.errors: list[str] = []  # what the client reported, newest last
        if self.options.dir is None:
            self.driver = start_driver()
            directory = self.driver.dir
        else:
            directory = self.options.dir
            timeout_ms = int(self.options.driver_timeout_s * 1000)
            if not pyaeron.is_driver_active(directory, timeout_ms):
                raise ConfigError(f"aeron.dir={directory}: no Aeron media driver is running there")
        try:
            context = pyaeron.Context(
                dir=directory,
                error_handler=self._on_error,
                driver_timeout_ms=int(self.options.driver_timeout_s * 1000),
            )
            self.client = pyaeron.Aeron(context=context)
        except pyaeron.AeronError as error:
            self._close_driver()
            raise SourceError(
                f"cannot connect to the Aeron driver in {directory}: {error_line(error)}"
            ) from error
        self.dir: str = directory

    def _on_error(self, code: int, message: str) -> None:
        """The client conductor's thread: keep it (a few); never raise into C."""
        del self.errors[:-7]
        self.errors.append(f"{message} ({code})" if message else f"error {code}")

    def check(self) -> None:
        """Raise ``SourceError`` (one line) once the client closed under us: its driver
        stopped answering (killed, or stalled beyond ``aeron.driver_timeout_s``)."""
        if self.client.is_closed:
            said = self.errors[-1] if self.errors else "no error reported"
            raise SourceError(
                f"the Aeron media driver in {self.dir} stopped answering ({said}); "
                "what was committed stays, restart the run once a driver runs"
            )

    def close(self) -> None:
        if not self.client.is_closed:
            self.client.close()
        self._close_driver()

    def _close_driver(self) -> None:
        if self.driver is not None:
            directory = self.driver.dir
            self.driver.close()
            self.driver = None
            remove_private_parent(directory)

    def __enter__(self) -> AeronConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
