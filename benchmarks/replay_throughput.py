"""Replay throughput per recorded-input kind: telepipe capture, pcap, Aeron Archive.

    .venv/bin/python benchmarks/replay_throughput.py --readings 2000000 --repeats 3

1. Records ONE live demo run of ``--readings`` readings over Aeron UDP on
   loopback three ways at once: ``telepipe run ... capture_dir=`` (a telepipe
   capture), tcpdump on the UDP port (a pcap, nanosecond timestamps; needs root),
   and, after the run, an Aeron Archive directory built from the capture's frames
   (``_archive_writer``: catalog + pre-sized ``<recordingId>-<segmentBase>.rec``
   segments, as the Archive lays them out).
2. Per repeat and per kind, times ``telepipe replay pipeline=demo input=X``
   (``replay.speed`` not set: as fast as possible) from its stats JSON: input MB/s
   (input bytes / replay elapsed) and readings/s, and the ratio to the live
   run's readings/s (the live run is paced by the simulator at ``--rate``).
   Each replay's ``windows`` and ``alarms`` tables are compared with the live
   run's, sorted: they must be identical.
3. Per repeat and per kind, times the reader alone in this process (no pipeline):
   frames only, frames -> ``FrameAssembler`` (messages), and that plus the
   ``TelemetryDecoder`` (64-message polls, as ``ReplaySource``): what the rest of
   the pipeline (operators, Delta) adds is the replay minus the last.

Input bytes: the capture's files (segments + index), the pcap file, and for the
archive the recorded log bytes (stopPosition - startPosition; its segment files
are pre-sized sparse, its catalog pre-sized to 1 MiB).

Prints a table, then as the LAST line one JSON object (medians, each repeat,
the equality checks, the machine). Ratios are computed within each repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
from _archive_writer import capture_initial_term_ids, write_archive
from _common import REPO, machine, median, rate, timed, write_json

from telepipe.sources.capture import CaptureReader
from telepipe.sources.decoder import DecoderOptions, MessageBuffer, TelemetryDecoder
from telepipe.sources.frames import FrameAssembler
from telepipe.sources.replay import open_input

TCPDUMP = "/usr/bin/tcpdump"
KINDS = ("capture", "pcap", "archive")
COMPARED = {"windows": ["sensor_id", "window_start_ns"], "alarms": ["sensor_id", "ts_ns"]}
BATCH_MESSAGES = 64  # replay.batch_messages default


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "telepipe.cli", *args]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tcpdump:
    """tcpdump on ``lo`` for one UDP port; started before the run, stopped with SIGINT."""

    def __init__(self, path: Path, port: int) -> None:
        command = [
            TCPDUMP, "-i", "lo", "-U", "--immediate-mode", "-B", "65536",
            "--time-stamp-precision=nano", "-w", str(path), "udp", "port", str(port),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        listening = threading.Event()

        def drain() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line.strip())
                if "listening on" in line:
                    listening.set()
            listening.set()

        self.thread = threading.Thread(target=drain, daemon=True)
        self.thread.start()
        if not listening.wait(15) or self.process.poll() is not None:
            self.process.kill()
            raise SystemExit(f"tcpdump did not start: {' | '.join(self.lines)}")

    def stop(self) -> dict[str, int]:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)
        self.thread.join(timeout=5)
        counts = {}
        for line in self.lines:
            found = re.match(
                r"(\d+) packets? (captured|received by filter|dropped by kernel)", line
            )
            if found:
                counts[found.group(2).replace(" ", "_")] = int(found.group(1))
        return counts


def record(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """The live run, recorded as a capture and a pcap; then the archive from the capture."""
    port = args.port or free_udp_port()
    channel = f"aeron:udp?endpoint=127.0.0.1:{port}"
    pcap = work / "live.pcap"
    tcpdump = Tcpdump(pcap, port)
    stats_file = work / "live.json"
    command = cli(
        "run", "pipeline=demo", "source=aeron_udp", f"source.channel={channel}",
        f"limit.readings={args.readings}", f"data_dir={work / 'live'}",
        f"stats_file={stats_file}", f"capture_dir={work / 'capture'}",
        f"simulator.options.rate={args.rate}", "simulator.linger_s=5", "ui=never",
    )  # fmt: skip
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    finally:
        time.sleep(0.5)  # the last datagrams reach tcpdump's buffer
        packets = tcpdump.stop()
    if done.returncode != 0:
        raise SystemExit(f"live run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    if packets.get("dropped_by_kernel", -1) != 0:
        raise SystemExit(f"tcpdump dropped packets or did not report: {tcpdump.lines}")
    live = json.loads(stats_file.read_text())

    started = time.perf_counter()
    summary = write_archive(
        CaptureReader(work / "capture").frames(),
        work / "archive",
        capture_initial_term_ids(work / "capture"),
        channel=channel,
    )
    archive_s = time.perf_counter() - started
    return {
        "channel": channel,
        "live": live,
        "tcpdump": packets,
        "archive": {"recordings": summary.recordings, "build_s": round(archive_s, 2)},
        "inputs": {"capture": work / "capture", "pcap": pcap, "archive": work / "archive"},
        "input_bytes": {
            "capture": sum(f.stat().st_size for f in (work / "capture").iterdir() if f.is_file()),
            "pcap": pcap.stat().st_size,
            "archive": summary.log_bytes,
        },
    }


def sorted_table(data_dir: Path, table: str) -> pl.DataFrame:
    df = pl.read_delta(str(data_dir / table))
    return df.sort([*COMPARED[table], *(c for c in df.columns if c not in COMPARED[table])])


def replay_once(path: Path, work: Path, tag: str, live_tables: dict) -> dict[str, object]:
    data_dir, stats_file = work / f"replay-{tag}", work / f"replay-{tag}.json"
    command = cli(
        "replay", "pipeline=demo", f"input={path}", f"data_dir={data_dir}",
        f"stats_file={stats_file}", "ui=never",
    )  # fmt: skip
    wall_s, done = timed(
        lambda: subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    )
    if done.returncode != 0:  # type: ignore[attr-defined]
        raise SystemExit(f"replay of {path} failed:\n{done.stderr[-2000:]}")  # type: ignore[attr-defined]
    stats = json.loads(stats_file.read_text())
    equal = {t: sorted_table(data_dir, t).equals(live_tables[t]) for t in COMPARED}
    shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "elapsed_s": float(stats["elapsed_s"]),
        "wall_s": float(wall_s),
        "received": int(stats["received"]),
        "late": int(stats["late"]),
        "gaps": int(stats["gaps"]),
        "windows": int(stats["committed_by_table"].get("windows", -1)),
        "alarms": int(stats["committed_by_table"].get("alarms", -1)),
        "peak_rss_mb": float(stats["peak_rss_mb"]),
        "equal": equal,
    }


def readers_alone(path: Path, codec: object) -> dict[str, float]:
    """Seconds for: frames only; frames -> FrameAssembler; that plus the decoder."""
    out: dict[str, float] = {}
    out["frames_s"], frames = timed(lambda: sum(1 for _ in open_input(path).frames()))
    assembler = FrameAssembler()
    out["assemble_s"], messages = timed(
        lambda: sum(1 for _ in assembler.assemble(open_input(path).frames()))
    )

    def decode() -> int:
        decoder = TelemetryDecoder(codec, DecoderOptions())  # type: ignore[arg-type]
        buffer = MessageBuffer()
        for m in FrameAssembler().assemble(open_input(path).frames()):
            buffer.add(m.payload, m.stream_id, m.session_id, m.position)
            if len(buffer) >= BATCH_MESSAGES:
                decoder.decode(buffer)
        decoder.decode(buffer)
        return decoder.counters.readings  # late rows included, as the run's 'received'

    out["decode_s"], readings = timed(decode)
    out["frames"], out["messages"], out["readings"] = frames, messages, readings  # type: ignore[assignment]
    out["payload_bytes"] = assembler.counters.bytes
    out["gaps"] = len(assembler.counters.gaps)
    return out


def rounded(r: dict[str, object]) -> dict[str, object]:
    return {k: v if isinstance(v, dict) else round(float(v), 4) for k, v in r.items()}  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=300_000, help="live simulator readings/s")
    parser.add_argument("--port", type=int, default=0, help="UDP port (0: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not Path(TCPDUMP).exists():
        raise SystemExit(f"needs root and {TCPDUMP} (the pcap is recorded with tcpdump)")

    from telepipe.config import build, load

    codec = build(load(["pipeline=demo"]).schema, "schema")
    work = Path(tempfile.mkdtemp(prefix="telepipe-replay-"))
    try:
        rec = record(args, work)
        live = rec["live"]
        live_rate = float(live["readings_per_s"])  # type: ignore[index]
        live_tables = {t: sorted_table(work / "live", t) for t in COMPARED}
        inputs: dict[str, Path] = rec["inputs"]  # type: ignore[assignment]
        nbytes: dict[str, int] = rec["input_bytes"]  # type: ignore[assignment]
        print(
            f"live run: {live['received']:,} readings in {live['elapsed_s']:.2f} s "  # type: ignore[index]
            f"({live_rate:,.0f}/s); tcpdump {rec['tcpdump']}; inputs "
            + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in nbytes.items()),
            file=sys.stderr,
        )
        runs: list[dict[str, dict[str, object]]] = []
        for i in range(args.repeats):
            run: dict[str, dict[str, object]] = {}
            for kind in KINDS:
                r = replay_once(inputs[kind], work, f"{kind}-{i}", live_tables)
                r |= readers_alone(inputs[kind], codec)
                n = int(r["received"])  # type: ignore[arg-type]
                elapsed = float(r["elapsed_s"])  # type: ignore[arg-type]
                r["readings_per_s"] = rate(n, elapsed)
                r["input_mb_per_s"] = nbytes[kind] / elapsed / 1e6
                r["ratio_to_live"] = r["readings_per_s"] / live_rate
                for stage in ("frames", "assemble", "decode"):
                    seconds = float(r[f"{stage}_s"])  # type: ignore[arg-type]
                    r[f"{stage}_readings_per_s"] = rate(n, seconds)
                    r[f"{stage}_mb_per_s"] = nbytes[kind] / seconds / 1e6
                    r[f"ratio_replay_to_{stage}"] = float(r[f"{stage}_s"]) / elapsed  # type: ignore[arg-type]
                run[kind] = r
                print(
                    f"repeat {i + 1}/{args.repeats} {kind}: replay {elapsed:.2f} s "
                    f"({r['readings_per_s'] / 1e6:.2f} M/s, {r['input_mb_per_s']:.0f} MB/s), "
                    f"reader+assembler {r['assemble_s']:.2f} s, +decode {r['decode_s']:.2f} s, "
                    f"equal {r['equal']}",
                    file=sys.stderr,
                )
            runs.append(run)

        numeric = [k for k, v in runs[0]["capture"].items() if isinstance(v, int | float)]
        med = {
            kind: {k: median([float(run[kind][k]) for run in runs]) for k in numeric}  # type: ignore[arg-type]
            for kind in KINDS
        }
        equal = {
            kind: {t: all(run[kind]["equal"][t] for run in runs) for t in COMPARED}  # type: ignore[index]
            for kind in KINDS
        }
        print(
            f"\nlive: {live['received']:,} readings, {live_tables['windows'].height:,} windows, "  # type: ignore[index]
            f"{live_tables['alarms'].height:,} alarms, {live_rate / 1e6:.3f} M/s (paced at "
            f"{args.rate:,.0f}/s); repeats={args.repeats} (medians)"
        )
        print(
            f"{'input':<8} {'MB':>7} {'replay s':>9} {'M rd/s':>7} {'MB/s':>6} {'x live':>7} "
            f"{'frames MB/s':>11} {'+asm MB/s':>9} {'+dec M rd/s':>11} {'dec/replay':>10} "
            f"{'equal':>6}"
        )
        for kind in KINDS:
            m = med[kind]
            print(
                f"{kind:<8} {nbytes[kind] / 1e6:>7.1f} {m['elapsed_s']:>9.2f} "
                f"{m['readings_per_s'] / 1e6:>7.2f} {m['input_mb_per_s']:>6.0f} "
                f"{m['ratio_to_live']:>7.2f} {m['frames_mb_per_s']:>11.0f} "
                f"{m['assemble_mb_per_s']:>9.0f} {m['decode_readings_per_s'] / 1e6:>11.2f} "
                f"{m['ratio_replay_to_decode']:>10.2f} {all(equal[kind].values())!s:>6}"
            )
        summary = {
            "benchmark": "replay_throughput",
            "readings": args.readings,
            "repeats": args.repeats,
            "live_rate_setting": args.rate,
            "machine": machine(),
            "live": {
                k: live[k]  # type: ignore[index]
                for k in ("received", "elapsed_s", "readings_per_s", "late", "peak_rss_mb")
            }
            | {t: live_tables[t].height for t in COMPARED},
            "tcpdump": rec["tcpdump"],
            "archive": rec["archive"],
            "input_bytes": nbytes,
            "median": {kind: {k: round(v, 4) for k, v in med[kind].items()} for kind in KINDS},
            "windows_alarms_equal_to_live": equal,
            "all_equal": all(all(e.values()) for e in equal.values()),
            "runs": [{kind: rounded(r) for kind, r in run.items()} for run in runs],
        }
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return write_json(summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
