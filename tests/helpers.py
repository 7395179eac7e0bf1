"""Helpers shared by the tests: repo paths and free UDP ports on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_XML = ROOT / "conf" / "schema" / "telemetry.xml"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Watched:
    """A child process whose stdout and stderr are read by threads as they come, so a
    test waits for a line it prints (a readiness signal), never a fixed time."""

    def __init__(self, args: list[str], **popen: object) -> None:
        import subprocess
        import threading

        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
        )  # type: ignore[call-overload]
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(name,), daemon=True)
            for name in ("stdout", "stderr")
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str) -> None:
        stream = getattr(self.process, name)
        for line in stream:
            with self._changed:
                self.lines[name].append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 120.0, stream: str = "stderr") -> str:
        """The first line of ``stream`` holding ``text``; fails if the process ends first."""
        import time

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((ln for ln in self.lines[stream] if text in ln), None)
                if found is not None:
                    return found
                if self.process.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"exited {self.process.returncode} before {text!r}: "
                        + "".join(self.lines["stderr"])[-2000:]
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {text!r} within {timeout} s")
                self._changed.wait(min(left, 0.5))

    def catches(self, signum: int) -> bool:
        """The program (not the forked test before its exec) has a handler for ``signum``
        (Linux: SigCgt)."""
        try:
            proc = Path(f"/proc/{self.process.pid}")
            if b"telepipe" not in (proc / "cmdline").read_bytes():
                return False
            status = (proc / "status").read_text()
        except OSError:
            return False
        caught = next(ln for ln in status.splitlines() if ln.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)

    def finish(self, timeout: float = 120.0) -> tuple[str, str]:
        """Wait for the exit; stdout and stderr whole."""
        self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        return "".join(self.lines["stdout"]), "".join(self.lines["stderr"])
