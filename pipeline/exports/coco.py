"""COCO instances JSON (one image per video frame) and its video variant, YouTube-VIS.

Both are single JSON documents written as streams: annotations go out video by
video as they are read; the small per-image (or per-video) entries are kept
and written after them (JSON key order is free; pycocotools does not care).
Masks stay in the table's own encoding: COCO compressed RLE with ``size``
[height, width], which is what pycocotools' ``annToMask`` decodes.
"""

from __future__ import annotations

import json
import posixpath

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.exports.destination import Destination, JsonArrayStream, compact_json
from pipeline.exports.options import ExportOptions, class_name, class_names
from pipeline.exports.reader import RunReader, visible
from pipeline.exports.reviewed import ReviewedExport, parse_object_id
from pipeline.masks import decode_mask
from pipeline.storage import url_to_fs

COCO_FILE = "instances.json"
CATEGORY_ID = 1  # objects without a category; the run's categories follow from 2


def _header(kind: str, reader: RunReader) -> tuple[str, dict[str, int]]:
    """The document's opening and the category id of each class name."""
    info = {"description": f"{kind} export of {reader.run_uri}", "version": "1.0"}
    ids = {name: CATEGORY_ID + i for i, name in enumerate(class_names(reader.categories()))}
    categories = [{"id": i, "name": name, "supercategory": name} for name, i in ids.items()]
    return f'{{"info": {compact_json(info)},\n"categories": {compact_json(categories)}', ids


def export_coco(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """COCO instances: one image per (video, frame) with ``video_id`` and ``frame_index``
    kept on it; one annotation per visible (object, frame) with RLE ``segmentation``,
    ``object_id`` and ``score`` (predicted IoU), its category the object's ``category`` (one
    category "object" for objects without). Returns the number of annotations."""
    images: list[dict] = []
    count = 0
    with dest.open_text(COCO_FILE) as out:
        header, category_ids = _header("COCO", reader)
        out.write(header)
        annotations = JsonArrayStream(out, "annotations")
        for video in reader.videos():
            image_ids = {}
            for frame_index, _ in video.by_frame():
                image_ids[frame_index] = image_id = len(images) + 1
                images.append(
                    {
                        "id": image_id,
                        "file_name": options.frame_file(video.video_id, frame_index),
                        "height": video.height,
                        "width": video.width,
                        "video_id": video.video_id,
                        "frame_index": frame_index,
                    }
                )
            columns = video.table.select(
                ["object_id", "frame_index", "rle", "area", "bbox", "score", "present", "category"]
            ).to_pylist()
            for row in columns:
                if not visible(row["present"], row["area"]):
                    continue
                count += 1
                annotations.append(
                    {
                        "id": count,
                        "image_id": image_ids[row["frame_index"]],
                        "category_id": category_ids[class_name(row["category"])],
                        "segmentation": {"size": [video.height, video.width], "counts": row["rle"]},
                        "area": row["area"],
                        "bbox": row["bbox"],
                        "iscrowd": 0,
                        "object_id": row["object_id"],
                        "score": row["score"],
                    }
                )
        annotations.close()
        image_stream = JsonArrayStream(out, "images")
        for image in images:
            image_stream.append(image)
        image_stream.close()
        out.write("}\n")
    return count


def export_youtube_vis(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """YouTube-VIS: one entry per video (``name`` = our video_id, ``file_names`` for
    frames 0..last) and one annotation per (video, object) track whose ``segmentations``,
    ``areas`` and ``bboxes`` hold an entry per frame (null where the object is not
    visible or has no row), its category the object's as in COCO. Returns the number of
    tracks."""
    videos: list[dict] = []
    count = 0
    with dest.open_text(COCO_FILE) as out:
        header, category_ids = _header("YouTube-VIS", reader)
        out.write(header)
        annotations = JsonArrayStream(out, "annotations")
        for video in reader.videos():
            length = video.frame_count
            number = len(videos) + 1
            videos.append(
                {
                    "id": number,
                    "name": video.video_id,
                    "width": video.width,
                    "height": video.height,
                    "length": length,
                    "file_names": [options.frame_file(video.video_id, i) for i in range(length)],
                }
            )
            for object_id, track in video.by_object():
                segmentations: list[dict | None] = [None] * length
                areas: list[int | None] = [None] * length
                bboxes: list[list[float] | None] = [None] * length
                rows = track.select(["frame_index", "rle", "area", "bbox", "present"]).to_pylist()
                for row in rows:
                    if visible(row["present"], row["area"]):
                        i = row["frame_index"]
                        segmentations[i] = {
                            "size": [video.height, video.width],
                            "counts": row["rle"],
                        }
                        areas[i], bboxes[i] = row["area"], row["bbox"]
                count += 1
                annotations.append(
                    {
                        "id": count,
                        "video_id": number,
                        "category_id": category_ids[class_name(track["category"][0].as_py())],
                        "iscrowd": 0,
                        "height": video.height,
                        "width": video.width,
                        "length": 1,
                        "segmentations": segmentations,
                        "areas": areas,
                        "bboxes": bboxes,
                        "object_id": object_id,
                    }
                )
        annotations.close()
        video_stream = JsonArrayStream(out, "videos")
        for entry in videos:
            video_stream.append(entry)
        video_stream.close()
        out.write("}\n")
    return count


# ------------------------------------------------------------------ readers


def segmentation_mask(segmentation: object, height: int, width: int, where: str) -> np.ndarray:
    """An H x W bool mask from a COCO ``segmentation``: compressed RLE (``counts`` text),
    uncompressed RLE (``counts`` a list) or polygons (lists of x, y), as tools write them."""
    try:
        if isinstance(segmentation, dict):
            size = segmentation.get("size")
            if list(size or []) != [height, width]:
                raise ValueError(f"size {size} is not the frame's [{height}, {width}]")
            counts = segmentation.get("counts")
            if isinstance(counts, str):
                return decode_mask(counts, height, width)
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
                return mask_utils.decode(rle).astype(bool)
            raise ValueError("counts must be RLE text or a list of run lengths")
        if isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation):
            polygons = [p for p in segmentation if len(p) >= 6]
            if not polygons:
                return np.zeros((height, width), bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            return mask_utils.decode(rle).astype(bool)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{where}: unreadable segmentation ({error})") from None
    raise ValueError(f"{where}: segmentation must be an RLE object or a list of polygons")


def _load_json(root: str, name: str, storage_options: dict | None) -> tuple[dict, str]:
    fs, base = url_to_fs(root, storage_options)
    path = posixpath.join(base, name)
    try:
        with fs.open(path, "rb") as handle:
            data = json.loads(handle.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"{root}: no {name}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data, path


def read_coco_review(root: str, storage_options: dict | None = None) -> ReviewedExport:
    """``instances.json`` as ``export_coco`` writes it: images map to video frames by their
    ``video_id`` and ``frame_index``; an annotation's ``object_id`` names our object (one
    without it is a new object of its own, labelled by its annotation id)."""
    data, path = _load_json(root, COCO_FILE, storage_options)
    export = ReviewedExport(root)
    images = {}
    for i, image in enumerate(data.get("images") or []):
        where = f"{path} images[{i}]"
        if not isinstance(image, dict) or "video_id" not in image or "frame_index" not in image:
            raise ValueError(
                f"{where}: an image needs video_id and frame_index (as `jobs export --format "
                "coco` writes them) to name its video frame"
            )
        frame = image["frame_index"]
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise ValueError(f"{where}: frame_index must be a whole number, got {frame!r}")
        images[image.get("id")] = image
        export.add_frame(str(image["video_id"]), frame, where)
    for i, ann in enumerate(data.get("annotations") or []):
        where = f"{path} annotations[{i}]"
        image = images.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if image is None:
            raise ValueError(f"{where}: image_id {ann.get('image_id')!r} names no image")
        object_id = parse_object_id(ann.get("object_id"), where)
        mask = segmentation_mask(ann.get("segmentation"), image["height"], image["width"], where)
        label = f"annotation {ann.get('id', i)}"
        export.add_mask(str(image["video_id"]), image["frame_index"], object_id, label, mask, where)
    return export


def read_youtube_vis_review(root: str, storage_options: dict | None = None) -> ReviewedExport:
    """``instances.json`` as ``export_youtube_vis`` writes it: a video's ``name`` is our
    video_id, a track's ``object_id`` our object (without it: a new object)."""
    data, path = _load_json(root, COCO_FILE, storage_options)
    export = ReviewedExport(root)
    videos = {}
    for i, video in enumerate(data.get("videos") or []):
        where = f"{path} videos[{i}]"
        if not isinstance(video, dict) or "name" not in video:
            raise ValueError(f"{where}: a video needs its name (our video_id)")
        videos[video.get("id")] = video
        for frame in range(int(video.get("length") or len(video.get("file_names") or []))):
            export.add_frame(str(video["name"]), frame, where)
    for i, ann in enumerate(data.get("annotations") or []):
        where = f"{path} annotations[{i}]"
        video = videos.get(ann.get("video_id")) if isinstance(ann, dict) else None
        if video is None:
            raise ValueError(f"{where}: video_id {ann.get('video_id')!r} names no video")
        object_id = parse_object_id(ann.get("object_id"), where)
        for frame, segmentation in enumerate(ann.get("segmentations") or []):
            if segmentation is None:
                continue
            at = f"{where} segmentations[{frame}]"
            mask = segmentation_mask(segmentation, video["height"], video["width"], at)
            label = f"track {ann.get('id', i)}"
            export.add_mask(str(video["name"]), frame, object_id, label, mask, at)
    return export
