"""``telepipe dlq``: list, inspect, replay and purge dead letters; verify the audit log.

    telepipe dlq list [--data-dir DIR] [--reason R] [--limit N] [--json]
    telepipe dlq inspect ID [--data-dir DIR]
    telepipe dlq replay ID [ID ...] --confirm [--pipeline NAME] [--data-dir DIR] [-o KEY=VALUE]
    telepipe dlq purge ID [ID ...] --confirm [--data-dir DIR]
    telepipe dlq verify [--data-dir DIR]
    telepipe dlq resume [--data-dir DIR]

IDs may be unique prefixes (at least 4 hex digits). ``replay`` and ``purge``
change the store and need ``--confirm``; each appends an entry to the audit log,
hash-chained and authenticated with the audit key (outside the data dir: created
with mode 0600 on first use, and this says where), which seals the table as the
change left it. ``verify`` checks the log, then the table's rows and Delta log
against it (exit 1 naming the first thing wrong).

The store is ``telepipe.sinks.dead_letter_store``; running letters back through a
pipeline is ``telepipe.pipelines.dlq``. This module parses and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from telepipe import signals
from telepipe.errors import ConfigError

if TYPE_CHECKING:
    from telepipe.sinks.dead_letter_store import DeadLetterStore

DEFAULT_DATA_DIR = "data/demo"
DUMP_BYTES = 256
EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dlq`` and its actions to a ``telepipe`` sub-parser set."""
    text = "list, inspect, replay or purge dead letters; verify the audit log"
    parser: argparse.ArgumentParser = subparsers.add_parser("dlq", help=text, description=text)
    actions = parser.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--data-dir",
            default=DEFAULT_DATA_DIR,
            help=f"the pipeline's data_dir ({DEFAULT_DATA_DIR})",
        )
        return p

    p = action("list", "list dead letters, oldest first")
    p.add_argument("--reason", default=None, help="only this reason (e.g. truncated_group)")
    p.add_argument("--limit", type=int, default=None, help="at most N letters")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = action("inspect", "show one dead letter: fields, hex dump, what decoding says")
    p.add_argument("id", metavar="ID", help="id or unique prefix")
    p = action("replay", "run dead letters back through a pipeline (into the same data_dir)")
    p.add_argument("ids", nargs="+", metavar="ID", help="ids or unique prefixes")
    p.add_argument("--confirm", action="store_true", help="required: replay changes the store")
    p.add_argument(
        "--pipeline", default=None,
        help="the pipeline to run them through (default: the one that wrote --data-dir, "
        "as its commits record it)",
    )  # fmt: skip
    p.add_argument(
        "-o", "--override", action="append", default=[], dest="extra_overrides",
        metavar="KEY=VALUE", help="an extra Hydra override for the run (repeatable)",
    )  # fmt: skip
    p = action("purge", "delete dead letters for good")
    p.add_argument("ids", nargs="+", metavar="ID", help="ids or unique prefixes")
    p.add_argument("--confirm", action="store_true", help="required: purge changes the store")
    action("verify", "check the audit log (hash chain, MACs) and the table's rows and Delta log")
    action("resume", "finish a dlq replay that was killed (its letters are in its capture)")
    return parser


def actor() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid:{os.getuid()}"


def _store(args: argparse.Namespace) -> DeadLetterStore:
    from telepipe.sinks.dead_letter_store import DeadLetterStore

    return DeadLetterStore(args.data_dir)


@contextlib.contextmanager
def _keyed(store: DeadLetterStore) -> Iterator[DeadLetterStore]:
    """Says where the audit key is if the action created it (however the action ends)."""
    try:
        yield store
    finally:
        key = store.audit.loaded_key
        if key is not None and key.created:
            print(
                f"telepipe dlq: created the audit key {key.path} (mode 0600): keep it "
                "outside the data dir, and give a copy to whoever verifies this one",
                file=sys.stderr,
            )


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _list(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {args.limit}")
    store = _store(args)
    letters = store.list(reason=args.reason)
    shown = letters.head(args.limit) if args.limit is not None else letters
    if args.json:
        print(json.dumps(shown.to_dicts(), indent=2))
        return 0
    if not letters.height:
        what = f" with reason {args.reason}" if args.reason else ""
        print(f"telepipe dlq: no dead letters{what} in {store.path}")
        return 0
    head = ("ID", "REASON", "STREAM", "SESSION", "POSITION", "RECEIVED (UTC)", "BYTES", "DETAIL")
    rows = [
        (
            r["id"],
            r["reason"],
            str(r["stream_id"]),
            str(r["session_id"]),
            str(r["position"]),
            _time(r["received_ns"]),
            str(r["payload_bytes"]),
            r["detail"][:60],
        )
        for r in shown.iter_rows(named=True)
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head) - 1)]
    for row in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"{shown.height} of {letters.height} dead letters in {store.path}")
    return 0


def hex_dump(data: bytes, limit: int = DUMP_BYTES) -> list[str]:
    lines = []
    for at in range(0, min(len(data), limit), 16):
        chunk = data[at : min(at + 16, limit)]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {hexes:<47}  |{text}|")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return lines


def decode_summary(payload: bytes) -> str:
    """What the telemetry schema's codec says about a payload, as one line."""
    from telepipe.config import conf_dir
    from telepipe.sbe import SbeCodec

    codec = SbeCodec.from_xml(conf_dir() / "schema" / "telemetry.xml")
    result = codec.decode(payload)
    if result.rejected:
        _, reason, detail = result.rejected[0]
        return f"rejected: {reason}: {detail}"
    return f"ok: {result.batch.num_rows} readings"


def _inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    full = store.resolve([args.id])[0]
    letter = store.get(full)
    fields = [
        ("id", full),
        ("reason", letter.reason),
        ("detail", letter.detail),
        ("stream_id", str(letter.stream_id)),
        ("session_id", str(letter.session_id)),
        ("position", str(letter.position)),
        ("received", f"{_time(letter.received_ns)} ({letter.received_ns} ns)"),
        ("payload", f"{len(letter.payload)} bytes"),
        ("decode", decode_summary(letter.payload)),
    ]
    if letter.id != full:
        fields.append(("warning", f"the content hashes to id {letter.id}, not {full}"))
    for name, value in fields:
        print(f"{name:<11} {value}")
    print(f"payload (first {min(len(letter.payload), DUMP_BYTES)} bytes):")
    for line in hex_dump(letter.payload):
        print("  " + line)
    return 0


def _purge(args: argparse.Namespace) -> int:
    signals.defer()  # a change to the store is never cut in the middle: it finishes
    with _keyed(_store(args)) as store:
        entry = store.purge(args.ids, confirm=args.confirm, actor=actor())
    print(
        f"telepipe dlq: purged {len(entry['ids'])} dead letters ({entry['detail']['rows']} rows); "
        f"audit entry {entry['seq']}"
    )
    return 0


def _resume(args: argparse.Namespace) -> int:
    signals.defer()  # kept until the replay's run takes it (it then stops early)
    from telepipe.pipelines import dlq

    with _keyed(_store(args)) as store:
        entry = dlq.resume(store, actor=actor())
    d = entry["detail"]
    print(
        f"telepipe dlq: finished the replay of {len(entry['ids'])} dead letters through "
        f"{d['pipeline']}: {d['readings_committed']} readings committed, "
        f"{len(d['came_back_ids'])} came back; audit entry {entry['seq']}"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    signals.defer()  # kept until the replay's run takes it: unread letters go back
    for override in args.extra_overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key in ("data_dir", "input", "sink", "sink.app_id"):
            raise ConfigError(
                f"dlq replay: -o {override}: the letters go back into --data-dir "
                f"{args.data_dir}, through its own sink; this key cannot change"
            )
        if key == "replay" or key.startswith("replay."):
            raise ConfigError(
                f"dlq replay: -o {override}: every letter is replayed (a filter by stream, "
                "position or time would remove letters the run never read)"
            )
    from telepipe.pipelines import dlq

    with _keyed(_store(args)) as store:
        entry = dlq.replay(
            store,
            args.ids,
            confirm=args.confirm,
            pipeline=args.pipeline,
            actor=actor(),
            extra_overrides=args.extra_overrides,
        )
    d = entry["detail"]
    back = f" ({', '.join(d['came_back_ids'])})" if d["came_back"] else ""
    print(
        f"telepipe dlq: replayed {len(entry['ids'])} dead letters through {d['pipeline']}: "
        f"{d['readings_committed']} readings committed, {d['came_back']} came back{back}; "
        f"audit entry {entry['seq']}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    with _keyed(_store(args)) as store:
        ok, problem = store.verify()
    if not ok:
        print(f"telepipe dlq verify: {problem}", file=sys.stderr)
        return EXIT_FAILURE
    entries = store.audit.entries()
    unkeyed = store.audit.unauthenticated(entries)
    if unkeyed:
        print(
            f"telepipe dlq verify: entries 1-{unkeyed} were written before audit keys: "
            f"unauthenticated; entry {unkeyed + 1} vouches only that they have not changed "
            "since",
            file=sys.stderr,
        )
    count, head = store.audit.head()
    print(
        f"telepipe dlq: audit log and table ok: {count} entries, head {head}, "
        f"{store.list().height} dead letters ({store.audit.path}, key {store.key.path})"
    )
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _list,
    "inspect": _inspect,
    "replay": _replay,
    "purge": _purge,
    "verify": _verify,
    "resume": _resume,
}


def main(args: argparse.Namespace) -> int:
    """Run the ``dlq`` action parsed into ``args``; telepipe errors propagate."""
    return ACTIONS[args.dlq_action](args)
