"""Precomputed detections in a manifest (pipeline.detections): read and checked with the
manifest, hashed into the unit id, checked against the video by the worker, and on a frame
where nothing is tracked yet they give exactly the box prompts of the same boxes as objects."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.labeling import label_video
from pipeline.manifest import read_manifest
from pipeline.plan import WHOLE_VIDEO, plan_units
from pipeline.retry import PERMANENT, classify
from pipeline.synthetic_io import encode_mp4
from sam2_core.demo_model import DEMO_SYNTHETIC_CONFIG
from sam2_core.proposals import Detection
from sam2_core.synthetic import generate_video

TINY = dataclasses.replace(
    DEMO_SYNTHETIC_CONFIG, num_frames=8, min_objects=2, max_objects=2, late_entries=0.0
)
KEYFRAME = 2


def _write(path, value) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def _jsonl(path, entries) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return str(path)


def test_detections_file_and_inline_list_become_the_jobs_detections(tmp_path):
    _write(
        tmp_path / "dets.json",
        {
            "video": "a.mp4",
            "categories": [{"id": 3, "name": "dog"}],
            "detections": [
                {"frame_index": 4, "bbox": [10, 20, 30, 40], "score": 0.5, "category_id": 3},
                {"image_id": 0, "bbox": [1, 2, 3, 4], "category": "cat", "id": 7, "area": 12},
            ],
        },
    )
    manifest = _jsonl(
        tmp_path / "m.jsonl",
        [
            {"video": "a.mp4", "video_id": "a", "detections": "dets.json"},
            {"video": "b.mp4", "detections": [{"frame_index": 1, "bbox": [0, 0, 5, 5]}]},
            {"video": "c.mp4", "detections": []},
        ],
    )
    jobs, rejects = read_manifest(manifest)
    assert rejects == []
    a, b, c = jobs
    assert a.detections_from == str(tmp_path / "dets.json")
    assert [
        (g.frame, g.detection.box, g.detection.score, g.detection.category) for g in a.detections
    ] == [
        (4, (10.0, 20.0, 40.0, 60.0), 0.5, "dog"),
        (0, (1.0, 2.0, 4.0, 6.0), None, "cat"),
    ]
    assert [g.field for g in a.detections] == ["detections[0]", "detections[1]"]
    assert b.detections[0].detection.box == (0.0, 0.0, 5.0, 5.0) and b.detections_from == ""
    assert c.detections == () and c.objects == ()


def test_bad_detections_are_rejects_naming_the_line_and_field(tmp_path):
    _write(tmp_path / "other.json", {"video": "zebra.mp4", "detections": []})
    _write(
        tmp_path / "bad.json",
        {
            "detections": [
                {"frame_index": 0, "bbox": [0, 0, 4, 4]},
                {"frame_index": 0, "bbox": [0, 0, 4]},
            ]
        },
    )
    _write(tmp_path / "typo.json", [{"frame_index": 0, "bbox": [0, 0, 4, 4], "scroe": 0.4}])
    (tmp_path / "broken.json").write_text("{not json")
    box = {"frame": 0, "box": [0, 0, 4, 4]}
    manifest = _jsonl(
        tmp_path / "m.jsonl",
        [
            {"video": "a.mp4", "detections": "other.json"},
            {"video": "a2.mp4", "detections": "bad.json"},
            {"video": "a3.mp4", "detections": "typo.json"},
            {"video": "a4.mp4", "detections": "missing.json"},
            {"video": "a5.mp4", "detections": "broken.json"},
            {"video": "a6.mp4", "detections": [{"frame_index": -1, "bbox": [0, 0, 4, 4]}]},
            {"video": "a7.mp4", "detections": [{"frame_index": 0, "bbox": [0, 0, 0, 4]}]},
            {"video": "a8.mp4", "detections": [], "objects": [{"object_id": 1, "prompts": [box]}]},
            {
                "video": "a9.mp4",
                "detections": [{"frame_index": 0, "bbox": [0, 0, 4, 4], "score": "high"}],
            },
        ],
    )
    jobs, rejects = read_manifest(manifest)
    assert jobs == []
    got = {r.location: (r.field, r.reason) for r in rejects}
    assert got["m.jsonl line 1"][0] == "detections"
    assert "'zebra.mp4'" in got["m.jsonl line 1"][1] and "'a.mp4'" in got["m.jsonl line 1"][1]
    assert got["m.jsonl line 2"][0] == "detections[1].bbox"
    assert "bad.json" in got["m.jsonl line 2"][1]
    assert got["m.jsonl line 3"][0] == "detections[0].scroe"
    assert got["m.jsonl line 4"][0] == "detections" and "missing.json" in got["m.jsonl line 4"][1]
    assert got["m.jsonl line 5"][0] == "detections" and "broken.json" in got["m.jsonl line 5"][1]
    assert got["m.jsonl line 6"][0] == "detections[0].frame_index"
    assert got["m.jsonl line 7"][0] == "detections[0].bbox"
    assert got["m.jsonl line 8"][0] == "detections"
    assert got["m.jsonl line 9"][0] == "detections[0].score"


def test_parquet_rows_with_a_score_and_no_object_are_detections(tmp_path):
    table = pa.table(
        {
            "video": ["a.mp4", "a.mp4", "b.mp4", "c.mp4", "c.mp4"],
            "object_id": [None, None, 1, None, None],
            "frame": [4, 0, 0, 0, 2],
            "box": [
                [10.0, 20, 40, 60],
                [1.0, 2, 4, 6],
                [0.0, 0, 4, 4],
                [0.0, 0, 4, 4],
                [5.0, 0, 5, 4],
            ],
            "score": [0.5, 0.25, None, 0.3, 0.3],
            "category": ["dog", None, None, None, None],
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    jobs, rejects = read_manifest(str(tmp_path / "p.parquet"))
    a, b = jobs
    assert a.objects == () and b.objects[0].object_id == 1 and b.detections is None
    assert [(g.frame, g.detection, g.row) for g in a.detections] == [
        (4, Detection((10.0, 20.0, 40.0, 60.0), 0.5, "dog"), "p.parquet row 1"),
        (0, Detection((1.0, 2.0, 4.0, 6.0), 0.25, None), "p.parquet row 2"),
    ]
    # a bad box is named by its row and column
    assert [(r.location, r.field) for r in rejects] == [("p.parquet row 5", "box")]
    assert "positive width and height" in rejects[0].reason


def test_unit_id_hashes_the_detections(tmp_path):
    line = {
        "video": "a.mp4",
        "video_id": "a",
        "detections": [{"frame_index": 0, "bbox": [0, 0, 4, 4]}],
    }
    moved = {**line, "detections": [{"frame_index": 0, "bbox": [1, 0, 4, 4]}]}
    jobs, _ = read_manifest(_jsonl(tmp_path / "m.jsonl", [line, {**moved, "video_id": "b"}]))
    ids = {job.video: "size=1" for job in jobs}
    one = plan_units(jobs[:1], "model", "digest", identities=ids)
    assert one[0].object_ids == (WHOLE_VIDEO,)
    assert plan_units(jobs[:1], "model", "digest", identities=ids)[0].unit_id == one[0].unit_id
    other = dataclasses.replace(jobs[1], video_id="a")
    assert plan_units([other], "model", "digest", identities=ids)[0].unit_id != one[0].unit_id
    # a run's --detector does not apply to a line that brings its own detections
    from pipeline.detectors import detector_spec

    spec = detector_spec("owlv2", "dog")
    (unit,) = plan_units(jobs[:1], "model", "digest", identities=ids, detector=spec)
    assert unit.job.detector is None and unit.unit_id == one[0].unit_id


# ---------------------------------------------------------------- against the video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A short synthetic video (two objects from frame 0) and its ground-truth masks."""
    video = generate_video(3, TINY)
    folder = tmp_path_factory.mktemp("dets")
    path = folder / "v.mp4"
    path.write_bytes(encode_mp4(video.frames))
    return folder, path, video


@pytest.fixture(scope="module")
def demo():
    from sam2_core.demo_model import build_demo_model

    return build_demo_model("cpu")


def _xywh(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]


@pytest.mark.slow
def test_detections_on_a_first_frame_give_the_same_table_as_box_prompts(
    clip, demo, one_torch_thread
):
    folder, path, video = clip
    boxes = [_xywh(masks[KEYFRAME]) for masks in video.masks]
    scores = [0.6, 0.9]  # the higher score becomes object 1
    _write(
        folder / "dets.json",
        {
            "video": "v.mp4",
            "detections": [
                {"frame_index": KEYFRAME, "bbox": box, "score": s, "category": "shape"}
                for box, s in zip(boxes, scores)
            ],
        },
    )
    detections = _jsonl(
        folder / "d.jsonl", [{"video": "v.mp4", "video_id": "v", "detections": "dets.json"}]
    )
    order = sorted(range(len(boxes)), key=lambda k: -scores[k])
    objects = [
        {"object_id": rank + 1, "prompts": [{"frame": KEYFRAME, "box": [x, y, x + w, y + h]}]}
        for rank, (x, y, w, h) in enumerate(boxes[k] for k in order)
    ]
    prompted = _jsonl(folder / "b.jsonl", [{"video": "v.mp4", "video_id": "v", "objects": objects}])
    (det_job,), _ = read_manifest(detections)
    (box_job,), _ = read_manifest(prompted)
    rows = pa.table(
        {
            "video": ["v.mp4"] * len(boxes),
            "video_id": ["v"] * len(boxes),
            "object_id": pa.array([None] * len(boxes), pa.int64()),
            "frame": [KEYFRAME] * len(boxes),
            "box": [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h in boxes],
            "score": scores,
            "category": ["shape"] * len(boxes),
        }
    )
    pq.write_table(rows, folder / "d.parquet")
    (row_job,), _ = read_manifest(str(folder / "d.parquet"))
    found, stats = label_video(demo, det_job, run_id="r", model_name="demo")
    from_rows, _ = label_video(demo, row_job, run_id="r", model_name="demo")
    again, _ = label_video(demo, det_job, run_id="r", model_name="demo")
    given, _ = label_video(demo, box_job, run_id="r", model_name="demo")
    assert stats.objects == 2 and found.num_rows == 2 * TINY.num_frames
    assert found.equals(again)  # deterministic: a retry writes the same rows
    assert set(found.column("prompted").to_pylist()) == {False}  # found, not prompted by a person
    # Rows equal but for how the objects came to be: prompted and the origin columns.
    assert set(found.column("source").to_pylist()) == {"detector"}
    assert set(given.column("source").to_pylist()) == {"prompt"}
    assert set(found.column("category").to_pylist()) == {"shape"}
    by_object = dict(
        zip(found.column("object_id").to_pylist(), found.column("detection_score").to_pylist())
    )
    assert by_object == pytest.approx({1: 0.9, 2: 0.6})  # the higher score first
    origin = ["prompted", "source", "category", "detection_score"]
    assert found.drop(origin).equals(given.drop(origin))
    assert from_rows.equals(found)


def test_detections_past_the_end_or_off_the_frame_fail_naming_line_and_field(clip, demo):
    folder, path, video = clip
    h, w = video.frames.shape[1:3]
    _write(
        folder / "late.json",
        {
            "detections": [
                {"frame_index": 0, "bbox": [1, 1, 4, 4]},
                {"frame_index": 99, "bbox": [1, 1, 4, 4]},
            ]
        },
    )
    manifest = _jsonl(
        folder / "bad.jsonl",
        [
            {"video": "v.mp4", "video_id": "v1", "detections": "late.json"},
            {
                "video": "v.mp4",
                "video_id": "v2",
                "detections": [{"frame_index": 0, "bbox": [w + 5, 0, 4, 4]}],
            },
        ],
    )
    late, off = read_manifest(manifest)[0]
    with pytest.raises(InputError) as caught:
        label_video(demo, late, run_id="r", model_name="demo")
    message = str(caught.value)
    assert "bad.jsonl line 1" in message and "late.json" in message
    assert "detections[1].frame_index 99 is past the end of the video (8 frames" in message
    assert classify(caught.value) == PERMANENT
    with pytest.raises(
        InputError, match=r"bad.jsonl line 2: detections\[0\].bbox: box .* lies wholly outside"
    ):
        label_video(demo, off, run_id="r", model_name="demo")


def test_video_with_no_detections_is_an_empty_table(clip, demo):
    folder, path, _ = clip
    (job,), _ = read_manifest(_jsonl(folder / "e.jsonl", [{"video": "v.mp4", "detections": []}]))
    table, stats = label_video(demo, job, run_id="r", model_name="demo")
    assert table.num_rows == 0 and stats.objects == 0 and stats.frames == TINY.num_frames
