"""CVAT for video 1.1 XML: one ``<video_id>/annotations.xml`` per video (a CVAT task).

Each object is a ``<track>`` of ``<mask>`` shapes, one keyframe per frame it
is visible on. CVAT keeps a track's last shape on later frames until an
``outside="1"`` shape ends it, so the first frame an object disappears on
gets one (with the previous geometry). A mask shape's ``rle`` is CVAT's own
encoding: run lengths, background first, row by row over the mask's bounding
box (``left``, ``top``, ``width``, ``height``). Our object id rides along as
the shape attribute ``object_id`` (CVAT renumbers track ids on import).
The XML is written element by element with the standard library's streaming
``XMLGenerator``: no document tree is held.
"""

from __future__ import annotations

import datetime as dt
from xml.sax.saxutils import XMLGenerator

import numpy as np

from pipeline.exports.destination import Destination, safe_name
from pipeline.exports.options import CATEGORY_NAME, ExportOptions
from pipeline.exports.reader import RunReader, VideoRows, visible
from pipeline.masks import decode_mask

ANNOTATIONS_FILE = "annotations.xml"
OBJECT_ID_ATTRIBUTE = "object_id"


def cvat_mask_rle(mask: np.ndarray) -> tuple[list[int], int, int, int, int]:
    """(runs, left, top, width, height) of a non-empty bool mask in CVAT's encoding:
    alternating background/foreground run lengths, background first, row-major over
    the mask's bounding box."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    crop = mask[top : bottom + 1, left : right + 1].ravel()
    changes = np.flatnonzero(np.diff(crop.astype(np.int8))) + 1
    bounds = np.concatenate(([0], changes, [crop.size]))
    runs = np.diff(bounds).tolist()
    if crop[0]:
        runs.insert(0, 0)
    return runs, int(left), int(top), int(right - left + 1), int(bottom - top + 1)


def _text(xml: XMLGenerator, name: str, value: object) -> None:
    xml.startElement(name, {})
    xml.characters(str(value))
    xml.endElement(name)


def _meta(xml: XMLGenerator, video: VideoRows) -> None:
    xml.startElement("meta", {})
    xml.startElement("task", {})
    for name, value in (
        ("name", video.video_id),
        ("size", video.frame_count),
        ("mode", "interpolation"),
        ("overlap", 0),
        ("start_frame", 0),
        ("stop_frame", max(video.frame_count - 1, 0)),
    ):
        _text(xml, name, value)
    xml.startElement("labels", {})
    xml.startElement("label", {})
    _text(xml, "name", CATEGORY_NAME)
    _text(xml, "type", "mask")
    xml.startElement("attributes", {})
    xml.startElement("attribute", {})
    for name, value in (
        ("name", OBJECT_ID_ATTRIBUTE),
        ("mutable", "false"),
        ("input_type", "text"),
        ("default_value", ""),
        ("values", ""),
    ):
        _text(xml, name, value)
    xml.endElement("attribute")
    xml.endElement("attributes")
    xml.endElement("label")
    xml.endElement("labels")
    xml.startElement("original_size", {})
    _text(xml, "width", video.width)
    _text(xml, "height", video.height)
    xml.endElement("original_size")
    xml.endElement("task")
    _text(xml, "dumped", dt.datetime.now(dt.UTC).isoformat())
    xml.endElement("meta")


def _shape(xml: XMLGenerator, frame: int, outside: bool, geometry: tuple, object_id: int) -> None:
    runs, left, top, width, height = geometry
    xml.startElement(
        "mask",
        {
            "frame": str(frame),
            "keyframe": "1",
            "outside": "1" if outside else "0",
            "occluded": "0",
            "rle": ", ".join(map(str, runs)),
            "left": str(left),
            "top": str(top),
            "width": str(width),
            "height": str(height),
            "z_order": "0",
        },
    )
    xml.startElement("attribute", {"name": OBJECT_ID_ATTRIBUTE})
    xml.characters(str(object_id))
    xml.endElement("attribute")
    xml.endElement("mask")


def write_video(xml: XMLGenerator, video: VideoRows) -> int:
    """One video's CVAT document; returns the number of visible mask shapes."""
    xml.startDocument()
    xml.startElement("annotations", {})
    _text(xml, "version", "1.1")
    _meta(xml, video)
    shapes = 0
    for track_id, (object_id, track) in enumerate(video.by_object()):
        xml.startElement("track", {"id": str(track_id), "label": CATEGORY_NAME, "source": "auto"})
        last = None  # geometry of the previous frame's shape, None when not visible
        last_frame = None
        for row in track.to_pylist():
            frame = row["frame_index"]
            if last is not None and last_frame is not None and frame != last_frame + 1:
                _shape(xml, last_frame + 1, True, last, object_id)  # a gap without rows
                last = None
            if visible(row["present"], row["area"]):
                last = cvat_mask_rle(decode_mask(row["rle"], video.height, video.width))
                _shape(xml, frame, False, last, object_id)
                shapes += 1
            elif last is not None:
                _shape(xml, frame, True, last, object_id)
                last = None
            last_frame = frame
        if last is not None and last_frame + 1 < video.frame_count:
            _shape(xml, last_frame + 1, True, last, object_id)
        xml.endElement("track")
    xml.endElement("annotations")
    xml.endDocument()
    return shapes


def export_cvat(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """One CVAT-for-video XML per video; returns the number of mask shapes."""
    count = 0
    for video in reader.videos():
        with dest.open_text(f"{safe_name(video.video_id)}/{ANNOTATIONS_FILE}") as out:
            count += write_video(
                XMLGenerator(out, encoding="utf-8", short_empty_elements=True), video
            )
    return count
