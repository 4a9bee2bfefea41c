"""Runs for the export tests and the independent read-back of every export format.

Each ``read_*`` function reads an export with the format's own tooling where one
exists (pycocotools, datumaro, Label Studio's converter, PIL, OpenCV's polygon
fill as Ultralytics' loader uses it) and returns masks keyed like
``expected_masks``: {(video_id, object_id, frame_index): bool H x W}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.masks import MASK_SCHEMA, encode_mask, masks_from_table
from pipeline.sink import OutputStore, read_masks


def mask_rows(
    video_id: str, masks: dict[tuple[int, int], np.ndarray], scores=None, absent=()
) -> list[dict]:
    """Mask-table rows for {(object_id, frame): mask}; ``absent`` keys get present=False."""
    rows = []
    for (object_id, frame), mask in sorted(masks.items()):
        counts, area, bbox = encode_mask(mask)
        height, width = mask.shape
        rows.append(
            {
                "video_id": video_id,
                "object_id": object_id,
                "frame_index": frame,
                "height": height,
                "width": width,
                "rle": counts,
                "area": area,
                "bbox": list(bbox),
                "score": (scores or {}).get((object_id, frame), 0.9),
                "present": (object_id, frame) not in absent and area > 0,
                "prompted": frame == 0,
                "run_id": "export-test",
                "model": "synthetic",
            }
        )
    return rows


def commit(output: str, units: dict[str, list[dict]], storage_options=None) -> None:
    store = OutputStore(output, storage_options)
    for unit, rows in units.items():
        store.commit_unit(unit, pa.Table.from_pylist(rows, schema=MASK_SCHEMA), {"test": True})


def ellipse(height, width, cx, cy, rx, ry) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def synthetic_units(frames: int = 6) -> dict[str, list[dict]]:
    """Two videos of different sizes, objects that move, vanish (empty and present=False
    rows), split into two parts, and a video whose objects sit in two units; no overlaps."""
    units = {}
    h, w = 48, 64
    a1, a2 = {}, {}
    for f in range(frames):
        a1[(1, f)] = ellipse(h, w, 12 + 2 * f, 14, 8, 6)
        two_parts = np.zeros((h, w), bool)
        if f != 3:  # empty on frame 3
            two_parts[30:40, 30 + f : 40 + f] = True
            two_parts[30:44, 52:60] = True
        a2[(7, f)] = two_parts
    units["vid-a-part1"] = mask_rows(
        "vid-a", a1, scores={(1, f): 0.5 + 0.05 * f for f in range(frames)}
    )
    units["vid-a-part2"] = mask_rows("vid-a", a2, absent={(7, 1)})  # judged absent on frame 1
    h, w = 40, 56
    b = {(2, f): ellipse(h, w, 28, 20, 10 + f, 7) for f in range(frames)}
    b.update({(3, f): ellipse(h, w, 8, 8, 5, 5) for f in range(2, frames)})  # appears on frame 2
    units["vid-b"] = mask_rows("vid-b", b)
    for row in units["vid-b"]:
        if row["object_id"] == 2:
            row["category"] = "ellipse"  # one object with a class; the others have none
    return units


def expected_masks(output: str, storage_options=None) -> dict[tuple[str, int, int], np.ndarray]:
    """Our masks as exports should show them: rows with present=False are empty."""
    table = read_masks(output, storage_options)
    masks = masks_from_table(table)
    for video, obj, frame, present in zip(
        *(table.column(c).to_pylist() for c in ("video_id", "object_id", "frame_index", "present"))
    ):
        if present is False:
            masks[(video, obj, frame)] = np.zeros_like(masks[(video, obj, frame)])
    return masks


def every_frame(masks: dict) -> dict:
    """``masks`` plus an empty mask for every (object, frame) of a video without a row,
    frames 0..last (formats with one entry per frame and object: DAVIS, SA-V)."""
    out = dict(masks)
    for video in {v for v, _, _ in masks}:
        keys = [k for k in masks if k[0] == video]
        shape = masks[keys[0]].shape
        for object_id in {o for _, o, _ in keys}:
            for frame in range(max(f for _, _, f in keys) + 1):
                out.setdefault((video, object_id, frame), np.zeros(shape, bool))
    return out


def visible_only(masks: dict) -> dict:
    return {key: mask for key, mask in masks.items() if mask.any()}


def non_overlap(masks: dict, scores: dict) -> dict:
    """Expected DAVIS masks: per frame, every pixel goes to the covering object with the
    highest score (ties: smaller object id), computed pixel by pixel with numpy."""
    out = {}
    frames = {(v, f) for v, _, f in masks}
    for video, frame in frames:
        keys = sorted(k for k in masks if k[0] == video and k[2] == frame)
        stack = np.stack([masks[k] for k in keys])
        priority = np.array([scores[k] for k in keys], dtype=np.float64)
        # rank: higher score first, then smaller object id (keys are sorted by object id)
        order = sorted(range(len(keys)), key=lambda i: (-priority[i], keys[i][1]))
        winner = np.full(stack.shape[1:], -1)
        for i in reversed(order):
            winner[stack[i]] = i
        for i, key in enumerate(keys):
            out[key] = winner == i
    return out


# ------------------------------------------------------------------ independent readers


def read_coco(folder: Path) -> tuple[dict, dict]:
    """pycocotools COCO() + annToMask; also returns the raw image entries by id."""
    from pycocotools.coco import COCO

    coco = COCO(str(folder / "instances.json"))
    masks = {}
    for ann in coco.loadAnns(coco.getAnnIds()):
        image = coco.imgs[ann["image_id"]]
        key = (image["video_id"], ann["object_id"], image["frame_index"])
        assert key not in masks, key
        masks[key] = coco.annToMask(ann).astype(bool)
    return masks, coco.imgs


def read_youtube_vis(folder: Path) -> dict:
    from pycocotools import mask as mask_utils

    data = json.loads((folder / "instances.json").read_text())
    names = {v["id"]: v for v in data["videos"]}
    masks = {}
    for ann in data["annotations"]:
        video = names[ann["video_id"]]
        assert len(ann["segmentations"]) == video["length"] == len(video["file_names"])
        for frame, rle in enumerate(ann["segmentations"]):
            if rle is not None:
                decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                masks[(video["name"], ann["object_id"], frame)] = decoded.astype(bool)
    return masks


def read_davis_pngs(folder: Path) -> dict:
    """PIL: every PNG must be a palette image; pixel == object index."""
    from PIL import Image

    mapping = json.loads((folder / "object_ids.json").read_text())
    masks = {}
    for video_dir in sorted((folder / "Annotations").iterdir()):
        ids = mapping[video_dir.name]
        for png in sorted(video_dir.glob("*.png")):
            with Image.open(png) as image:
                assert image.mode == "P"
                array = np.array(image)
            for index, object_id in ids.items():
                masks[(video_dir.name, object_id, int(png.stem))] = array == int(index)
    return masks


def read_sav(folder: Path) -> dict:
    from pycocotools import mask as mask_utils

    masks = {}
    for path in sorted(folder.glob("*_manual.json")):
        data = json.loads(path.read_text())
        assert len(data["masklet"]) == data["video_frame_count"]
        for frame, objects in enumerate(data["masklet"]):
            assert len(objects) == data["masklet_num"] == len(data["masklet_id"])
            for object_id, rle in zip(data["masklet_id"], objects):
                decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                masks[(data["video_id"], object_id, frame)] = decoded.astype(bool)
    return masks


def read_cvat(folder: Path) -> dict:
    """CVAT for video: tracks read with ElementTree under CVAT's track rules (a keyframe
    holds until the next shape; outside="1" ends it), each mask's RLE decoded with
    datumaro's ``mask_tools.rle_to_mask`` exactly as datumaro's CVAT importer does.
    (datumaro 1.13's importer itself reads masks only in image mode: on a ``<track>``
    mask it fails, ``image`` being None in ``_parse_shape_ann``.)"""
    import xml.etree.ElementTree as ET

    from datumaro.util.mask_tools import rle_to_mask

    masks = {}
    for task in sorted(p for p in folder.iterdir() if p.is_dir()):
        root = ET.parse(task / "annotations.xml").getroot()
        assert root.findtext("version") == "1.1"
        size = root.find("meta/task/original_size")
        h, w = int(size.findtext("height")), int(size.findtext("width"))
        frames = int(root.findtext("meta/task/size"))
        for track in root.iter("track"):
            shapes = sorted(track.iter("mask"), key=lambda m: int(m.get("frame")))
            for i, shape in enumerate(shapes):
                if shape.get("outside") == "1":
                    continue
                crop_w, crop_h = int(shape.get("width")), int(shape.get("height"))
                counts = np.array([int(v) for v in shape.get("rle").split(",")], dtype=np.uint32)
                crop = rle_to_mask(
                    {"counts": counts, "size": np.array([crop_w, crop_h])}
                ).transpose()
                mask = np.zeros((h, w), bool)
                left, top = int(shape.get("left")), int(shape.get("top"))
                mask[top : top + crop_h, left : left + crop_w] = crop.astype(bool)
                object_id = int(shape.find("attribute[@name='object_id']").text)
                stop = int(shapes[i + 1].get("frame")) if i + 1 < len(shapes) else frames
                for frame in range(int(shape.get("frame")), stop):
                    masks[(task.name, object_id, frame)] = mask
    return masks


def read_label_studio(folder: Path) -> dict:
    """Label Studio's converter: decode_rle, then the alpha channel as its own code takes it."""
    from label_studio_sdk.converter.brush import decode_rle

    masks = {}
    for path in sorted((folder / "tasks").glob("*.json")):
        for task in json.loads(path.read_text()):
            data = task["data"]
            for result in task["predictions"][0]["result"]:
                assert result["type"] == "brushlabels" and result["value"]["format"] == "rle"
                h, w = result["original_height"], result["original_width"]
                pixels = decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
                object_id = int(result["id"].removeprefix("object-"))
                masks[(data["video_id"], object_id, data["frame_index"])] = pixels > 0
    return masks


def read_yolo_seg(folder: Path, sizes: dict[str, tuple[int, int]]) -> dict:
    """Polygons filled the way Ultralytics' loader fills them (cv2.fillPoly on pixel
    coordinates), one class per object (names from data.yaml), parts of a class unioned."""
    import cv2
    import yaml

    names = yaml.safe_load((folder / "data.yaml").read_text())["names"]
    object_of = {int(i): int(name.removeprefix("object_")) for i, name in names.items()}
    masks = {}
    for video_dir in sorted((folder / "labels").iterdir()):
        h, w = sizes[video_dir.name]
        for label in sorted(video_dir.glob("*.txt")):
            for line in label.read_text().splitlines():
                values = line.split()
                points = np.array(values[1:], dtype=np.float64).reshape(-1, 2) * [w, h]
                key = (video_dir.name, object_of[int(values[0])], int(label.stem))
                canvas = masks.get(key, np.zeros((h, w), bool)).astype(np.uint8)
                cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
                masks[key] = canvas.astype(bool)
    return masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_same_masks(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert np.array_equal(actual[key], expected[key]), f"mask {key} differs"
