"""Checkpoint state on disk (telepipe.state): Arrow files and a JSON manifest, round
trips of every kind of value, and every refusal one line naming the file: paths out of
data_dir, damaged or crafted manifests, planted pickles (never loaded)."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from telepipe.errors import SnapshotError
from telepipe.operators import TumblingWindow
from telepipe.operators.runtime.snapshot import Snapshot, layout, restore, select
from telepipe.state import (
    FORMAT_VERSION,
    MANIFEST,
    STATE_DIR,
    keeps,
    read_checkpoint,
    write_checkpoint,
)
from telepipe.state.files import owner_dir

ROOT = Path(__file__).resolve().parents[2]


def rows_batch(sid: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"sensor_id": pa.array(sid, pa.int32()), "ts": pa.array(range(len(sid)), pa.int64())}
    )


def full_state() -> dict[str, object]:
    sid = np.array([5, -7, 2**31 - 1, 0], np.int32)
    return {
        "decoder": {
            "positions": {"1001:7": 4096, "1001:9": 64},
            "max_ts": {"1001:7": 10**18},
            "watermark": -(2**63),
            "checkpoint_id": np.int64(3),
            "some_new_field": {"a": 1},
            "by_pair": {(1001, 7): 5, (1001, 9): {"x": (1, 2)}},
            "$pairs": {"$pairs": 1},
        },
        "win": Snapshot(
            "TumblingWindow",
            1,
            {"size_ms": 1000, "tags": ["a", "b"]},
            {
                "watermark": 2**63 - 1,
                "ratio": math.nan,
                "scale": -math.inf,
                "half": 0.1,
                "label": "x/../y",
                "sensor_id": sid,
                "count": np.array([1, 2, 3, 4], np.int64),
                "acc": np.arange(12, dtype=np.float64).reshape(4, 3),
                "none": np.zeros((4, 0), np.int64),
                "flag": np.array([True, False, True, True]),
                "buffer_sensor_id": np.array([5, 5, 0], np.int32),
                "buffer_ts": np.array([1, 2, 3], np.int64),
                "buffer_quality": np.empty(0, np.uint8),  # not kept
                "pending": rows_batch([5, 0, -7]),
                "pending_seq": np.array([9, 8, 7], np.int64),
                "slot_sensor_id": np.array([0, 5, 5], np.int32),
                "slot_meta": np.arange(6, dtype=np.int64).reshape(3, 2),
                "event_offsets": np.array([0, 1, 1, 3], np.int64),
                "event_value": np.array([0.5, 1.5, 2.5]),
                "counters": np.array([4, 2], np.int64),
            },
        ),
    }


def same_state(a: dict[str, object], b: dict[str, object]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and y.dtype == x.dtype and y.shape == x.shape, k
            np.testing.assert_array_equal(x, y)
            assert y.flags.writeable
        elif isinstance(x, pa.RecordBatch):
            assert isinstance(y, pa.RecordBatch) and x.equals(y), k
        elif isinstance(x, float) and math.isnan(x):
            assert isinstance(y, float) and math.isnan(y)
        else:
            assert x == y and type(x) is type(y), k


def test_every_kind_of_value_round_trips(tmp_path: Path) -> None:
    state = full_state()
    path = write_checkpoint(tmp_path, "app", "windows", 42, state)
    assert re.fullmatch(rf"{STATE_DIR}/[0-9a-f]{{16}}/000000000042/{MANIFEST}", path)
    got = read_checkpoint(tmp_path, path)
    assert got.checkpoint_id == 42 and got.max_key_groups == 128
    decoder = dict(state["decoder"])  # type: ignore[call-overload]
    decoder["checkpoint_id"] = 3
    decoder["by_pair"] = {(1001, 7): 5, (1001, 9): {"x": [1, 2]}}  # tuples as lists
    assert got.decoder == decoder
    snap = got.steps["win"]
    want = state["win"]
    assert isinstance(want, Snapshot)
    assert (snap.operator, snap.version, snap.options) == (want.operator, 1, want.options)
    same_state(want.state, snap.state)  # type: ignore[arg-type]
    manifest = json.loads((tmp_path / path).read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["key_groups"] == 128
    assert {s["name"] for s in manifest["steps"]} == {"win"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) for f in manifest["files"])


def test_a_subset_of_key_groups_keeps_its_rows_and_the_operator_wide_values(
    tmp_path: Path,
) -> None:
    state = full_state()
    want = state["win"]
    assert isinstance(want, Snapshot)
    path = write_checkpoint(tmp_path, "app", "windows", 1, state)
    total = {"sensor_id": 0, "buffer_sensor_id": 0, "slot_sensor_id": 0, "pending": 0}
    for groups in (range(0, 64), range(64, 128)):
        part = read_checkpoint(tmp_path, path, groups).steps["win"].state
        expected = select(want.state, keeps(groups))
        same_state(expected, part)
        assert part["counters"].tolist() == [4, 2] and part["watermark"] == 2**63 - 1  # type: ignore[union-attr]
        for k in total:
            v = part[k]
            total[k] += v.num_rows if isinstance(v, pa.RecordBatch) else len(v)  # type: ignore[arg-type]
        # a slot's events stay with it
        offsets, meta = part["event_offsets"], part["slot_sensor_id"]
        assert len(offsets) == len(meta) + 1 and offsets[-1] == len(part["event_value"])  # type: ignore[arg-type]
        assert len(part["pending_seq"]) == part["pending"].num_rows  # type: ignore[arg-type, union-attr]
    assert total == {"sensor_id": 4, "buffer_sensor_id": 3, "slot_sensor_id": 3, "pending": 3}
    both = read_checkpoint(tmp_path, path, range(128)).steps["win"].state
    same_state(want.state, both)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"sensor_id": np.array([1, 2], np.int32), "x": np.array([1])}, "'x' has 1 rows"),
        ({"x": np.array([1, 2])}, "'x' belongs to no keyed table"),
        ({"sensor_id": np.array([1.0])}, "1-D integer array"),
        ({"sensor_id": np.array([1], np.int32), "o": object()}, "'o' is a object"),
        ({"rows": pa.RecordBatch.from_pydict({"a": [1]})}, "without a sensor_id column"),
        (
            {
                "slot_sensor_id": np.array([1], np.int32),
                "event_offsets": np.array([0, 3]),
                "event_x": np.array([1.0]),
            },
            "'event_x' has 1 rows",
        ),
    ],
)
def test_a_state_that_cannot_be_cut_by_key_is_refused_when_written(
    tmp_path: Path, state: dict, message: str
) -> None:
    with pytest.raises(SnapshotError, match=re.escape(message)) as caught:
        write_checkpoint(tmp_path, "a", "t", 1, {"w": Snapshot("Op", 1, {}, state)})
    assert "step 'w'" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(SnapshotError, match="step 'w'"):
        layout(state, "w")


def test_a_value_that_is_not_a_snapshot_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="step 'w': its state is a dict, not a Snapshot"):
        write_checkpoint(tmp_path, "a", "t", 1, {"w": {"x": 1}})


def test_names_from_the_user_never_become_paths(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "d", "../../app", "../t/x", 1, full_state())
    made = [p for p in tmp_path.rglob("*")]
    assert all(p.is_relative_to(tmp_path / "d" / STATE_DIR) or p == tmp_path / "d" for p in made)
    assert path.split("/")[1] == owner_dir("../../app", "../t/x")


def test_older_checkpoints_are_pruned(tmp_path: Path) -> None:
    for k in range(1, 21):
        write_checkpoint(tmp_path, "a", "t", k, full_state(), keep=16)
    owner = tmp_path / STATE_DIR / owner_dir("a", "t")
    assert sorted(int(p.name) for p in owner.iterdir()) == list(range(5, 21))


def test_options_or_format_that_differ_are_one_line_naming_file_step_and_difference(
    tmp_path: Path,
) -> None:
    logic = TumblingWindow(size_ms=100).build()
    path = write_checkpoint(tmp_path, "a", "t", 1, {"w": Snapshot.take(logic)})
    snap = read_checkpoint(tmp_path, path).steps["w"]
    with pytest.raises(SnapshotError) as caught:
        restore(TumblingWindow(size_ms=200).build(), snap, "w")
    text = str(caught.value)
    assert "step 'w'" in text and str(tmp_path / path) in text and "size_ms=100" in text
    assert "size_ms=200" in text and "\n" not in text
    restore(TumblingWindow(size_ms=100).build(), snap, "w")  # its own options: fine


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda s: s.update(watermark={"str": "abc"}), ["'watermark' is a string"]),
        (lambda s: s.update(watermark={"float": "inf"}), ["'watermark' is a float"]),
        (lambda s: s.pop("watermark"), ["cannot be restored (KeyError"]),
        (lambda s: s.update(surprise={"int": 1}), ["does not keep: 'surprise'"]),
    ],
)
def test_a_state_value_of_the_wrong_type_is_one_line_naming_step_and_file(
    tmp_path: Path, change, needles
) -> None:
    logic = TumblingWindow(size_ms=100).build()
    path = write_checkpoint(tmp_path, "a", "t", 1, {"w": Snapshot.take(logic)})
    manifest = json.loads((tmp_path / path).read_text())
    change(manifest["steps"][0]["scalars"])
    (tmp_path / path).write_text(json.dumps(manifest))
    snap = read_checkpoint(tmp_path, path).steps["w"]
    with pytest.raises(SnapshotError) as caught:
        restore(TumblingWindow(size_ms=100).build(), snap, "w")
    text = str(caught.value)
    assert "\n" not in text and "step 'w'" in text and str(tmp_path / path) in text, text
    for needle in needles:
        assert needle in text, text


# ------------------------------------------------------------------ refusals on read


class Boom:
    """Unpickling this would create a file: the proof that nothing ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def manifest_of(tmp_path: Path) -> tuple[str, Path, dict]:
    path = write_checkpoint(tmp_path, "a", "t", 1, full_state())
    return path, tmp_path / path, json.loads((tmp_path / path).read_text())


def refused(tmp_path: Path, path: str, *needles: str, groups=None) -> str:
    with pytest.raises(SnapshotError) as caught:
        read_checkpoint(tmp_path, path, groups)
    text = str(caught.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def test_a_planted_pickle_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps(Boom(marker))
    path, manifest_path, manifest = manifest_of(tmp_path)
    # as the manifest itself
    manifest_path.write_bytes(payload)
    refused(tmp_path, path, str(manifest_path), "not a telepipe manifest")
    # as a data file, with its size and checksum put in the manifest
    path, manifest_path, manifest = manifest_of(tmp_path / "2")
    name = manifest["files"][0]["name"]
    (manifest_path.parent / name).write_bytes(payload)
    manifest["files"][0].update(
        bytes=len(payload), sha256=__import__("hashlib").sha256(payload).hexdigest()
    )
    manifest_path.write_text(json.dumps(manifest))
    refused(tmp_path / "2", path, "not an Arrow IPC file", name)
    # an old-style state path, as telepipe 0.1 named pickles in commit metadata
    old = tmp_path / STATE_DIR / "telepipe" / "windows" / "000000000001.pkl"
    old.parent.mkdir(parents=True)
    old.write_bytes(payload)
    refused(tmp_path, f"{STATE_DIR}/telepipe/windows/000000000001.pkl", "refusing state path")
    assert not marker.exists()


def test_no_module_of_telepipe_loads_pickles() -> None:
    found = []
    for directory in ("telepipe", "operators", "pipelines", "sinks", "sources"):
        for path in (ROOT / directory).rglob("*.py"):
            text = path.read_text()
            if re.search(r"\bpickle\b|\bmarshal\b|\bshelve\b|allow_pickle\s*=\s*True", text):
                found.append(str(path.relative_to(ROOT)))
    assert found == []


@pytest.mark.parametrize(
    "where",
    [
        "/etc/manifest.json",
        "../outside/_telepipe_state/0123456789abcdef/000000000001/manifest.json",
        f"{STATE_DIR}/../{STATE_DIR}/x/000000000001/{MANIFEST}",
        f"{STATE_DIR}/0123456789abcdef/000000000001/../000000000001/{MANIFEST}",
        f"{STATE_DIR}/0123456789abcdef/000000000001/other.json",
        "",
    ],
)
def test_a_state_path_that_is_not_one_telepipe_makes_is_refused(tmp_path: Path, where: str) -> None:
    refused(tmp_path, where, "refusing state path" if where else "non-empty")


def test_a_symlink_out_of_data_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    path = write_checkpoint(outside, "a", "t", 1, full_state())
    data_dir = tmp_path / "d"
    (data_dir / STATE_DIR).mkdir(parents=True)
    owner = path.split("/")[1]
    os.symlink(outside / STATE_DIR / owner, data_dir / STATE_DIR / owner)
    refused(data_dir, path, "leads out of data_dir")
    # the manifest itself a symlink
    data_dir2 = tmp_path / "d2"
    real = data_dir2 / path
    real.parent.mkdir(parents=True)
    os.symlink(outside / path, real)
    refused(data_dir2, path, "leads out of data_dir")
    # a data file a symlink (to a copy of itself outside): O_NOFOLLOW
    mine = write_checkpoint(data_dir2 / "x", "a", "t", 1, full_state())
    manifest = json.loads((data_dir2 / "x" / mine).read_text())
    name = manifest["files"][0]["name"]
    target = data_dir2 / "x" / Path(mine).parent / name
    copy = tmp_path / "copy.arrow"
    copy.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(copy, target)
    refused(data_dir2 / "x", mine, name)


def edit(tmp_path: Path, change) -> str:
    path, manifest_path, manifest = manifest_of(tmp_path)
    change(manifest)
    manifest_path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda m: m.update(format_version=FORMAT_VERSION + 1), ["checkpoint format 2"]),
        (lambda m: m.update(format="other"), ["not a telepipe checkpoint manifest"]),
        (lambda m: m.update(key_hash="python-hash"), ["key hash 'python-hash'"]),
        (lambda m: m.update(key_groups=0), ["key_groups must be in"]),
        (lambda m: m.update(surprise=1), ["unknown field(s) 'surprise'"]),
        (lambda m: m.pop("steps"), ["missing field(s) 'steps'"]),
        (lambda m: m["steps"][0].update(code="os.system"), ["step 'win'", "'code'"]),
        (lambda m: m["files"][0].update(bytes=2**62), ["size 4611686018427387904 out of range"]),
        (lambda m: m["files"][0].update(bytes=-1), ["size -1 out of range"]),
        (lambda m: m["files"][0].update(bytes=10), ["bytes, the manifest says 10"]),
        (lambda m: m["files"][0].update(bytes="10"), ["'bytes' has the wrong type"]),
        (lambda m: m["files"][0].update(sha256="0" * 64), ["sha256 differs"]),
        (lambda m: m["files"][0].update(name="../../x.arrow"), ["refusing file name"]),
        (lambda m: m["files"][0].update(extra=1), ["unknown field(s) 'extra'"]),
        (lambda m: m["steps"][0]["arrays"][0].update(dtype="object"), ["not a number type"]),
        (lambda m: m["steps"][0]["arrays"][0].update(shape=[-1]), ["not a list of sizes"]),
        (lambda m: m["steps"][0]["arrays"][0].update(shape=[10**12]), ["can hold"]),
        (lambda m: m["steps"][0]["scalars"].update(half={"float": "0x1p99999"}), ["tagged"]),
        (lambda m: m["steps"][0]["arrays"][2].update(shape=[4, 2**40]), ["can hold"]),
        (lambda m: m["steps"][0]["arrays"][2].update(shape=[4, 10**20]), ["can hold"]),
        (lambda m: m["steps"][0]["arrays"][2].update(shape=[5, 2**32, 2**32]), ["can hold"]),
        (lambda m: m["steps"][0]["arrays"][2].update(shape=[4, 0, 2**40, 2**40]), ["can hold"]),
        (lambda m: m["steps"][0]["arrays"][0].update(file="s999-t999.arrow"), ["not in the"]),
        (lambda m: m["steps"][0]["scalars"].update(watermark={"pickle": "x"}), ["tagged"]),
        (lambda m: m["steps"].append(m["steps"][0]), ["step 'win' twice"]),
    ],
)
def test_a_crafted_manifest_is_refused_in_one_line(tmp_path: Path, change, needles) -> None:
    path = edit(tmp_path, change)
    refused(tmp_path, path, str(tmp_path / path), *needles)


@pytest.mark.parametrize("damage", ["missing", "cut", "flipped", "fifo", "bigger"])
def test_a_damaged_data_file_is_refused_naming_it(tmp_path: Path, damage: str) -> None:
    path, manifest_path, manifest = manifest_of(tmp_path)
    name = manifest["files"][-1]["name"]
    target = manifest_path.parent / name
    data = target.read_bytes()
    target.unlink()
    if damage == "cut":
        target.write_bytes(data[:-9])
    elif damage == "flipped":
        target.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "fifo":
        os.mkfifo(target)  # reading it would block forever
    elif damage == "bigger":
        target.write_bytes(data + b"\0" * 8)
    refused(tmp_path, path, name)


def test_a_state_file_bigger_than_its_manifest_says_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    resource = pytest.importorskip("resource")
    path, manifest_path, manifest = manifest_of(tmp_path)
    entry = manifest["files"][-1]
    target = manifest_path.parent / entry["name"]
    os.truncate(target, 2 << 30)  # sparse: 2 GiB on no disk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(tmp_path, path, entry["name"], f"the manifest says {entry['bytes']}")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 << 10, f"reading grew the peak RSS by {grown_kib} KiB"


@pytest.mark.parametrize(
    ("column", "needles"),
    [
        (("u", pa.array([b"0" * 16] * 3, pa.binary(16)).view(pa.uuid())), ["type extension"]),
        (("j", pa.array(["{}"] * 3, pa.string()).view(pa.json_())), ["type extension"]),
        (("d", pa.array(["a", "b", "a"]).dictionary_encode()), ["dictionary"]),
        (("l", pa.array([[1], [], [2, 3]], pa.list_(pa.int64()))), ["list"]),
        (("s", pa.array([{"x": 1}] * 3)), ["struct"]),
        (("sensor_id", pa.array([5, 0, -7], pa.int64())), ["must be int32", "int64"]),
        (("sensor_id", pa.array([5, None, -7], pa.int32())), ["1 null(s)"]),
    ],
)
def test_a_rows_file_of_types_telepipe_does_not_write_is_refused(
    tmp_path: Path, column, needles
) -> None:
    name, values = column
    batch = rows_batch([5, 0, -7])
    if name in batch.schema.names:
        batch = batch.set_column(batch.schema.get_field_index(name), name, values)
    else:
        batch = batch.append_column(name, values)
    snap = Snapshot("TumblingWindow", 1, {}, {"pending": batch})
    path = write_checkpoint(tmp_path, "a", "t", 1, {"w": snap})
    refused(tmp_path, path, str(tmp_path / path), "step 'w'", *needles)


def test_a_missing_manifest_is_one_line(tmp_path: Path) -> None:
    path, manifest_path, _ = manifest_of(tmp_path)
    manifest_path.unlink()
    refused(tmp_path, path, "missing")
