"""Checks of the config's top-level keys (the ones no ``_target_`` dataclass owns).

``load`` runs them on every composed config, so ``telepipe validate`` refuses what
``run``, ``replay``, ``simulate`` or ``bench`` would, with the same one line, and a
bad value never reaches the code that would fail on it with a traceback (or, worse,
after a whole run).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from telepipe.errors import ConfigError

_UI = ("auto", "always", "never")


def check_top_level(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` (one line, naming the key) for a bad top-level value."""
    _count(cfg, "limit.readings")
    _seconds(cfg, "limit.idle_s")
    ui = _get(cfg, "ui")
    if ui is not None and ui not in _UI:
        raise ConfigError(f"ui must be one of {', '.join(_UI)}, got {ui!r}")
    port = _get(cfg, "metrics.port")
    if port is not None and (not _is_int(port) or not 1 <= port <= 65535):
        raise ConfigError(f"metrics.port must be a TCP port 1-65535 (or null), got {port!r}")
    for key in ("stats_file", "bench.out"):
        path = _get(cfg, key)
        if path is not None:
            _writable_file(str(path), key)
    if OmegaConf.select(cfg, "data_dir", default="unset") is None:
        raise ConfigError("data_dir must be a directory path, got null")
    data_dir = _get(cfg, "data_dir")
    for key in ("data_dir", "capture_dir"):  # '' is the current directory: never meant
        value = _get(cfg, key)
        if value is not None and not str(value).strip():
            raise ConfigError(f"{key} must be a directory path, got {value!r}")
        if value is not None:
            _writable_dir(str(value), key)
    if data_dir is not None and Path(str(data_dir)).exists() and not Path(str(data_dir)).is_dir():
        raise ConfigError(f"data_dir={data_dir} exists and is not a directory")
    for key in ("replay.follow", "drain", "fresh"):
        flag = _get(cfg, key)
        if flag is not None and not isinstance(flag, bool):
            raise ConfigError(f"{key} must be true or false, got {flag!r}")


def _writable_file(raw: str, key: str) -> None:
    """A file the run writes at its end: refused now if it cannot be (too late then)."""
    path = Path(raw)
    if not raw.strip():
        raise ConfigError(f"{key} must be a file path, got {raw!r}")
    if path.is_dir():
        raise ConfigError(f"{key}={raw} is a directory, not a file to write")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={raw}: cannot be written ({parent} is not a writable directory)")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{key}={raw}: cannot be written (permission denied)")


def _writable_dir(raw: str, key: str) -> None:
    """A directory the run writes (or makes): refused now if it cannot be, before a
    data dir or its lock is made (a read-only capture_dir failed after both)."""
    path = Path(raw)
    while not path.exists() and path != path.parent:
        path = path.parent
    if path.exists() and not path.is_dir():
        if path == Path(raw):
            return  # a file where the dir goes: the caller's own line says so
        raise ConfigError(f"{key}={raw}: cannot be made ({path} is not a directory)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={raw}: cannot be written ({path} is not a writable directory)")


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is not None and (not _is_int(value) or value < 1):
        raise ConfigError(f"{key} must be a whole number >= 1 (or null), got {value!r}")


def _seconds(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number of seconds > 0 (or null), got {value!r}")
    if value <= 0:
        raise ConfigError(f"{key} must be a number of seconds > 0 (or null), got {value!r}")
