"""COCO instances JSON (one image per video frame) and its video variant, YouTube-VIS.

Both are single JSON documents written as streams: annotations go out video by
video as they are read; the small per-image (or per-video) entries are kept
and written after them (JSON key order is free; pycocotools does not care).
Masks stay in the table's own encoding: COCO compressed RLE with ``size``
[height, width], which is what pycocotools' ``annToMask`` decodes.
"""

from __future__ import annotations

from pipeline.exports.destination import Destination, JsonArrayStream, compact_json
from pipeline.exports.options import CATEGORY_NAME, ExportOptions
from pipeline.exports.reader import RunReader, visible

COCO_FILE = "instances.json"
CATEGORY_ID = 1


def _header(kind: str, reader: RunReader) -> str:
    info = {"description": f"{kind} export of {reader.run_uri}", "version": "1.0"}
    categories = [{"id": CATEGORY_ID, "name": CATEGORY_NAME, "supercategory": CATEGORY_NAME}]
    return f'{{"info": {compact_json(info)},\n"categories": {compact_json(categories)}'


def export_coco(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """COCO instances: one image per (video, frame) with ``video_id`` and ``frame_index``
    kept on it; one annotation per visible (object, frame) with RLE ``segmentation``,
    ``object_id`` and ``score`` (predicted IoU). Returns the number of annotations."""
    images: list[dict] = []
    count = 0
    with dest.open_text(COCO_FILE) as out:
        out.write(_header("COCO", reader))
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
                ["object_id", "frame_index", "rle", "area", "bbox", "score", "present"]
            ).to_pylist()
            for row in columns:
                if not visible(row["present"], row["area"]):
                    continue
                count += 1
                annotations.append(
                    {
                        "id": count,
                        "image_id": image_ids[row["frame_index"]],
                        "category_id": CATEGORY_ID,
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
    visible or has no row). Returns the number of tracks."""
    videos: list[dict] = []
    count = 0
    with dest.open_text(COCO_FILE) as out:
        out.write(_header("YouTube-VIS", reader))
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
                        "category_id": CATEGORY_ID,
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
