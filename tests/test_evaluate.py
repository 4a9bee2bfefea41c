"""J&F evaluation: per-frame measures on hand-made masks, table scoring rules, URIs and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.evaluate import (
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    dilate_disk,
    evaluate_tables,
    evaluate_uris,
    region_similarity,
)
from pipeline.masks import MASK_SCHEMA, encode_mask

SIZE = 100  # 100 x 100 images: tolerance ceil(0.008 * 141.42) = 2 pixels


def square(top: int = 10, left: int = 10, side: int = 10, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


# ------------------------------------------------------------------------------ per frame


def test_tolerance_is_ceil_of_diagonal_fraction():
    assert boundary_tolerance(100, 100) == 2  # 1.13 -> 2
    assert boundary_tolerance(480, 854) == 8  # DAVIS 480p: 7.84 -> 8
    assert boundary_tolerance(1080, 1920) == 18  # 17.62 -> 18
    assert boundary_tolerance(100, 100, 5) == 5  # >= 1: pixels
    with pytest.raises(ValueError, match="bound_th"):
        boundary_tolerance(100, 100, 2.5)


def test_boundary_map_of_a_square_sits_half_a_pixel_towards_the_origin():
    # Rows/cols 10..19 filled. A pixel is a boundary when it differs from its
    # right, lower or lower-right neighbour: the outside L along the top and
    # left (row 9 and column 9, from 9 to 19) and the inside L along the
    # bottom and right (row 19 and column 19, from 10 to 19): 21 + 19 = 40.
    expected = np.zeros((SIZE, SIZE), bool)
    expected[9, 9:20] = True
    expected[9:20, 9] = True
    expected[19, 10:20] = True
    expected[10:20, 19] = True
    assert np.array_equal(boundary_map(square()), expected)
    # The image edges are not boundaries: a full mask has none.
    assert not boundary_map(np.ones((7, 9), bool)).any()


def test_region_similarity_of_offset_squares_is_their_overlap_ratio():
    for k in range(0, 12):
        inter = 10 * max(10 - k, 0)
        union = 200 - inter
        assert region_similarity(square(left=10 + k), square()) == pytest.approx(inter / union)


def test_boundary_f_is_one_within_tolerance_and_zero_far_away():
    gt = square()
    for k in (0, 1, 2):  # every boundary pixel has its shifted twin within 2 pixels
        assert boundary_f_measure(square(left=10 + k), gt) == 1.0
        assert boundary_f_measure(square(top=10 + k), gt) == 1.0
    assert boundary_f_measure(square(left=60), gt) == 0.0


def test_boundary_f_of_a_three_pixel_shift_is_derived_by_hand():
    # Truth: rows/cols 10..19; prediction shifted right by 3 (cols 13..22); radius 2.
    # Prediction boundary (40 px): column 12 rows 9..19 matches truth's row 9 / row 19
    # only at rows 9, 10, 11, 17, 18, 19 (6); row 9 cols 13..22 matches up to col 21 (9);
    # column 22 (10 px) is 3 px from any truth boundary (0); row 19 cols 13..21 (9).
    # Precision = 24 / 40. Truth boundary (40 px): column 9 (11) is 3 px from the
    # prediction's column 12 (0); row 9 cols 10..19 (10); column 19 rows 10..19 only at
    # rows 10, 11, 17, 18, 19 (5); row 19 cols 10..18 (9). Recall = 24 / 40. F = 0.6.
    assert boundary_f_measure(square(left=13), square()) == pytest.approx(0.6)
    assert region_similarity(square(left=13), square()) == pytest.approx(70 / 130)


def test_empty_masks_follow_the_davis_conventions():
    empty = np.zeros((SIZE, SIZE), bool)
    assert region_similarity(empty, square()) == 0.0
    assert boundary_f_measure(empty, square()) == 0.0  # P = 1, R = 0
    assert region_similarity(square(), empty) == 0.0
    assert boundary_f_measure(square(), empty) == 0.0  # P = 0, R = 1
    assert region_similarity(empty, empty) == 1.0
    assert boundary_f_measure(empty, empty) == 1.0
    # A full mask has no boundary: against a full truth F = 1, against a half one F = 0.
    full = np.ones((SIZE, SIZE), bool)
    assert boundary_f_measure(full, full) == 1.0
    half = full.copy()
    half[:, 50:] = False
    assert boundary_f_measure(full, half) == 0.0


def _reference_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    """F from the definition, by brute force: a boundary pixel matches if one of the other is within radius."""
    p, g = np.argwhere(boundary_map(pred)), np.argwhere(boundary_map(gt))
    if len(p) == 0 and len(g) == 0:
        return 1.0
    if len(p) == 0 or len(g) == 0:
        return 0.0
    d2 = ((p[:, None, :] - g[None, :, :]) ** 2).sum(axis=-1)
    precision = float((d2.min(axis=1) <= radius * radius).mean())
    recall = float((d2.min(axis=0) <= radius * radius).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_boundary_f_and_dilation_match_brute_force_on_random_masks():
    rng = np.random.default_rng(0)
    for i in range(40):
        h, w = (int(v) for v in rng.integers(6, 40, size=2))
        yy, xx = np.mgrid[:h, :w]
        blobs = []
        for _ in range(2):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 12)
            blobs.append((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
        pred, gt = blobs
        if i % 3 == 0:
            pred = pred ^ (rng.random((h, w)) < 0.05)  # ragged edges and specks
        bound_th = [0.008, 0.05, 3.0][i % 3]
        radius = boundary_tolerance(h, w, bound_th)
        assert boundary_f_measure(pred, gt, bound_th) == pytest.approx(
            _reference_f(pred, gt, radius), abs=1e-12
        )

        bmap = boundary_map(gt)
        points = np.argwhere(bmap)
        expected = np.zeros_like(bmap)
        for y, x in points:
            expected |= (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius
        assert np.array_equal(dilate_disk(bmap, radius), expected)


def test_mismatched_mask_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        region_similarity(np.zeros((4, 5), bool), np.zeros((5, 4), bool))


# ------------------------------------------------------------------------------ tables


def rows(
    video_id: str,
    object_id: int,
    masks: dict[int, np.ndarray],
    prompted: frozenset[int] = frozenset(),
    absent: frozenset[int] = frozenset(),
    run_id: str = "run",
) -> list[dict]:
    out = []
    for t, mask in masks.items():
        rle, area, bbox = encode_mask(mask)
        out.append(
            {
                "video_id": video_id,
                "object_id": object_id,
                "frame_index": t,
                "height": mask.shape[0],
                "width": mask.shape[1],
                "rle": rle,
                "area": area,
                "bbox": list(bbox),
                "score": 1.0,
                "present": (area > 0) and t not in absent,
                "prompted": t in prompted,
                "run_id": run_id,
                "model": "test",
                "source": "prompt",
            }
        )
    return out


def table(*row_lists: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([r for rs in row_lists for r in rs], schema=MASK_SCHEMA)


EMPTY = np.zeros((SIZE, SIZE), bool)
# Per-frame (J, F) of the predictions below against a fixed square.
FRAME_SCORES = [(1.0, 1.0), (0.0, 0.0), (1.0, 1.0), (70 / 130, 0.6), (0.0, 0.0)]


def video_one(prompted: frozenset[int] = frozenset()) -> tuple[list[dict], list[dict]]:
    gt = rows("v1", 1, {t: square() for t in range(5)})
    pred = rows(
        "v1",
        1,
        {0: square(), 1: EMPTY, 2: square(), 3: square(left=13), 4: EMPTY},
        prompted=prompted,
    )
    return gt, pred


def expected(frames: list[int]) -> tuple[float, float]:
    return (
        float(np.mean([FRAME_SCORES[t][0] for t in frames])),
        float(np.mean([FRAME_SCORES[t][1] for t in frames])),
    )


@pytest.mark.parametrize(
    ("skip", "prompted", "frames"),
    [
        ("none", frozenset(), [0, 1, 2, 3, 4]),
        ("first-last", frozenset(), [1, 2, 3]),
        ("first-prompted", frozenset({2, 4}), [0, 1, 3, 4]),  # earliest prompted frame is 2
        ("first-prompted", frozenset(), [1, 2, 3, 4]),  # no prompt marked: first visible frame
    ],
)
def test_object_score_is_the_mean_over_the_counted_frames(skip, prompted, frames):
    gt, pred = video_one(prompted)
    report = evaluate_tables(table(pred), table(gt), skip=skip)
    (score,) = report.objects
    j, f = expected(frames)
    assert score.frames == len(frames)
    assert score.j == pytest.approx(j)
    assert score.f == pytest.approx(f)
    assert score.jf == pytest.approx((j + f) / 2)
    assert report.jf == pytest.approx((j + f) / 2)


def test_overall_is_the_mean_over_objects_and_video_mean_is_reported_too():
    gt1, pred1 = video_one()
    gt2 = rows("v2", 1, {t: square() for t in range(5)}) + rows(
        "v2", 2, {t: square(top=50) for t in range(5)}
    )
    pred2 = rows("v2", 1, {t: square() for t in range(5)})  # object 2 never predicted
    report = evaluate_tables(table(pred1, pred2), table(gt1, gt2), skip="none")
    j1, f1 = expected([0, 1, 2, 3, 4])
    jf1 = (j1 + f1) / 2
    by_key = {(s.video_id, s.object_id): s for s in report.objects}
    assert by_key[("v2", 1)].jf == 1.0
    assert by_key[("v2", 2)].jf == 0.0 and by_key[("v2", 2)].missing_frames == 5
    assert report.jf == pytest.approx((jf1 + 1.0 + 0.0) / 3)
    assert report.video_mean_jf == pytest.approx((jf1 + 0.5) / 2)
    assert [v.video_id for v in report.videos] == ["v1", "v2"]
    assert any("v2 object 2" in w for w in report.warnings)


def test_rows_marked_absent_count_as_empty_unless_asked_otherwise():
    gt = rows("v", 1, {t: square() for t in range(3)})
    pred = rows("v", 1, {t: square() for t in range(3)}, absent=frozenset({1}))
    by_default = evaluate_tables(table(pred), table(gt), skip="none")
    assert by_default.objects[0].j == pytest.approx(2 / 3)
    assert by_default.objects[0].missing_frames == 0  # absent is an answer, not a missing row
    kept = evaluate_tables(table(pred), table(gt), skip="none", absent_as_empty=False)
    assert kept.objects[0].j == 1.0


def test_unknown_objects_and_videos_are_ignored_with_a_warning():
    gt, pred = video_one()
    extra = rows("v1", 9, {0: square()}) + rows("elsewhere", 1, {0: square()})
    report = evaluate_tables(table(pred, extra), table(gt), skip="none")
    assert [(s.video_id, s.object_id) for s in report.objects] == [("v1", 1)]
    assert any("[9]" in w for w in report.warnings)
    assert any("elsewhere" in w for w in report.warnings)


def test_tables_sharing_no_video_or_no_object_are_refused_with_both_counts(tmp_path, capsys):
    from jobs.__main__ import main

    gt, pred = video_one()
    other = rows("v2", 1, {0: square()}) + rows("v3", 1, {0: square()})
    with pytest.raises(
        ValueError,
        match=r"share no video_id.*predictions: 2 video\(s\).*ground truth: 1 video\(s\)",
    ):
        evaluate_tables(table(other), table(gt))
    with pytest.raises(ValueError, match=r"share no video_id.*predictions: 0 video\(s\)"):
        evaluate_tables(table(), table(gt))
    with pytest.raises(ValueError, match=r"no \(video_id, object_id\).*predictions: 1 object\(s\)"):
        evaluate_tables(table(rows("v1", 7, {0: square()})), table(gt))

    pq.write_table(table(other), tmp_path / "pred.parquet")
    pq.write_table(table(gt), tmp_path / "gt.parquet")
    args = [
        "evaluate",
        "--predictions",
        str(tmp_path / "pred.parquet"),
        "--ground-truth",
        str(tmp_path / "gt.parquet"),
    ]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "share no video_id" in captured.err and "J&F" not in captured.out


def test_size_mismatch_and_bad_options_name_the_problem():
    gt = rows("v", 1, {0: square(), 1: square(), 2: square()})
    pred = rows("v", 1, {1: np.zeros((50, 50), bool)})
    with pytest.raises(ValueError, match="video v object 1 frame 1"):
        evaluate_tables(table(pred), table(gt))
    with pytest.raises(ValueError, match="skip"):
        evaluate_tables(table(pred), table(gt), skip="middle")
    with pytest.raises(ValueError, match="column"):
        evaluate_tables(pa.table({"video_id": ["v"]}), table(gt))


# ------------------------------------------------------------------------------ URIs and CLI


def test_evaluate_command_reads_files_and_folders_and_writes_json(tmp_path, capsys):
    from jobs.__main__ import main

    gt, pred = video_one()
    pq.write_table(table(gt), tmp_path / "gt.parquet")
    folder = tmp_path / "pred"
    folder.mkdir()
    pq.write_table(table(pred[:3]), folder / "part-a.parquet")
    pq.write_table(table(pred[3:]), folder / "part-b.parquet")
    (folder / "_staging").mkdir()
    pq.write_table(table(gt), folder / "_staging" / "junk.parquet")  # not data: ignored

    report = evaluate_uris(str(folder), str(tmp_path / "gt.parquet"))
    j, f = expected([1, 2, 3])
    assert report.jf == pytest.approx((j + f) / 2)

    out = tmp_path / "scores" / "eval.json"
    status = main(
        [
            "evaluate",
            "--predictions",
            str(folder),
            "--ground-truth",
            str(tmp_path / "gt.parquet"),
            "--json",
            str(out),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert f"{100 * (j + f) / 2:6.1f}" in printed
    scores = json.loads(out.read_text())
    assert scores["overall"]["J&F"] == pytest.approx((j + f) / 2)
    assert scores["videos"][0]["objects"][0]["frames"] == 3
    assert scores["options"] == {"skip": "first-last", "bound_th": 0.008}

    status = main(
        [
            "evaluate",
            "--predictions",
            str(tmp_path / "nope"),
            "--ground-truth",
            str(tmp_path / "gt.parquet"),
        ]
    )
    assert status == 1
    assert "not found" in capsys.readouterr().err


def test_report_json_has_no_nan():
    gt = rows("v", 1, {0: square(), 1: square()})  # first-last leaves no frame
    report = evaluate_tables(table(gt), table(gt))
    assert report.objects == [] and math.isnan(report.jf)
    assert json.loads(json.dumps(report.to_dict()))["overall"]["J&F"] is None


def test_label_run_output_counts_only_committed_units(tmp_path):
    from pipeline.records import RunSummary
    from pipeline.sink import OutputStore

    gt, pred = video_one()
    run = tmp_path / "run"
    store = OutputStore(str(run))
    store.commit_unit("unit-a", table(pred), {"note": "test"})
    # A unit that crashed after writing its data file but before its commit record.
    pq.write_table(table(rows("v1", 2, {0: square()})), run / "masks" / "unit-b.parquet")
    store.write_summary(RunSummary("r", "m.jsonl", str(run), "m@1", None, None, "t0", units=1))
    pq.write_table(table(gt), tmp_path / "gt.parquet")

    report = evaluate_uris(str(run), str(tmp_path / "gt.parquet"), skip="none")
    j, f = expected([0, 1, 2, 3, 4])
    assert report.jf == pytest.approx((j + f) / 2)
    assert not any("[2]" in w for w in report.warnings)  # unit-b's object 2 was never seen
