"""The static checks run with the suite (so CI runs them): ruff, and mypy over the
whole package but the numba kernel modules (pyproject.toml [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT

BIN = Path(sys.executable).parent


def test_ruff_is_clean() -> None:
    done = subprocess.run(
        [str(BIN / "ruff"), "check", "--quiet", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy_follows_every_import_and_finds_nothing() -> None:
    done = subprocess.run(
        [str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout
