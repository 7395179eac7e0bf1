"""A run's recorder that fails (its capture's disk full) ends the run in one line, exit 1,
after the run committed what it read: the capture missing part of it is never silent
(it was: exit 0, nothing said, 17 of 49 messages captured; found by review)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from helpers import ROOT


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, nearly full (skipped where mounting is not allowed)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        (mount / "fill").write_bytes(bytes(1_700_000))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_recorder_on_a_full_disk_fails_the_run_after_its_commits(
    tiny: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "telepipe.cli", "run", "limit.readings=50000",
         f"data_dir={data_dir}", f"capture_dir={tiny / 'capture'}", "ui=never"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("telepipe: error:")]
    assert "the recorder failed" in line and "No space left on device" in line
    assert "Traceback" not in done.stderr
    assert pl.read_delta(str(data_dir / "readings")).height > 0
