"""Review signals and previews: a doubt ranking that puts planted problems first, and
previews of a run read from a local folder and from S3 (moto)."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from export_checks import commit, ellipse, mask_rows
from labeling_helpers import CLIP_SIZE, make_clip, write_jsonl
from PIL import Image

from pipeline.previews import overlay, preview_run
from pipeline.video import open_video

FRAMES = 10


def _planted_run(run: str) -> None:
    """Four objects on one 48 x 64 video: 1 steady, 2 vanishes on frame 4 and returns,
    3 grows 4x on frame 6, 4 has predicted IoU 0.2 on frames 2-3."""
    h, w = 48, 64
    masks, scores, absent = {}, {}, set()
    for f in range(FRAMES):
        masks[(1, f)] = ellipse(h, w, 10 + f, 12, 6, 5)
        masks[(2, f)] = ellipse(h, w, 40, 12, 5, 5) if f != 4 else np.zeros((h, w), bool)
        masks[(3, f)] = ellipse(h, w, 20, 34, 12 if f >= 6 else 6, 12 if f >= 6 else 6)
        masks[(4, f)] = ellipse(h, w, 50, 36, 6, 6)
        scores.update({(o, f): 0.95 for o in (1, 2, 3)})
        scores[(4, f)] = 0.2 if f in (2, 3) else 0.92
    absent.add((2, 4))
    commit(run, {"planted": mask_rows("v", masks, scores=scores, absent=absent)})


def test_review_ranks_planted_doubts_first(tmp_path, capsys):
    from jobs.__main__ import main

    run = str(tmp_path / "run")
    _planted_run(run)
    assert main(["review", "--run", run]) == 0
    assert "places to look" in capsys.readouterr().out
    rows = pq.read_table(tmp_path / "run" / "review.parquet").to_pylist()
    top = [(r["object_id"], r["signal"], r["first_frame"], r["last_frame"]) for r in rows[:3]]
    assert top == [(2, "vanish-return", 4, 4), (4, "low-score", 2, 3), (3, "area-jump", 6, 6)]
    assert all(r["object_id"] != 1 for r in rows)  # the steady object raises no doubt
    assert [r["doubt"] for r in rows] == sorted((r["doubt"] for r in rows), reverse=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, videos_dir):
    folder = tmp_path_factory.mktemp("preview")
    return make_clip(videos_dir / "01_dog.mp4", folder / "dog.mp4", frames=6)


def _clip_run(run: str, storage_options=None) -> None:
    width, height = CLIP_SIZE
    masks = {
        (o, f): ellipse(height, width, 30 + 40 * o + 2 * f, 48, 14, 12)
        for o in (1, 2)
        for f in range(6)
    }
    commit(run, {"dog-unit": mask_rows("dog", masks)}, storage_options)


def _manifest(video: str) -> dict:
    return {
        "video": video,
        "video_id": "dog",
        "objects": [
            {
                "object_id": o,
                "prompts": [{"frame": 0, "points": [[30 + 40 * o, 48]], "labels": [1]}],
            }
            for o in (1, 2)
        ],
    }


def test_preview_of_local_run_draws_masks_and_ids(tmp_path, clip, capsys):
    from jobs.__main__ import main

    run = str(tmp_path / "run")
    _clip_run(run)
    manifest = write_jsonl(tmp_path / "m.jsonl", [_manifest(str(clip))])
    dest = tmp_path / "previews"
    assert main(["preview", "--run", run, "--manifest", str(manifest), "--dest", str(dest)]) == 0
    assert "1 videos, 2 files" in capsys.readouterr().out
    with Image.open(dest / "dog.gif") as gif:
        assert gif.n_frames == 6
    with Image.open(dest / "dog.png") as image:
        strip = np.array(image.convert("RGB"))
    # 128 px frames are enlarged 3x; object 1's id is written in white at its centre (70, 48)
    assert strip.shape[1] == 6 * 3 * 128
    box = (slice(48 * 3 - 15, 48 * 3 + 15), slice(70 * 3 - 15, 70 * 3 + 15))
    assert (strip[box].min(axis=2) >= 240).any()  # anti-aliased white text
    with open_video(str(clip)) as frames:
        width, height = CLIP_SIZE
        plain = overlay(frames[0], [ellipse(height, width, 70, 48, 14, 12)])
    plain = np.repeat(np.repeat(plain, 3, axis=0), 3, axis=1)
    assert not (plain[box].min(axis=2) >= 240).any()  # without the id, nothing that white
    assert pq.read_table(dest / "review.parquet").num_rows == 0  # steady masks: nothing doubtful


def test_preview_of_s3_run_finds_videos_through_summary(tmp_path, clip):
    from s3_server import start_s3

    from pipeline.records import RunSummary
    from pipeline.sink import OutputStore

    with start_s3(buckets=["preview-run"]) as s3:
        options = s3.storage_options
        fs = s3.filesystem()
        fs.put(str(clip), "preview-run/videos/dog.mp4")
        fs.pipe("preview-run/m.jsonl", (json.dumps(_manifest("videos/dog.mp4")) + "\n").encode())
        _clip_run("s3://preview-run/run", options)
        summary = RunSummary(
            "r", "s3://preview-run/m.jsonl", "s3://preview-run/run", "m", None, None, "now"
        )
        OutputStore("s3://preview-run/run", options).write_summary(summary)
        result = preview_run(
            "s3://preview-run/run",
            "s3://preview-run/previews",
            video_format="mp4",
            storage_options=options,
            dest_storage_options=options,
        )
        assert result.files == (
            "s3://preview-run/previews/dog.mp4",
            "s3://preview-run/previews/dog.png",
        )
        movie = fs.cat("preview-run/previews/dog.mp4")
    with av.open(io.BytesIO(movie)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
