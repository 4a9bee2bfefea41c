"""Every export format, from a synthetic run and from a run of the demo-size model on the
real sample videos, read back by the format's own tooling and compared with our masks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from export_checks import (
    assert_same_masks,
    commit,
    ellipse,
    every_frame,
    expected_masks,
    iou,
    mask_rows,
    non_overlap,
    read_coco,
    read_cvat,
    read_davis_pngs,
    read_label_studio,
    read_sav,
    read_yolo_seg,
    read_youtube_vis,
    synthetic_units,
    visible_only,
)

from pipeline.exports import FORMATS, RunNotFoundError, RunReader, export_run, read_davis
from pipeline.masks import masks_from_table
from pipeline.sink import OutputStore, read_masks

REAL_FRAMES = 6


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> str:
    run = str(tmp_path_factory.mktemp("synthetic") / "run")
    commit(run, synthetic_units())
    return run


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, videos_dir, mini_a_dir) -> str:
    """A short run on the three sample videos with the mini model, labeled in one process
    (tests/labeling_helpers.reference_table) and committed unit by unit like a worker."""
    from labeling_helpers import make_clips, reference_table, write_jsonl

    folder = tmp_path_factory.mktemp("real")
    clips = make_clips(videos_dir, folder / "clips", frames=REAL_FRAMES)
    entries = [
        {
            "video": clips[name],
            "video_id": name,
            "objects": [
                {"object_id": 1, "prompts": [{"frame": 0, "points": [[64, 48]], "labels": [1]}]},
                {"object_id": 4, "prompts": [{"frame": 0, "box": [10, 10, 70, 80]}]},
            ],
        }
        for name in ("dog", "coffee", "bedroom")
    ]
    table = reference_table(mini_a_dir, write_jsonl(folder / "m.jsonl", entries))
    run = str(folder / "run")
    store = OutputStore(run)
    for video_id in ("dog", "coffee", "bedroom"):
        rows = table.filter(table.column("video_id").to_numpy(zero_copy_only=False) == video_id)
        store.commit_unit(f"{video_id}-u0", rows, {"test": True})
    return run


def _run(request, which: str) -> str:
    return request.getfixturevalue(f"{which}_run")


def _scores(run: str) -> dict:
    table = read_masks(run)
    keys = zip(*(table.column(c).to_pylist() for c in ("video_id", "object_id", "frame_index")))
    return {
        key: -math.inf if score is None else score
        for key, score in zip(keys, table.column("score").to_pylist())
    }


RUNS = ["synthetic", "real"]


@pytest.mark.parametrize("which", RUNS)
def test_coco_reads_back_with_pycocotools_equal(request, which, tmp_path):
    run = _run(request, which)
    export_run(run, "coco", str(tmp_path))
    masks, images = read_coco(tmp_path)
    assert_same_masks(masks, visible_only(expected_masks(run)))
    table = read_masks(run)
    frames = set(zip(table.column("video_id").to_pylist(), table.column("frame_index").to_pylist()))
    assert {(i["video_id"], i["frame_index"]) for i in images.values()} == frames
    assert len(images) == len(frames)  # one image per (video, frame)
    # An object's category names its COCO category; objects without one are "object".
    document = json.loads((tmp_path / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in document["categories"]}
    classes = {
        (images[a["image_id"]]["video_id"], a["object_id"]): names[a["category_id"]]
        for a in document["annotations"]
    }
    expected = {key: "object" for key in classes}
    if which == "synthetic":
        expected[("vid-b", 2)] = "ellipse"
    assert classes == expected


@pytest.mark.parametrize("which", RUNS)
def test_youtube_vis_tracks_decode_equal(request, which, tmp_path):
    run = _run(request, which)
    result = export_run(run, "youtube-vis", str(tmp_path))
    assert_same_masks(read_youtube_vis(tmp_path), visible_only(expected_masks(run)))
    assert result.items == len({(v, o) for v, o, _ in expected_masks(run)})


@pytest.mark.parametrize("which", RUNS)
def test_davis_pngs_read_by_pil_equal_under_non_overlap_rule(request, which, tmp_path):
    run = _run(request, which)
    export_run(run, "davis", str(tmp_path))
    expected = every_frame(expected_masks(run))
    scores = _scores(run)
    expected = non_overlap(expected, {k: scores.get(k, -math.inf) for k in expected})
    assert_same_masks(read_davis_pngs(tmp_path), expected)


@pytest.mark.parametrize("which", RUNS)
def test_sav_masklets_decode_equal(request, which, tmp_path):
    run = _run(request, which)
    export_run(run, "sav", str(tmp_path))
    assert_same_masks(read_sav(tmp_path), every_frame(expected_masks(run)))


@pytest.mark.parametrize("which", RUNS)
def test_cvat_tracks_decode_equal_and_end_when_object_vanishes(request, which, tmp_path):
    pytest.importorskip("datumaro", reason="the export extra's datumaro decodes CVAT RLE")
    run = _run(request, which)
    export_run(run, "cvat", str(tmp_path))
    # read_cvat carries each shape forward until the next one, as CVAT does: equality with
    # the visible masks also proves every vanishing is closed by an outside shape
    assert_same_masks(visible_only(read_cvat(tmp_path)), visible_only(expected_masks(run)))


@pytest.mark.parametrize("which", RUNS)
def test_label_studio_brush_decodes_equal_with_its_converter(request, which, tmp_path):
    pytest.importorskip("label_studio_sdk", reason="the export extra's label-studio-sdk decodes")
    run = _run(request, which)
    export_run(run, "label-studio", str(tmp_path), options=None)
    assert_same_masks(read_label_studio(tmp_path), visible_only(expected_masks(run)))
    assert "<BrushLabels" in (tmp_path / "label_config.xml").read_text()


def _brush_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    box = np.zeros((480, 640), bool)
    box[100:200, 50:400] = True
    dot = np.zeros((700, 700), bool)  # runs of 980,000 bytes: split at 65,536
    dot[350, 350] = True
    return [
        np.zeros((5, 7), bool),
        np.ones((300, 300), bool),
        np.ones((1, 1), bool),
        rng.random((40, 60)) > 0.5,  # many one-pixel runs
        rng.random((123, 77)) > 0.97,
        box,
        dot,
    ]


@pytest.mark.parametrize("mask", _brush_cases(), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_brush_rle_decodes_with_label_studios_converter(mask):
    pytest.importorskip("label_studio_sdk", reason="the export extra's label-studio-sdk decodes")
    from label_studio_sdk.converter.brush import decode_rle

    from pipeline.exports.label_studio import brush_rle, decode_brush_rle

    rle = brush_rle(mask)
    rgba = np.repeat(np.where(mask.ravel(), 255, 0).astype(np.uint8), 4)
    assert np.array_equal(decode_rle(rle), rgba)
    assert np.array_equal(decode_brush_rle(rle), rgba)


@pytest.mark.parametrize("which", RUNS)
def test_yolo_seg_polygons_fill_back_at_iou_09(request, which, tmp_path):
    pytest.importorskip("cv2", reason="the yolo-seg export needs the export extra (OpenCV)")
    run = _run(request, which)
    export_run(run, "yolo-seg", str(tmp_path))
    expected = visible_only(expected_masks(run))
    sizes = {v: m.shape for (v, _, _), m in expected.items()}
    polygons = read_yolo_seg(tmp_path, sizes)
    assert set(polygons) <= set(expected)
    for key, mask in expected.items():
        score = iou(polygons.get(key, np.zeros_like(mask)), mask)
        assert score >= 0.9, (key, score, int(mask.sum()))


def test_davis_overlap_goes_to_higher_predicted_iou(tmp_path):
    h, w = 30, 40
    big, small = ellipse(h, w, 15, 15, 12, 10), ellipse(h, w, 24, 15, 8, 8)
    run = str(tmp_path / "run")
    # frame 0: object 9 (larger id) has the higher score and wins the overlap;
    # frame 1: equal scores, the smaller id (2) wins
    scores = {(2, 0): 0.6, (9, 0): 0.95, (2, 1): 0.8, (9, 1): 0.8}
    masks = {(2, 0): big, (9, 0): small, (2, 1): big, (9, 1): small}
    commit(run, {"u": mask_rows("v", masks, scores=scores)})
    export_run(run, "davis", str(tmp_path / "davis"))
    got = read_davis_pngs(tmp_path / "davis")
    overlap = big & small
    assert overlap.sum() > 20
    assert np.array_equal(got[("v", 9, 0)], small) and np.array_equal(
        got[("v", 2, 0)], big & ~small
    )
    assert np.array_equal(got[("v", 2, 1)], big) and np.array_equal(got[("v", 9, 1)], small & ~big)


def test_davis_ground_truth_reader_inverts_export(synthetic_run, tmp_path):
    export_run(synthetic_run, "davis", str(tmp_path))
    table = read_davis(str(tmp_path))
    assert_same_masks(masks_from_table(table), every_frame(expected_masks(synthetic_run)))
    assert set(table.column("present").to_pylist()) == {True, False}


def test_reader_hands_out_one_video_at_a_time(synthetic_run):
    reader = RunReader(synthetic_run, batch_size=3)
    assert reader.video_ids() == ["vid-a", "vid-b"]
    videos = list(reader.videos())
    assert [v.video_id for v in videos] == ["vid-a", "vid-b"]
    a = videos[0]
    assert (a.height, a.width) == (48, 64) and a.object_ids() == [1, 7]  # from two units
    assert set(a.table.column("video_id").to_pylist()) == {"vid-a"}
    assert a.table.num_rows == 12 and a.frame_count == 6


def test_export_reads_and_writes_s3(tmp_path):
    from s3_server import start_s3

    with start_s3(buckets=["export-run", "export-dest"]) as s3:
        options = s3.storage_options
        commit("s3://export-run/run", synthetic_units(), options)
        for name in ("coco", "davis"):
            result = export_run(
                "s3://export-run/run",
                name,
                f"s3://export-dest/{name}",
                storage_options=options,
                dest_storage_options=options,
            )
            assert result.videos == 2
            s3.filesystem().get(f"export-dest/{name}", str(tmp_path / name), recursive=True)
        local = str(tmp_path / "local-run")
        commit(local, synthetic_units())
        expected = expected_masks(local)
    assert_same_masks(read_coco(tmp_path / "coco")[0], visible_only(expected))
    assert_same_masks(read_davis_pngs(tmp_path / "davis"), every_frame(expected))


def test_unknown_format_and_uncommitted_run_fail_clearly(tmp_path, capsys):
    from jobs.__main__ import main

    (tmp_path / "empty-run" / "masks").mkdir(parents=True)
    with pytest.raises(ValueError, match="unknown export format 'pascal'.*coco"):
        export_run(str(tmp_path), "pascal", str(tmp_path / "d"))
    with pytest.raises(RunNotFoundError, match="empty-run"):
        export_run(str(tmp_path / "empty-run"), "coco", str(tmp_path / "d"))
    assert main(["export", "--run", str(tmp_path), "--format", "pascal", "--dest", "d"]) == 1
    assert "unknown export format 'pascal'" in capsys.readouterr().err
    empty = str(tmp_path / "empty-run")
    assert main(["export", "--run", empty, "--format", "coco", "--dest", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert empty in err and "no committed units" in err
    assert not (tmp_path / "d").exists()


def test_cli_export_writes_every_format(synthetic_run, tmp_path, capsys):
    import importlib.util

    from jobs.__main__ import main

    for name in FORMATS:
        if name == "yolo-seg" and importlib.util.find_spec("cv2") is None:
            continue  # OpenCV comes with the export extra
        assert (
            main(
                ["export", "--run", synthetic_run, "--format", name, "--dest", str(tmp_path / name)]
            )
            == 0
        )
        assert f"{name}: 2 videos" in capsys.readouterr().out
    coco = json.loads((tmp_path / "coco" / "instances.json").read_text())
    assert coco["images"][0]["file_name"] == "vid-a/00000.jpg"
