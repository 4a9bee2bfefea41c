"""Mask rows: COCO RLE round trips, area/bbox, the RLE checker, and rows back into masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pycocotools import mask as mask_utils

from pipeline.masks import (
    MASK_SCHEMA,
    MaskRow,
    decode_mask,
    encode_mask,
    mask_row,
    mask_table,
    masks_from_table,
    rle_counts,
    validate_rle,
)


def random_masks(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = (int(v) for v in rng.integers(1, 70, size=2))
        if index % 3 == 0:  # a blob
            mask = np.zeros((height, width), bool)
            top, left = rng.integers(0, height), rng.integers(0, width)
            mask[top : rng.integers(top, height + 1), left : rng.integers(left, width + 1)] = True
        else:  # noise of varying density
            mask = rng.random((height, width)) < rng.random()
        yield mask


def numpy_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a mask in column-major order, starting with a run of zeros (COCO's rule)."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def test_encode_decode_round_trip_with_area_and_bbox():
    for mask in random_masks(200):
        counts, area, bbox = encode_mask(mask)
        assert isinstance(counts, str) and counts.isascii()
        assert np.array_equal(decode_mask(counts, *mask.shape), mask)
        assert area == int(mask.sum())
        if area:
            ys, xs = np.nonzero(mask)
            expected = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert bbox == tuple(float(v) for v in expected)


def test_encode_accepts_c_ordered_uint8_and_views():
    base = np.zeros((40, 60), np.uint8)
    base[5:20, 10:50] = 255
    view = base[::2, ::3]  # non-contiguous view
    counts, area, bbox = encode_mask(view)
    assert np.array_equal(decode_mask(counts, *view.shape), view > 0)
    assert area == int((view > 0).sum())
    assert bbox == (4.0, 3.0, 13.0, 7.0)


def test_empty_and_full_masks():
    counts, area, bbox = encode_mask(np.zeros((540, 960), bool))
    assert area == 0 and bbox == (0.0, 0.0, 0.0, 0.0)
    assert not decode_mask(counts, 540, 960).any()
    counts, area, bbox = encode_mask(np.ones((3, 5), bool))
    assert area == 15 and bbox == (0.0, 0.0, 5.0, 3.0)


def test_rle_counts_parser_matches_pycocotools_runs():
    for mask in random_masks(150, seed=3):
        counts, _, _ = encode_mask(mask)
        assert rle_counts(counts) == numpy_runs(mask)


@pytest.mark.parametrize(
    ("counts", "size", "message"),
    [
        ("", (2, 2), "non-empty"),
        ("S1", (5, 8), "cover 35 pixels"),  # "S1" encodes a 5x7 empty mask
        ("S", (5, 7), "middle of a value"),
        ("S1\x7f", (5, 7), "invalid character"),
        ("S1", (0, 7), "height"),
        ("S1", (5, True), "width"),
    ],
)
def test_validate_rle_rejects_malformed_counts(counts, size, message):
    with pytest.raises(ValueError, match=message):
        validate_rle(counts, *size)
    with pytest.raises(ValueError):
        decode_mask(counts, *size)  # never handed to pycocotools unchecked


def test_negative_run_is_rejected():
    # pycocotools encodes runs 4+ as differences; a large negative difference yields a negative run
    good = mask_utils.encode(np.asfortranarray(np.eye(4, dtype=np.uint8)))["counts"].decode()
    assert validate_rle(good, 4, 4) is None
    with pytest.raises(ValueError, match="negative run"):
        validate_rle("010N", 1, 1)  # runs 0, 1, 0, 1 + (-2)


def table_of(rows: list[tuple[str, int, int, np.ndarray]]) -> pa.Table:
    return mask_table(
        mask_row(video_id, object_id, frame_index, mask, score=0.9, present=bool(mask.any()),
                 prompted=frame_index == 0, run_id="run-1", model="test")
        for video_id, object_id, frame_index, mask in rows
    )  # fmt: skip


def test_masks_from_table_restores_every_mask():
    masks = list(random_masks(6, seed=5))
    rows = [("cups", index % 2, index, mask) for index, mask in enumerate(masks)]
    restored = masks_from_table(table_of(rows))
    assert set(restored) == {(video_id, obj, frame) for video_id, obj, frame, _ in rows}
    for video_id, obj, frame, mask in rows:
        assert restored[(video_id, obj, frame)].dtype == bool
        assert np.array_equal(restored[(video_id, obj, frame)], mask)


def test_masks_from_table_refuses_duplicate_rows():
    mask = np.ones((2, 2), bool)
    with pytest.raises(ValueError, match="more than one row"):
        masks_from_table(table_of([("v", 1, 0, mask), ("v", 1, 0, mask)]))


def test_schema_columns_and_types():
    assert MASK_SCHEMA.names == [
        "video_id", "object_id", "frame_index", "height", "width", "rle", "area", "bbox",
        "score", "present", "prompted", "run_id", "model",
        "object_score_logit", "source", "category", "detection_score",
    ]  # fmt: skip
    assert MASK_SCHEMA.field("object_score_logit").type == pa.float32()
    assert not MASK_SCHEMA.field("source").nullable and MASK_SCHEMA.field("category").nullable
    assert MASK_SCHEMA.field("detection_score").type == pa.float32()
    assert MASK_SCHEMA.field("bbox").type == pa.list_(pa.float64(), 4)
    assert MASK_SCHEMA.field("score").type == pa.float32()
    assert MASK_SCHEMA.field("height").type == pa.int32()


def test_mask_rows_become_a_schema_table_that_restores_every_mask():
    assert MaskRow._fields == tuple(MASK_SCHEMA.names)
    masks = list(random_masks(12, seed=3))
    rows = [
        mask_row("v", index % 3, index, mask, score=np.float32(0.1 * index), present=index % 2 == 0,
                 prompted=index == 0, run_id="r", model="m")
        for index, mask in enumerate(masks)
    ]  # fmt: skip
    table = mask_table(rows)
    assert table.schema.equals(MASK_SCHEMA) and table.num_rows == len(masks)
    first = table.slice(0, 1).to_pylist()[0]
    rle, area, bbox = encode_mask(masks[0])
    height, width = masks[0].shape
    assert first == {
        "video_id": "v", "object_id": 0, "frame_index": 0, "height": height, "width": width,
        "rle": rle, "area": area, "bbox": list(bbox), "score": 0.0, "present": True,
        "prompted": True, "run_id": "r", "model": "m", "object_score_logit": None,
        "source": "prompt", "category": None, "detection_score": None,
    }  # fmt: skip
    assert table.column("score").to_pylist()[5] == float(np.float32(0.5))
    restored = masks_from_table(table)
    assert all(np.array_equal(restored[("v", i % 3, i)], m) for i, m in enumerate(masks))
    assert mask_table([]).equals(MASK_SCHEMA.empty_table())
