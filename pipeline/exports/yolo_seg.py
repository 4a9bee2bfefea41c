"""YOLO segmentation labels (Ultralytics): one text file per frame, one polygon per line.

Layout: ``labels/<video_id>/<frame:05d>.txt`` for every frame with rows,
matching frame images at ``images/<video_id>/<frame:05d>.jpg`` (not written:
frames are not part of a run's output), and ``data.yaml`` naming the classes.
A line is ``class x1 y1 x2 y2 ...`` with coordinates divided by the frame's
width and height. YOLO has no instance ids, so each object id of the run is
its own class (``names: {0: object_1, ...}``), which keeps objects apart.

Polygons are OpenCV's outer contours of each mask (``cv2.findContours``,
vertices on boundary pixel centres, straight runs compressed), the
convention of Ultralytics' own mask-to-segment code; each connected part is
its own line (a speck of one or two pixels as a degenerate triangle). Holes
are lost, so a polygon only approximates its mask (the tests hold IoU >= 0.9).
"""

from __future__ import annotations

import numpy as np

from pipeline.exports.destination import Destination, safe_name
from pipeline.exports.options import ExportOptions
from pipeline.exports.reader import RunReader, visible
from pipeline.masks import decode_mask

DATA_FILE = "data.yaml"


def _cv2():
    try:
        import cv2
    except ImportError as error:
        raise ImportError(
            "the yolo-seg export traces polygons with OpenCV: pip install 'sam2-labeler[export]' "
            "(or opencv-python-headless)"
        ) from error
    return cv2


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a bool mask as K x 2 arrays of (x, y) pixel coordinates, K >= 3
    (a one- or two-pixel part repeats its last vertex: a degenerate polygon that fills it)."""
    cv2 = _cv2()
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2)
        if len(points) < 3:
            points = np.concatenate([points, np.repeat(points[-1:], 3 - len(points), axis=0)])
        polygons.append(points)
    return polygons


def polygon_line(class_index: int, polygon: np.ndarray, height: int, width: int) -> str:
    scaled = polygon.astype(np.float64) / np.array([width, height])
    return " ".join([str(class_index), *(f"{v:.6f}" for v in scaled.ravel())])


def export_yolo_seg(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """Label files per frame plus data.yaml; returns the number of polygon lines."""
    _cv2()
    object_ids = reader.object_ids()
    class_of = {object_id: i for i, object_id in enumerate(object_ids)}
    count = 0
    for video in reader.videos():
        folder = f"labels/{safe_name(video.video_id)}"
        for frame_index, frame in video.by_frame():
            lines = []
            for row in frame.to_pylist():
                if not visible(row["present"], row["area"]):
                    continue
                mask = decode_mask(row["rle"], video.height, video.width)
                for polygon in mask_polygons(mask):
                    lines.append(
                        polygon_line(class_of[row["object_id"]], polygon, video.height, video.width)
                    )
            count += len(lines)
            text = "".join(line + "\n" for line in lines)
            dest.write_bytes(f"{folder}/{frame_index:05d}.txt", text.encode("ascii"))
    names = "".join(f"  {i}: object_{object_id}\n" for object_id, i in class_of.items())
    data = f"path: .\ntrain: images\nval: images\nnames:\n{names}"
    dest.write_bytes(DATA_FILE, data.encode("utf-8"))
    return count
