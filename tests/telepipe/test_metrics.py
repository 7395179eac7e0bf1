"""The Prometheus endpoint serves the live run statistics while a pipeline runs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers import ROOT


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_while_running(tmp_path: Path) -> None:
    port = free_tcp_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "telepipe.cli", "run", f"data_dir={tmp_path}", f"metrics.port={port}",
         "simulator.options.rate=100000", "limit.readings=600000"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    body = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            body = (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
                .read()
                .decode()
            )
        except OSError:
            time.sleep(0.2)
            continue
        if 'telepipe_readings_received_total{pipeline="demo"}' in body and "readings" in body:
            value = float(
                body.split('telepipe_readings_received_total{pipeline="demo"}')[1].split()[0]
            )
            if value > 0:
                break
        time.sleep(0.2)
    process.wait(timeout=60)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert 'telepipe_rows_committed_total{pipeline="demo",table="readings"}' in body
    assert "telepipe_queue_depth" in body and "telepipe_peak_rss_bytes" in body


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "telepipe.cli", "run", f"data_dir={tmp_path}", f"metrics.port={port}",
             "limit.readings=1000"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and f"metrics.port={port}" in done.stderr
