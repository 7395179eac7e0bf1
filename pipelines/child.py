"""The simulator as a child process of ``telepipe run`` (the demo needs no hardware)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig

_OWN_KEYS = ("aeron.dir=", "stats_file=", "ui=")


class SimulatorProcess:
    def __init__(
        self, process: subprocess.Popen[bytes], stats_path: Path, stderr_path: Path
    ) -> None:
        self.process = process
        self.stats_path = stats_path
        self.stderr_path = stderr_path

    @classmethod
    def start(cls, cfg: DictConfig, aeron_dir: str, overrides: list[str]) -> SimulatorProcess:
        """Start ``telepipe simulate`` with the run's overrides, on the run's driver."""
        workdir = Path(tempfile.mkdtemp(prefix="telepipe-sim-"))
        stats_path, stderr_path = workdir / "stats.json", workdir / "stderr.txt"
        passed = [o for o in overrides if not o.startswith(_OWN_KEYS)]
        command = [
            sys.executable,
            "-m",
            "telepipe.cli",
            "simulate",
            *passed,
            f"aeron.dir={aeron_dir}",
            f"stats_file={stats_path}",
            "ui=never",
        ]
        with open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ),
            )
        return cls(process, stats_path, stderr_path)

    def exited(self) -> bool:
        return self.process.poll() is not None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def error_line(self) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to stop (SIGTERM: it stops offering and writes its counters)."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def counters(self) -> dict[str, int]:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}
