"""End to end on real Ray: a distributed run's mask table equals the single-process one, row for row.

Inputs are real videos: short H.264 clips cut from ../shared/videos with PyAV
(so a run takes seconds) plus one full shared video read in place, with point,
box and mask prompts and a correction on a later frame. The same run is done
with everything (videos, checkpoint, manifest, output) on S3 served by moto
on loopback. The helpers here are shared by the other pipeline test modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest

from pipeline.coordinator import RunConfig, run_labeling
from pipeline.masks import encode_mask
from pipeline.retry import RetryPolicy
from pipeline.sink import read_masks

CLIP_SIZE = (128, 96)  # width, height
RUN_ID = "test-run"


# ---------------------------------------------------------------- shared helpers


def make_clip(source: Path, target: Path, frames: int = 24, start: int = 0, size=CLIP_SIZE) -> Path:
    """Re-encode `frames` frames of a real video (from `start`) to a small H.264 MP4."""
    width, height = size
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "12"}
        written = 0
        for index, frame in enumerate(src.decode(video=0)):
            if index < start:
                continue
            small = frame.reformat(width=width, height=height, format="yuv420p")
            small.pts = None
            for packet in stream.encode(small):
                dst.mux(packet)
            written += 1
            if written == frames:
                break
        for packet in stream.encode():
            dst.mux(packet)
    return target


def ellipse_rle(height: int, width: int, cx: float, cy: float, rx: float, ry: float) -> dict:
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    return {"size": [height, width], "counts": encode_mask(mask)[0]}


def demo_entries(clips: dict[str, str]) -> list[dict]:
    """Manifest entries over clips named dog/coffee/bedroom: points, a box, a mask, a correction."""
    w, h = CLIP_SIZE
    return [
        {
            "video": clips["dog"],
            "video_id": "dog",
            "objects": [
                {
                    "object_id": 1,
                    "prompts": [
                        {"frame": 0, "points": [[64, 50]], "labels": [1]},
                        # a correction on a later frame: the first click plus a negative one
                        {"frame": 10, "points": [[64, 50], [20, 20]], "labels": [1, 0]},
                    ],
                },
                {"object_id": 2, "prompts": [{"frame": 5, "box": [10, 10, 60, 70]}]},
            ],
        },
        {
            "video": clips["coffee"],
            "video_id": "coffee",
            "objects": [
                {"object_id": 1, "prompts": [{"frame": 0, "box": [40, 20, 110, 90]}]},
                {
                    "object_id": 7,
                    "prompts": [{"frame": 12, "mask": ellipse_rle(h, w, 60, 45, 25, 18)}],
                },
            ],
        },
        {
            "video": clips["bedroom"],
            "video_id": "bedroom",
            "objects": [
                {"object_id": 3, "prompts": [{"frame": 20, "points": [[30, 60]], "labels": [1]}]}
            ],
        },
    ]


def write_jsonl(path: Path, entries: list) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries))
    return path


def make_clips(videos_dir: Path, folder: Path, frames: int = 24) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: str(make_clip(videos_dir / source, folder / f"{name}.mp4", frames=frames))
        for name, source in (
            ("dog", "01_dog.mp4"),
            ("coffee", "04_coffee.mp4"),
            ("bedroom", "bedroom.mp4"),
        )
    }


def mini_model(mini_a_dir: Path) -> tuple[str, str]:
    return str(mini_a_dir / "config.json"), str(mini_a_dir / "checkpoint.pt")


def run_config(manifest, output, mini_a_dir: Path, **overrides) -> RunConfig:
    model, checkpoint = mini_model(mini_a_dir)
    settings = dict(
        manifest=str(manifest),
        output=str(output),
        model=model,
        checkpoint=checkpoint,
        workers=2,
        torch_threads=1,
        run_id=RUN_ID,
        progress=False,
        retry=RetryPolicy(max_attempts=3, backoff_s=0.1),
    )
    settings.update(overrides)
    return RunConfig(**settings)


def reference_table(mini_a_dir: Path, manifest, storage_options=None) -> pa.Table:
    """The single-process result for `manifest`, at one torch thread like the workers."""
    import torch

    from pipeline.coordinator import describe_model, sha256_of
    from pipeline.labeling import label_jobs
    from pipeline.manifest import read_manifest
    from sam2_core import build_model

    model_arg, checkpoint = mini_model(mini_a_dir)
    jobs, _ = read_manifest(str(manifest), storage_options=storage_options)
    label, _ = describe_model(model_arg)
    name = f"{label}@{sha256_of(checkpoint)[:12]}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(model_arg, checkpoint=checkpoint)
        return label_jobs(
            model, jobs, run_id=RUN_ID, model_name=name, storage_options=storage_options
        )
    finally:
        torch.set_num_threads(threads)


def sorted_masks(output, storage_options=None) -> pa.Table:
    table = read_masks(str(output), storage_options=storage_options)
    return table.sort_by(
        [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
    )


def assert_same_rows(actual: pa.Table, expected: pa.Table) -> None:
    """Row-for-row equality, with a readable first difference."""
    assert actual.schema.names == expected.schema.names
    assert actual.num_rows == expected.num_rows, (actual.num_rows, expected.num_rows)
    keys = list(
        zip(*(actual.column(c).to_pylist() for c in ("video_id", "object_id", "frame_index")))
    )
    assert len(set(keys)) == len(keys), "duplicated (video, object, frame) rows"
    for name in expected.schema.names:
        a, e = actual.column(name).to_pylist(), expected.column(name).to_pylist()
        if a != e:
            i = next(i for i, (x, y) in enumerate(zip(a, e)) if x != y)
            raise AssertionError(
                f"column {name} differs first at row {i} {keys[i]}: {a[i]!r} != {e[i]!r}"
            )


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def e2e_inputs(tmp_path_factory, videos_dir, mini_a_dir):
    folder = tmp_path_factory.mktemp("e2e")
    clips = make_clips(videos_dir, folder / "clips")
    entries = demo_entries(clips)
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
    assert (s["units"], s["units_done"], s["failed"], s["rejected"], s["skipped"]) == (
        4,
        4,
        0,
        0,
        0,
    )
    assert s["frames"] == 3 * 24 + 200
    assert s["rows"] == expected.num_rows == 24 * 5 + 200
    assert s["frames_per_s"] > 0
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
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["rows"] == expected.num_rows and summary["run_id"] == RUN_ID
    secs = summary["unit_seconds"]
    assert set(secs) == {"total", "track", "decode", "encode", "commit"}
    assert 0 < secs["decode"] <= secs["track"] <= secs["total"] and secs["encode"] > 0


@pytest.mark.slow
def test_run_with_everything_on_s3_equals_single_process(
    ray_local, tmp_path, videos_dir, mini_a_dir
):
    from s3_server import start_s3

    clips = make_clips(videos_dir, tmp_path / "clips", frames=16)
    model, checkpoint = mini_model(mini_a_dir)
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
        assert result.summary["rows"] == 16 * 5
        actual = sorted_masks("s3://labeler-out/run1", storage_options=so)
        expected = reference_table(mini_a_dir, "s3://labeler-in/manifest.jsonl", storage_options=so)
        summary = json.loads(fs.cat_file("s3://labeler-out/run1/summary.json"))
        assert summary["units_done"] == 3 and summary["failed"] == 0
    # the checkpoint was fetched once into the node cache, under its digest
    assert len(list((tmp_path / "cache" / "checkpoints").glob("*-mini.pt"))) == 1
    assert_same_rows(actual, expected)
