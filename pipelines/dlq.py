"""Dead letters run back through a pipeline: ``dlq replay`` and ``dlq resume``.

Replay writes the letters' payloads as a telepipe capture (one unfragmented
frame each at its recorded stream, session and position), logs ``replay_start``
(its seq names the run's ``sink.app_id``, ``telepipe-dlq-<seq>``, apart from the
pipeline's own checkpoints), removes the letters and runs the pipeline over the
capture into the same data dir: what decodes now lands in the normal tables,
what fails again comes back with the same id. Then it logs ``replay``. Letters a
failed or stopped run did not read are put back. ``resume`` finishes a replay
that died after its start entry: its letters are in its capture.

A replay brings every letter back or leaves it in the store: a config whose queues
may drop (``policy: drop_oldest | drop_newest`` anywhere: the sink's queue, a thread
boundary, a publish queue) is refused before anything changes, so every letter the
run reads either lands or fails again; one it did not read goes back; a SIGKILL
leaves them in the capture for ``resume``.

The store (``telepipe.sinks.dead_letter_store``) reads and changes the table and
its audit log; this module owns the capture and the run.
"""

from __future__ import annotations

import contextlib
import json
import operator
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from telepipe.config import build, load
from telepipe.errors import ConfigError, SinkError, TelepipeError
from telepipe.pipelines.registry import pipeline_identity
from telepipe.sbe import SbeCodec
from telepipe.sinks import data_dir_lock
from telepipe.sinks.dead_letter_store import DeadLetterStore
from telepipe.sinks.delta import PIPELINE, PIPELINE_HASH, written_by
from telepipe.sources.capture import CaptureWriter
from telepipe.sources.frames import HEADER_LENGTH, UNFRAGMENTED, align

#: How a replay runs its pipeline: ``telepipe.pipelines.runner.run`` unless a caller
#: (a test) passes another.
Run = Callable[[DictConfig, list[str], str | None], int]

REPLAY_DIR = "_telepipe_dlq"  # under data_dir: replay captures until their run is done
_FRAME_ORDER = operator.itemgetter("stream_id", "session_id", "position")


def replay(
    store: DeadLetterStore,
    ids: Iterable[str],
    confirm: bool,
    pipeline: str | None,
    actor: str,
    extra_overrides: Sequence[str] = (),
    run: Run | None = None,
) -> dict[str, Any]:
    """Run these dead letters back through ``pipeline`` (None: the one that wrote the
    data dir, as its commits record it); returns the final audit entry."""
    run = run or _run
    given = store.prepare(ids, confirm, "replay")
    pipeline = which_pipeline(store.data_dir, pipeline)
    # Refused before anything is locked, keyed or written (the run's own config is
    # loaded again under the lock, with its audit seq).
    refuse_dropping(
        load(
            _run_overrides(store, pipeline, Path("capture"), "dlq", Path("stats"), extra_overrides)
        )
    )
    with data_dir_lock.hold(store.data_dir, "dlq replay"), store.audit.locked():
        seq = store.next_seq()
        full = store.resolve(given)
        stored = store.rows(full)
        app_id = f"telepipe-dlq-{seq}"
        work = store.data_dir.resolve() / REPLAY_DIR / f"replay-{seq}"
        capture, stats_file = work / "capture", work / "stats.json"
        overrides = _run_overrides(store, pipeline, capture, app_id, stats_file, extra_overrides)
        cfg = load(overrides)  # a bad pipeline or override fails before any change
        refuse_dropping(cfg)
        _note_changed(store.data_dir, cfg)
        rows = laid_out(stored, _first_ts(build(cfg.schema, "schema")))
        check_overlaps(rows)
        shutil.rmtree(work, ignore_errors=True)  # left by a crash before replay_start
        write_capture(capture, rows)
        start = {"pipeline": pipeline, "app_id": app_id, "capture": str(capture)}
        store.record("replay_start", full, start, actor)
        removed = store.delete(full, "replay", seq)
        try:
            run(cfg, overrides, str(capture))
        except BaseException as error:
            _failed(store, error, stored, full, start, actor, seq)
            raise  # _failed raises a one-line error for anything else
        stats = _stats(stats_file)
        put_back = 0
        if stats.get("exit_reason") != "end of input":  # stopped early (signal, limit)
            consumed = store.consumed_positions(str(capture.resolve()))
            unread = {r["id"] for r in _unread(rows, consumed)}
            put_back = store.put_back([r for r in stored if r["id"] in unread], seq)
        present = set(store.ids())
        back = [i for i in full if i in present]
        detail = {
            "pipeline": pipeline,
            "app_id": app_id,
            "removed_rows": removed,
            "came_back": len(back),
            "came_back_ids": back,
            "put_back": put_back,
            "exit_reason": stats.get("exit_reason", ""),
            "readings_received": stats.get("received", 0),
            "readings_committed": stats.get("committed", 0),
            "rejected": stats.get("rejected", 0),
            "committed_by_table": stats.get("committed_by_table", {}),
        }
        entry = store.record("replay", full, detail, actor)
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            (store.data_dir / REPLAY_DIR).rmdir()  # only if no other replay left one
        return entry


def resume(store: DeadLetterStore, actor: str, run: Run | None = None) -> dict[str, Any]:
    """Finish a replay that died after its start entry (killed, machine lost): its
    letters are in its capture; the run resumes from its own checkpoints."""
    run = run or _run
    with data_dir_lock.hold(store.data_dir, "dlq resume"), store.audit.locked():
        entries = store.audit.entries()
        if not entries or entries[-1]["action"] != "replay_start":
            raise ConfigError(f"no dlq replay to finish in {store.path}")
        seq, full, start = len(entries), entries[-1]["ids"], entries[-1]["detail"]
        capture = Path(start["capture"])
        if not capture.is_dir():
            raise SinkError(f"the replay's capture {capture} is gone: its letters are lost")
        stats_file = capture.parent / "stats.json"
        overrides = _run_overrides(store, start["pipeline"], capture, start["app_id"], stats_file)
        cfg = load(overrides)
        refuse_dropping(cfg)
        removed = 0 if store.deleted_at(seq) else store.delete(full, "replay", seq)
        run(cfg, overrides, str(capture))
        stats = _stats(stats_file)
        present = set(store.ids())
        detail = {
            **start, "resumed": True, "removed_rows": removed,
            "came_back_ids": [i for i in full if i in present],
            "readings_committed": stats.get("committed", 0),
            "committed_by_table": stats.get("committed_by_table", {}),
        }  # fmt: skip
        entry = store.record("replay", full, detail, actor)
        shutil.rmtree(capture.parent, ignore_errors=True)
        return entry


def which_pipeline(data_dir: Path, given: str | None) -> str:
    """The pipeline a replay runs: the one whose checkpoints the data dir holds (its
    commits name it); ``given`` must be that one. Without a record (a data dir written
    before commits named their pipeline) ``given`` is needed."""
    recorded = written_by(data_dir, None, app_id=None).get(PIPELINE)
    if recorded is None:
        if given is None:
            raise ConfigError(
                f"data_dir={data_dir} records no pipeline (no checkpoint names one): "
                "give the one that wrote it with --pipeline NAME"
            )
        return given
    if given is not None and given != recorded:
        raise ConfigError(
            f"data_dir={data_dir} was written by pipeline {recorded}: --pipeline {given} "
            f"would write its own tables there; leave --pipeline out (or give {recorded})"
        )
    return recorded


def _note_changed(data_dir: Path, cfg: DictConfig) -> None:
    """A note on stderr when the pipeline's config is not the one that wrote data_dir."""
    recorded = written_by(data_dir, None, app_id=None).get(PIPELINE_HASH)
    now = pipeline_identity(cfg.pipeline)[PIPELINE_HASH]
    if recorded is not None and recorded != now:
        print(
            f"telepipe dlq: note: pipeline {cfg.pipeline.name}'s config (hash {now}) is not "
            f"the one that wrote data_dir={data_dir} (hash {recorded}): the letters go "
            "through the config as it is now",
            file=sys.stderr,
        )


DROPPING = ("drop_oldest", "drop_newest")


def refuse_dropping(cfg: DictConfig) -> None:
    """A replay's run must not drop what it reads: any queue ``policy`` that drops is
    refused in one line naming its key (letters the run dropped would be neither in
    the tables nor back in the store)."""

    def walk(node: object, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                child = f"{key}.{name}" if key else str(name)
                if name == "policy" and value in DROPPING:
                    raise ConfigError(
                        f"{child}={value}: a dlq replay refuses queue policies that drop "
                        "(its letters would be lost); use block or fail"
                    )
                walk(value, child)
        elif isinstance(node, list):
            for k, item in enumerate(node):
                walk(item, f"{key}[{k}]")

    walk(OmegaConf.to_container(cfg, resolve=True), "")


def _run(cfg: DictConfig, overrides: list[str], input_path: str | None) -> int:
    from telepipe.pipelines.runner import run

    return run(cfg, overrides, input_path)


def _stats(path: Path) -> dict[str, Any]:
    stats: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return stats


def _run_overrides(
    store: DeadLetterStore,
    pipeline: str,
    capture: Path,
    app_id: str,
    stats_file: Path,
    extra: Sequence[str] = (),
) -> list[str]:
    """The config of a replay's run: the letters' capture into the store's data dir,
    under the replay's own app id. Its watermark stays back until the end of the
    letters (no bound a letter could be behind, no idleness): letters of several
    sessions, each behind the others' event time, are never late again; the end of
    the input flushes every operator."""
    return [
        f"pipeline={_quote(pipeline)}",
        f"data_dir={_quote(str(store.data_dir.resolve()))}",
        f"input={_quote(str(capture))}",
        f"sink.app_id={app_id}",
        "ui=never",
        f"stats_file={_quote(str(stats_file))}",
        f"source.out_of_orderness_ms={LETTERS_BOUND_MS}",
        "source.idle_timeout_ms=0",
        *extra,
    ]


LETTERS_BOUND_MS = 10**12  # ~31 years: more than any letter is behind another


def _quote(value: str) -> str:
    """A Hydra override value: quoted unless it is plainly safe (paths with spaces...)."""
    if re.fullmatch(r"[\w./:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _failed(
    store: DeadLetterStore,
    error: BaseException,
    rows: list[dict[str, Any]],
    full: list[str],
    start: dict[str, Any],
    actor: str,
    seq: int,
) -> None:
    """After a failed run: put the letters back and log it; the caller re-raises."""
    message = (str(error).strip().splitlines() or [type(error).__name__])[0]
    detail = {**start, "error": message, "put_back": 0}
    try:
        detail["put_back"] = store.put_back(rows, seq)
    except Exception as again:  # keep the capture: it is the only copy left
        store.record("replay", full, detail, actor)
        raise SinkError(
            f"dlq replay failed ({message}) and putting the letters back failed ({again}); "
            f"they are in the capture {start['capture']}"
        ) from error
    store.record("replay", full, detail, actor)
    shutil.rmtree(Path(start["capture"]).parent, ignore_errors=True)
    if isinstance(error, Exception) and not isinstance(error, TelepipeError):
        raise SinkError(f"dlq replay failed: {message}") from error


def _unread(rows: Sequence[dict[str, Any]], consumed: dict[str, int]) -> list[dict[str, Any]]:
    """The letters a run stopped before reading: past the positions it committed."""
    key = "{stream_id}:{session_id}".format
    return [r for r in rows if r["position"] > consumed.get(key(**r), -1)]


# -- the letters as a capture ---------------------------------------------------------


def laid_out(
    rows: Sequence[dict[str, Any]], order: Callable[[dict[str, Any]], int]
) -> list[dict[str, Any]]:
    """The letters with a position each: those with none (position 0: rows an operator
    found late, which no longer have a wire origin) are laid one after another past
    the last real position of their (stream, session), by ``order`` (their event time,
    so the replay's source finds none of them late again), then id."""
    end: dict[tuple[int, int], int] = {}
    for row in rows:
        key = (row["stream_id"], row["session_id"])
        end[key] = max(end.get(key, 0), row["position"])
    out = []
    unplaced = sorted((r for r in rows if r["position"] == 0), key=lambda r: (order(r), r["id"]))
    for row in [*(r for r in rows if r["position"] != 0), *unplaced]:
        if row["position"] == 0:
            key = (row["stream_id"], row["session_id"])
            end[key] += align(len(row["payload"]) + HEADER_LENGTH)
            row = {**row, "position": end[key]}
        out.append(row)
    return out


def _first_ts(codec: SbeCodec) -> Callable[[dict[str, Any]], int]:
    """A letter's first reading's ts as ``codec`` decodes it (0 if it does not decode)."""

    def ts(row: dict[str, Any]) -> int:
        batch = codec.decode(row["payload"]).batch
        if not batch.num_rows or "ts" not in batch.schema.names:
            return 0
        return int(batch.column("ts").cast(pa.int64())[0].as_py())

    return ts


def check_overlaps(rows: Sequence[dict[str, Any]]) -> None:
    """A capture holds one frame per (stream, session, byte range): two letters whose frames
    would overlap cannot be replayed together (the frame assembler drops the second)."""
    last: dict[tuple[int, int], dict[str, Any]] = {}
    for row in sorted(rows, key=_FRAME_ORDER):
        key = (row["stream_id"], row["session_id"])
        start = row["position"] - align(len(row["payload"]) + HEADER_LENGTH)
        prev = last.get(key)
        if prev is not None and start < prev["position"]:
            raise ConfigError(
                f"dead letters {prev['id']} and {row['id']} overlap in stream {key[0]} "
                f"session {key[1]} (positions {prev['position']}, {row['position']}): "
                "replay them separately"
            )
        last[key] = row


def write_capture(directory: Path, rows: Sequence[dict[str, Any]]) -> None:
    """The letters' payloads as a telepipe capture, one unfragmented frame each."""
    ordered = sorted(rows, key=_FRAME_ORDER)
    first = ordered[0]["stream_id"] if ordered else 0
    with CaptureWriter(directory, channel="telepipe-dlq", stream_id=first, fsync=True) as writer:
        for row in ordered:
            writer.append(
                row["payload"], received_ns=row["received_ns"], position=row["position"],
                flags=UNFRAGMENTED, session_id=row["session_id"], stream_id=row["stream_id"],
            )  # fmt: skip
