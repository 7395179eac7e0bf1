"""The fixtures of the dead-letter tests, as a pytest plugin (``pytest_plugins =
["dead_letter_fixtures"]``): the audit key in a tmp dir (autouse: never the user's), the
demo pipeline's data dir made once per module from ``dead_letter_data.messages()``, and
a copy of it per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dead_letter_data import replayed_into

from telepipe.sinks.audit_log import KEY_ENV
from telepipe.sinks.dead_letter_store import DeadLetterStore


@pytest.fixture(autouse=True)
def audit_key_file(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The audit key in a tmp dir, for this process and the CLI processes it starts."""
    path = tmp_path_factory.mktemp("audit_key") / "telepipe" / "audit.key"
    monkeypatch.setenv(KEY_ENV, str(path))
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """``messages()`` replayed into a data dir once per module; the end of each."""
    return replayed_into(tmp_path_factory.mktemp("dlq"))


@pytest.fixture
def store(pristine: tuple[Path, list[int]], tmp_path: Path) -> DeadLetterStore:
    """A copy of the pristine data dir for one test."""
    shutil.copytree(pristine[0], tmp_path / "data")
    return DeadLetterStore(tmp_path / "data")
