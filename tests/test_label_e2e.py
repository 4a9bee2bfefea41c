"""End to end on real Ray: a distributed run's mask table equals the single-process one, row for row.

Inputs are real videos: short H.264 clips cut from ../shared/videos with PyAV
(so a run takes seconds) plus one full shared video read in place, with point,
box and mask prompts and a correction on a later frame. The same run is done
with everything (videos, checkpoint, manifest, output) on S3 served by moto
on loopback.
"""

from __future__ import annotations

import json

import pytest
from labeling_helpers import (
    RUN_ID,
    assert_same_rows,
    demo_entries,
    make_clips,
    mini_files,
    reference_table,
    run_config,
    sorted_masks,
    write_jsonl,
)

from pipeline.coordinator import run_labeling

# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def e2e_inputs(tmp_path_factory, videos_dir, mini_a_dir):
    folder = tmp_path_factory.mktemp("e2e")
    clips = make_clips(videos_dir, folder / "clips")
    entries = demo_entries(clips)
    entries[0]["objects"][1]["category"] = "dog"  # the manifest names one object's class
    # One full real video read in place from ../shared: 200 frames at 960 x 540, prompted on frame 0.
    entries.append(
        {
            "video": str(videos_dir / "bedroom.mp4"),
            "video_id": "bedroom-full",
            "objects": [{"object_id": 1, "prompts": [{"frame": 0, "box": [380, 150, 620, 420]}]}],
        }
    )
    manifest = write_jsonl(folder / "manifest.jsonl", entries)
    return folder, manifest, reference_table(mini_a_dir, manifest)


@pytest.mark.slow
def test_distributed_run_equals_single_process_row_for_row(ray_local, e2e_inputs, mini_a_dir):
    folder, manifest, expected = e2e_inputs
    result = run_labeling(run_config(manifest, folder / "out", mini_a_dir))
    assert result.exit_code == 0, result.failures
    s = result.summary
    assert (s.units, s.units_done, s.failed, s.rejected, s.skipped) == (
        4,
        4,
        0,
        0,
        0,
    )
    assert s.frames == 3 * 24 + 200
    assert s.rows == expected.num_rows == 24 * 5 + 200
    assert s.frames_per_s > 0
    assert_same_rows(sorted_masks(folder / "out"), expected)
    # The prompted frames are flagged, and only those.
    prompted = {
        (v, o, f)
        for v, o, f, p in zip(
            *(
                expected.column(c).to_pylist()
                for c in ("video_id", "object_id", "frame_index", "prompted")
            )
        )
        if p
    }
    assert prompted == {
        ("dog", 1, 0),
        ("dog", 1, 10),
        ("dog", 2, 5),
        ("coffee", 1, 0),
        ("coffee", 7, 12),
        ("bedroom", 3, 20),
        ("bedroom-full", 1, 0),
    }
    # Every row is of a prompted object; the manifest's category rides on its object's rows;
    # the object-score logit says what `present` says.
    rows = expected.select(
        ["video_id", "object_id", "present", "object_score_logit", "source", "category"]
    ).to_pylist()
    assert {row["source"] for row in rows} == {"prompt"}
    assert {(r["video_id"], r["object_id"]) for r in rows if r["category"]} == {("dog", 2)}
    assert {r["category"] for r in rows if (r["video_id"], r["object_id"]) == ("dog", 2)} == {"dog"}
    assert all((row["object_score_logit"] > 0) == row["present"] for row in rows)
    assert {row["present"] for row in rows} == {True, False}  # both signs are exercised
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["rows"] == expected.num_rows and summary["run_id"] == RUN_ID
    secs = summary["unit_seconds"]
    assert set(secs) == {
        "total", "track", "decode", "transfer", "encode", "encode_wait", "write", "discover",
        "propose",
    }  # fmt: skip
    assert secs["discover"] == secs["propose"] == 0  # prompted videos find no objects
    assert 0 < secs["decode"] < secs["total"] and 0 < secs["track"] < secs["total"]
    assert secs["transfer"] > 0 and secs["encode"] > 0 and secs["write"] > 0


@pytest.mark.slow
def test_run_with_everything_on_s3_equals_single_process(
    ray_local, tmp_path, videos_dir, mini_a_dir
):
    from s3_server import start_s3

    clips = make_clips(videos_dir, tmp_path / "clips", frames=16)
    model, checkpoint = mini_files(mini_a_dir)
    with start_s3(buckets=["labeler-in", "labeler-out"]) as s3:
        so = s3.storage_options
        fs = s3.filesystem()
        remote = {}
        for name, path in clips.items():
            remote[name] = f"s3://labeler-in/clips/{name}.mp4"
            fs.put_file(path, remote[name])
        fs.put_file(checkpoint, "s3://labeler-in/models/mini.pt")
        entries = demo_entries(remote)
        for entry in entries:  # 16-frame clips: keep every prompt inside them
            for obj in entry["objects"]:
                for prompt in obj["prompts"]:
                    prompt["frame"] = min(prompt["frame"], 15)
        fs.pipe_file(
            "s3://labeler-in/manifest.jsonl",
            "".join(json.dumps(e) + "\n" for e in entries).encode(),
        )
        config = run_config(
            "s3://labeler-in/manifest.jsonl",
            "s3://labeler-out/run1",
            mini_a_dir,
            checkpoint="s3://labeler-in/models/mini.pt",
            storage_options=so,
            checkpoint_cache=str(tmp_path / "cache"),
        )
        result = run_labeling(config)
        assert result.exit_code == 0, result.failures
        assert result.summary.rows == 16 * 5
        actual = sorted_masks("s3://labeler-out/run1", storage_options=so)
        expected = reference_table(mini_a_dir, "s3://labeler-in/manifest.jsonl", storage_options=so)
        summary = json.loads(fs.cat_file("s3://labeler-out/run1/summary.json"))
        assert summary["units_done"] == 3 and summary["failed"] == 0
    # the checkpoint was fetched once into the node cache, under its digest
    assert len(list((tmp_path / "cache" / "checkpoints").glob("*-mini.pt"))) == 1
    assert_same_rows(actual, expected)
