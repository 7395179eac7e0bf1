"""The Aeron files telepipe makes (term buffers hold every message; ``cnc.dat`` lets a
process talk to the driver) are reachable by their owner only, and go with it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from helpers import ROOT, Watched

from telepipe.aeron import AeronConnection


def test_an_embedded_driver_lives_in_a_private_directory_removed_after() -> None:
    connection = AeronConnection()
    driver = Path(connection.dir)
    try:
        assert driver.parent.stat().st_mode & 0o777 == 0o700
        assert (driver / "cnc.dat").exists()
    finally:
        connection.close()
    assert not driver.parent.exists()


def test_telepipe_driver_makes_files_for_its_owner_only(tmp_path: Path) -> None:
    aeron_dir = Path("/dev/shm" if Path("/dev/shm").is_dir() else tmp_path) / f"tpf-{os.getpid()}"
    driver = Watched(
        [sys.executable, "-m", "telepipe", "driver", "--dir", str(aeron_dir)], cwd=ROOT
    )
    try:
        driver.wait_for(f"aeron.dir={aeron_dir}", stream="stdout")
        assert aeron_dir.stat().st_mode & 0o077 == 0
        assert (aeron_dir / "cnc.dat").stat().st_mode & 0o077 == 0
        driver.process.terminate()
        driver.finish()
    finally:
        if driver.process.poll() is None:
            driver.process.kill()
    assert driver.process.returncode == 0
    assert not aeron_dir.exists()
