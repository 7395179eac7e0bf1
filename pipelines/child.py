"""Child processes of ``telepipe run``: the simulator (the demo needs no hardware) and a
recorder that captures the stream the run reads (``capture_dir=``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from telepipe import signals
from telepipe.errors import SourceError

_OWN_KEYS = ("aeron.dir=", "stats_file=", "ui=")
# Set in a child's environment: the pid it must not outlive (see telepipe.cli).
PARENT_ENV = "TELEPIPE_PARENT_PID"


def _child_env() -> dict[str, str]:
    return {**os.environ, PARENT_ENV: str(os.getpid())}


_SCRATCH = "telepipe-sim-"


def _remove_stale_scratch(root: Path) -> None:
    """Simulators' scratch dirs (their counters) left by runs that were killed: those
    whose run (the pid in the name) is gone, a minute or more old."""
    for path in root.glob(_SCRATCH + "*"):
        pid = path.name[len(_SCRATCH) :].split("-", 1)[0]
        try:
            if time.time() - path.stat().st_mtime < 60:
                continue
            if pid.isdigit():
                os.kill(int(pid), 0)
                continue  # its run is alive
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


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
        _remove_stale_scratch(Path(tempfile.gettempdir()))
        workdir = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH}{os.getpid()}-"))
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
        with open(stderr_path, "wb") as err, signals.children_spared():
            process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=_child_env(),
                process_group=0,  # a terminal's Ctrl-C is the run's to handle
            )
        return cls(process, stats_path, stderr_path)

    def exited(self) -> bool:
        return self.process.poll() is not None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def failure(self) -> str:
        """One line: how it ended, and the last thing it said (if anything)."""
        code = self.returncode
        how = f"exited with code {code}"
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        said = self.error_line()
        return f"the simulator {how}: {said}" if said else f"the simulator {how}, saying nothing"

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
        """The simulator's counters (once it stopped); removes its scratch directory."""
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}
        finally:
            if self.process.poll() is not None:
                shutil.rmtree(self.stats_path.parent, ignore_errors=True)


class CaptureProcess:
    """``telepipe capture`` on the run's driver: records exactly the stream the run reads."""

    def __init__(self, process: subprocess.Popen[str], out: Path) -> None:
        self.process = process
        self.out = out
        self.error: str | None = None  # set by ``stop`` when it had failed: the run says so

    @classmethod
    def start(cls, aeron_dir: str, channel: str, stream_id: int, out: str) -> CaptureProcess:
        command = [
            sys.executable, "-m", "telepipe.cli", "capture", f"aeron.dir={aeron_dir}",
            f"channel={channel}", f"stream={stream_id}", f"out={out}",
        ]  # fmt: skip
        with signals.children_spared():
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, text=True, env=_child_env(),
                process_group=0,  # a terminal's Ctrl-C is the run's to handle
            )  # fmt: skip
        assert process.stderr is not None
        # Wait until it subscribed, so it records from the first frame the run reads.
        said = ""
        for line in process.stderr:
            if "telepipe capture: recording" in line:
                return cls(process, Path(out))
            said = line.strip() or said
        process.wait()
        why = said.removeprefix("telepipe: error: ")
        raise SourceError(
            f"capture_dir={out}: the recorder exited {process.returncode}"
            + (f": {why}" if why else "")
        )

    def exited(self) -> bool:
        return self.process.poll() is not None

    def failure(self) -> str:
        """One line: the recorder ended early or failed, and its last word."""
        try:
            _, err = self.process.communicate(timeout=5.0)
        except (subprocess.TimeoutExpired, ValueError):
            err = ""
        lines = [ln.strip() for ln in (err or "").splitlines() if ln.strip()]
        said = lines[-1].removeprefix("telepipe: error: ") if lines else "it said nothing"
        return (
            f"capture_dir={self.out}: the recorder stopped (exit {self.process.returncode}): "
            f"{said}; the capture misses what the run read after that"
        )

    def _size(self) -> int:
        return sum(f.stat().st_size for f in self.out.glob("*") if f.is_file())

    def stop(self, settle_s: float = 0.5, timeout: float = 30.0) -> None:
        """Stop once the capture stopped growing (it has caught up), then SIGTERM it."""
        deadline = time.monotonic() + timeout
        size, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline and self.process.poll() is None:
            now_size = self._size()
            if now_size != size:
                size, stable_since = now_size, time.monotonic()
            elif time.monotonic() - stable_since >= settle_s:
                break
            time.sleep(0.05)
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return
        if self.process.returncode != 0:  # it failed before or while stopping
            lines = [ln.strip() for ln in (err or "").splitlines() if ln.strip()]
            said = lines[-1].removeprefix("telepipe: error: ") if lines else "it said nothing"
            self.error = (
                f"capture_dir={self.out}: the recorder failed (exit {self.process.returncode}): "
                f"{said}; the capture misses part of what the run read"
            )


@dataclass
class Children:
    """A run's child processes, each optional."""

    simulator: SimulatorProcess | None = None
    recorder: CaptureProcess | None = None

    def stop(self) -> None:
        """After the last poll. The simulator first: a recorder waits for its capture to
        stop growing, which it does not while the simulator publishes (a SIGTERM took 16 s)."""
        if self.simulator is not None:
            self.simulator.stop()
        if self.recorder is not None:
            self.recorder.stop()

    def abandon(self) -> None:
        """After a failure: stop both without waiting for them to catch up."""
        if self.recorder is not None:
            self.recorder.stop(settle_s=0.0, timeout=5.0)
        if self.simulator is not None:
            self.simulator.stop(timeout=5.0)
