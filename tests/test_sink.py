"""Output store: commit protocol (no duplicates, crashes invisible), on a local folder and on S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from s3_server import start_s3

from pipeline import sink
from pipeline.manifest import Reject
from pipeline.masks import MASK_SCHEMA, encode_mask, masks_from_table
from pipeline.records import FAILURE_SCHEMA, RunSummary, UnitFailure
from pipeline.sink import OutputStore, read_masks
from pipeline.storage import url_to_fs

BUCKET = "sink-tests"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3():
    with start_s3(buckets=[BUCKET]) as server:
        yield server


def make_masks(video_id: str, object_id: int, frames: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    masks = {}
    for frame in range(frames):
        mask = np.zeros((24, 32), bool)
        top, left = rng.integers(0, 12), rng.integers(0, 16)
        mask[top : top + rng.integers(1, 12), left : left + rng.integers(1, 16)] = True
        masks[(video_id, object_id, frame)] = mask
    return masks


def mask_table(masks: dict) -> pa.Table:
    rows = []
    for (video_id, object_id, frame), mask in masks.items():
        counts, area, bbox = encode_mask(mask)
        rows.append(
            {
                "video_id": video_id,
                "object_id": object_id,
                "frame_index": frame,
                "height": mask.shape[0],
                "width": mask.shape[1],
                "rle": counts,
                "area": area,
                "bbox": list(bbox),
                "score": 0.5,
                "present": area > 0,
                "prompted": frame == 0,
                "run_id": "r1",
                "model": "test",
                "source": "prompt",
            }
        )
    return pa.Table.from_pylist(rows, schema=MASK_SCHEMA)


def published_files(uri: str, options: dict) -> list[str]:
    fs, root = url_to_fs(uri, {**options, "skip_instance_cache": True} if options else None)
    try:
        return sorted(path.rsplit("/", 1)[-1] for path in fs.ls(f"{root}/masks", detail=False))
    except FileNotFoundError:
        return []


def dataset_rows(uri: str, options: dict) -> pa.Table:
    """What a plain ``pyarrow.dataset`` over masks/ sees (default ignore_prefixes), through
    pyarrow's own filesystem as a user would open it."""
    fs, root = url_to_fs(uri, {**options, "skip_instance_cache": True} if options else None)
    if not fs.exists(f"{root}/masks"):
        return MASK_SCHEMA.empty_table()
    dataset = pads.dataset(
        f"{root}/masks", format="parquet", filesystem=sink.arrow_filesystem(fs, options)
    )
    return dataset.to_table()


def failure(unit_id: str, object_ids=(1,), attempts: int = 1) -> UnitFailure:
    return UnitFailure(
        unit_id, "/v.mp4", "v", object_ids, "m.jsonl line 1", attempts, "OSError", True, "x"
    )


def test_committing_a_unit_twice_leaves_one_file_and_one_set_of_rows(output):
    uri, options = output
    store = OutputStore(uri, options)
    masks = make_masks("cups", 1, 5, seed=0)
    first = store.commit_unit("cups-aaa", mask_table(masks), {"attempt": 1})
    second = store.commit_unit("cups-aaa", mask_table(masks), {"attempt": 2})
    assert first == second
    assert published_files(uri, options) == ["cups-aaa.parquet"]
    assert store.committed_units() == {"cups-aaa"}
    assert store.is_committed("cups-aaa") and not store.is_committed("cups-bbb")
    assert store.read_commit("cups-aaa")["metadata"] == {"attempt": 2}
    assert store.read_commit("cups-aaa")["rows"] == 5
    table = read_masks(uri, options)
    assert table.num_rows == 5
    restored = masks_from_table(table)
    assert restored.keys() == masks.keys()
    assert all(np.array_equal(restored[key], masks[key]) for key in masks)
    assert dataset_rows(uri, options).num_rows == 5


def test_read_masks_combines_units_sorted_and_empty_output_reads_empty(output):
    uri, options = output
    assert read_masks(uri, options).equals(MASK_SCHEMA.empty_table())
    store = OutputStore(uri, options)
    assert store.committed_units() == set()
    masks_b = make_masks("b", 2, 3, seed=1)
    masks_a = {**make_masks("a", 5, 2, seed=2), **make_masks("a", 1, 2, seed=3)}
    store.commit_unit("unit-b", mask_table(masks_b), {})
    store.commit_unit("unit-a", mask_table(masks_a), {})
    table = read_masks(uri, options)
    assert table.schema.equals(MASK_SCHEMA)
    keys = list(
        zip(*(table.column(c).to_pylist() for c in ("video_id", "object_id", "frame_index")))
    )
    assert keys == sorted({**masks_a, **masks_b})


def test_staging_files_of_a_crashed_writer_are_never_read(output):
    uri, options = output
    store = OutputStore(uri, options)
    store.commit_unit("good-1", mask_table(make_masks("v", 1, 4, seed=4)), {})
    # a writer killed half-way: a complete and a torn file left in staging
    leftover = pa.BufferOutputStream()
    pq.write_table(mask_table(make_masks("v", 9, 6, seed=5)), leftover)
    data = leftover.getvalue().to_pybytes()
    store.fs.pipe_file(f"{store.root}/_staging/crashed-2.0123.parquet", data)
    store.fs.pipe_file(f"{store.root}/_staging/crashed-3.4567.parquet", data[: len(data) // 2])
    assert store.committed_units() == {"good-1"}
    assert read_masks(uri, options).num_rows == 4
    assert dataset_rows(uri, options).num_rows == 4
    assert published_files(uri, options) == ["good-1.parquet"]


def test_a_crash_before_the_commit_record_leaves_masks_empty_until_the_retry(output, monkeypatch):
    uri, options = output
    store = OutputStore(uri, options)
    table = mask_table(make_masks("v", 1, 3, seed=6))
    original = OutputStore._write_bytes

    def crash_on_commit_record(self, path, data):
        if "/_commits/" in path:
            raise OSError("worker lost before its commit record")
        original(self, path, data)

    monkeypatch.setattr(OutputStore, "_write_bytes", crash_on_commit_record)
    with pytest.raises(OSError, match="commit record"):
        store.commit_unit("unit-1", table, {})
    assert not store.is_committed("unit-1")
    assert read_masks(uri, options).num_rows == 0
    assert dataset_rows(uri, options).num_rows == 0  # nothing uncommitted is in masks/
    assert published_files(uri, options) == []
    monkeypatch.setattr(OutputStore, "_write_bytes", original)
    store.commit_unit("unit-1", table, {})  # the retry writes the same names
    assert published_files(uri, options) == ["unit-1.parquet"]
    assert read_masks(uri, options).num_rows == 3


def test_a_crash_while_writing_data_publishes_nothing(output, monkeypatch):
    uri, options = output
    store = OutputStore(uri, options)

    def torn_write(table, where, **kwargs):
        if hasattr(where, "write"):
            where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(sink.pq, "write_table", torn_write)
    with pytest.raises(OSError, match="disk full"):
        store.commit_unit("unit-1", mask_table(make_masks("v", 1, 2, seed=7)), {})
    assert published_files(uri, options) == []
    assert not store.is_committed("unit-1")
    fs, root = url_to_fs(uri, {**options, "skip_instance_cache": True} if options else None)
    assert not fs.exists(f"{root}/_staging") or fs.ls(f"{root}/_staging") == []


def test_another_client_sees_new_commits_despite_listing_caches(s3):
    uri = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/out"
    writer = OutputStore(uri, {**s3.storage_options, "skip_instance_cache": True})
    reader = OutputStore(uri, {**s3.storage_options, "skip_instance_cache": True})
    assert writer.fs is not reader.fs
    writer.commit_unit("first", mask_table(make_masks("v", 1, 1, seed=8)), {})
    assert reader.committed_units() == {"first"}  # the listing is now cached by reader's client
    writer.commit_unit("second", mask_table(make_masks("v", 2, 1, seed=9)), {})
    assert reader.committed_units() == {"first", "second"}
    assert reader.is_committed("second")
    assert read_masks(uri, s3.storage_options).num_rows == 2


def test_failures_rejects_and_summary(output):
    uri, options = output
    store = OutputStore(uri, options)
    store.write_failures([failure("u1", object_ids=(1, 2)), failure("u2", attempts=3)])
    store.write_rejects([Reject("m.jsonl line 2", "box", "x2 <= x1", "{...}", "/v.mp4")], "m.jsonl")
    store.write_summary(
        RunSummary("r1", "m.jsonl", uri, "m@1", None, None, "t0", units=3, failed=2)
    )
    fs, root = store.fs, store.root
    with fs.open(f"{root}/failures/failures.parquet", "rb") as handle:
        table = pq.read_table(handle)
    assert table.schema == FAILURE_SCHEMA  # fixed columns and types, whatever the rows hold
    assert [row["unit_id"] for row in table.to_pylist()] == ["u1", "u2"]
    assert store.read_failures() == [failure("u1", object_ids=(1, 2)), failure("u2", attempts=3)]
    with fs.open(f"{root}/rejects/rejects.parquet", "rb") as handle:
        rejects = pq.read_table(handle).to_pylist()
    assert rejects == [
        {
            "location": "m.jsonl line 2",
            "field": "box",
            "reason": "x2 <= x1",
            "raw": "{...}",
            "video": "/v.mp4",
            "manifest": "m.jsonl",
        }
    ]
    summary = json.loads(fs.cat_file(f"{root}/summary.json"))
    assert (summary["units"], summary["failed"], summary["run_id"]) == (3, 2, "r1")
    assert RunSummary.from_json(fs.cat_file(f"{root}/summary.json")).units == 3
    store.write_failures([])  # a later run without failures leaves no stale ones
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/failures/failures.parquet")
    store.write_rejects([], "m.jsonl")
    with fs.open(f"{root}/rejects/rejects.parquet", "rb") as handle:
        assert pq.read_table(handle).num_rows == 0


def test_bad_tables_and_unit_ids_are_refused(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    table = mask_table(make_masks("v", 1, 1, seed=10))
    with pytest.raises(ValueError, match="missing \\['model'\\]"):
        store.commit_unit("u", table.drop_columns(["model"]), {})
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        store.commit_unit("u", table.append_column("extra", pa.array([1])), {})
    with pytest.raises(ValueError, match="MASK_SCHEMA"):
        bad = table.set_column(1, "object_id", pa.array(["one"]))
        store.commit_unit("u", bad, {})
    for unit_id in ("_hidden", ".dot", "a/b", "", "x" * 201):
        with pytest.raises(ValueError, match="unit id"):
            store.commit_unit(unit_id, table, {})
    # columns in another order are accepted and stored in schema order
    reordered = table.select(list(reversed(MASK_SCHEMA.names)))
    store.commit_unit("u", reordered, {})
    assert read_masks(str(tmp_path / "out")).schema.equals(MASK_SCHEMA)


def test_a_crash_after_the_commit_record_publishes_nothing_and_the_retry_converges(
    output, monkeypatch
):
    uri, options = output
    store = OutputStore(uri, options)
    table = mask_table(make_masks("v", 1, 3, seed=11))

    def lost(*args, **kwargs):
        raise OSError("worker lost after its commit record")

    # local disks publish by renaming out of _staging/, object stores by one upload
    target = (store.fs, "pipe_file") if options else (sink.os, "replace")
    original = getattr(*target)
    calls = []

    def fail_on_data(*args, **kwargs):
        path = str(args[0] if options else args[1])
        calls.append(path)
        if "/masks/" in path:
            lost()
        return original(*args, **kwargs)

    monkeypatch.setattr(*target, fail_on_data)
    with pytest.raises(OSError, match="after its commit record"):
        store.commit_unit("unit-1", table, {})
    monkeypatch.setattr(*target, original)
    assert any("/masks/" in path for path in calls)
    assert store.read_commit("unit-1")["rows"] == 3  # the record is there ...
    assert not store.is_committed("unit-1") and store.committed_units() == set()  # ... alone
    assert read_masks(uri, options).num_rows == 0
    assert dataset_rows(uri, options).num_rows == 0
    store.commit_unit("unit-1", table, {})
    assert store.committed_units() == {"unit-1"}
    assert dataset_rows(uri, options).num_rows == 3


def test_data_files_left_without_a_commit_record_are_removed(output):
    """Writers before this protocol published data before the record: a crash between left
    rows that a plain pyarrow.dataset reader counts (a second labeling then duplicated them)."""
    uri, options = output
    store = OutputStore(uri, options)
    store.commit_unit("kept", mask_table(make_masks("v", 1, 2, seed=12)), {})
    leftover = pa.BufferOutputStream()
    pq.write_table(mask_table(make_masks("v", 2, 4, seed=13)), leftover)
    store.fs.pipe_file(store.data_path("orphan"), leftover.getvalue().to_pybytes())
    assert dataset_rows(uri, options).num_rows == 6
    assert store.remove_uncommitted_data() == ["orphan"]
    assert published_files(uri, options) == ["kept.parquet"]
    assert dataset_rows(uri, options).num_rows == 2
    assert store.remove_uncommitted_data() == []


def test_a_failed_write_keeps_the_earlier_failures_table_whole(output, monkeypatch):
    uri, options = output
    store = OutputStore(uri, options)
    store.write_failures([failure("u1")])

    def disk_full(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(sink.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.write_failures([failure("u2")])
    with pytest.raises(OSError, match="No space"):
        store.write_rejects([Reject("m.jsonl line 1", "box", "bad", "{}")], "m.jsonl")
    monkeypatch.undo()
    assert store.read_failures() == [failure("u1")]
    fs, root = url_to_fs(uri, {**options, "skip_instance_cache": True} if options else None)
    assert not fs.exists(f"{root}/rejects/rejects.parquet")
    assert not fs.exists(f"{root}/_staging") or fs.ls(f"{root}/_staging") == []


def test_rejects_of_other_manifests_are_kept(output):
    uri, options = output
    store = OutputStore(uri, options)
    store.write_rejects([Reject("a.jsonl line 1", "box", "bad", "{}")], "s3://b/a.jsonl")
    store.write_rejects([Reject("b.jsonl line 3", "labels", "missing", "{}")], "s3://b/b.jsonl")
    store.write_rejects([], "s3://b/a.jsonl")  # a.jsonl fixed and re-run: its rows go
    assert [(r["manifest"], r["location"]) for r in store.read_rejects()] == [
        ("s3://b/b.jsonl", "b.jsonl line 3")
    ]


def test_exclusive_create_lets_exactly_one_writer_win(output):
    uri, options = output
    store = OutputStore(uri, options)
    path = f"{store.root}/_claims/key.json"
    assert store.create_exclusive(path, b'{"who": 1}')
    assert not store.create_exclusive(path, b'{"who": 2}')
    assert store.read_json(path) == {"who": 1}
    assert store.read_json(f"{store.root}/_claims/none.json") is None


def test_read_masks_reads_through_pyarrow_native_filesystems(output):
    uri, options = output
    store = OutputStore(uri, options)
    store.commit_unit("u", mask_table(make_masks("v", 1, 2, seed=14)), {})
    native = sink.arrow_filesystem(store.fs, options)
    expected = pafs.S3FileSystem if options else pafs.LocalFileSystem
    assert isinstance(native, expected)
    assert native.get_file_info(store.data_path("u")).type == pafs.FileType.File
    assert read_masks(uri, options).num_rows == 2
    if options:  # settings pyarrow's S3 cannot take: none (read_masks then reads bytes itself)
        assert sink.arrow_filesystem(store.fs, {**options, "profile": "x"}) is None


def test_read_masks_without_a_native_filesystem_reads_whole_files():
    uri = f"memory://sink-{uuid.uuid4().hex[:8]}/out"
    store = OutputStore(uri)
    assert sink.arrow_filesystem(store.fs) is None
    masks = make_masks("v", 3, 4, seed=15)
    store.commit_unit("u", mask_table(masks), {})
    assert read_masks(uri).equals(mask_table(masks))


READER = """
import sys
from pipeline.sink import read_masks
assert read_masks(sys.argv[1]).num_rows == int(sys.argv[2])
"""


@pytest.mark.slow
def test_processes_that_read_masks_exit_cleanly(tmp_path):
    """Through PyFileSystem(FSSpecHandler) about 1 in 10 such processes aborted at exit
    ("terminate called without an active exception", rc 134): pyarrow I/O threads still
    calling into Python while the interpreter shut down."""
    uri = str(tmp_path / "out")
    store = OutputStore(uri)
    for index in range(6):
        store.commit_unit(f"u{index}", mask_table(make_masks(f"v{index}", 1, 20, seed=index)), {})
    script = tmp_path / "reader.py"
    script.write_text(READER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    codes = []
    for _ in range(24):
        done = subprocess.run(
            [sys.executable, str(script), uri, "120"], env=env, capture_output=True, text=True
        )
        codes.append(done.returncode)
        assert done.returncode == 0, (codes, done.stderr[-2000:])
