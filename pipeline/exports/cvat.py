"""CVAT for video 1.1 XML: one ``<video_id>/annotations.xml`` per video (a CVAT task).

Each object is a ``<track>`` of ``<mask>`` shapes, one keyframe per frame it
is visible on. CVAT keeps a track's last shape on later frames until an
``outside="1"`` shape ends it, so the first frame an object disappears on
gets one (with the previous geometry). A mask shape's ``rle`` is CVAT's own
encoding: run lengths, background first, row by row over the mask's bounding
box (``left``, ``top``, ``width``, ``height``). Our object id rides along as
the shape attribute ``object_id`` (CVAT renumbers track ids on import); a track's label is
its object's ``category`` (``object`` without one), each declared in the task's labels.
The XML is written element by element with the standard library's streaming
``XMLGenerator``: no document tree is held.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from xml.sax.saxutils import XMLGenerator

import numpy as np
import pyarrow.compute as pc

from pipeline.exports.destination import Destination, safe_name
from pipeline.exports.options import ExportOptions, class_name, class_names
from pipeline.exports.reader import RunReader, VideoRows, visible
from pipeline.exports.reviewed import ReviewedExport, parse_object_id
from pipeline.masks import decode_mask
from pipeline.storage import url_to_fs

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
    categories = pc.unique(video.table.column("category").drop_null()).to_pylist()
    for label in class_names(sorted(categories)):
        xml.startElement("label", {})
        _text(xml, "name", label)
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
        label = class_name(track.column("category")[0].as_py())
        xml.startElement("track", {"id": str(track_id), "label": label, "source": "auto"})
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


# ------------------------------------------------------------------ reader


def cvat_mask(runs: list[int], left: int, top: int, width: int, height: int, shape) -> np.ndarray:
    """The inverse of :func:`cvat_mask_rle`: a bool mask of ``shape`` (H, W)."""
    if sum(runs) != width * height or any(r < 0 for r in runs):
        raise ValueError(
            f"rle covers {sum(runs)} pixels, its {width} x {height} box has {width * height}"
        )
    if left < 0 or top < 0 or left + width > shape[1] or top + height > shape[0]:
        raise ValueError(
            f"box {left},{top} {width}x{height} leaves the {shape[1]} x {shape[0]} frame"
        )
    values = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    mask = np.zeros(shape, bool)
    mask[top : top + height, left : left + width] = values.reshape(height, width)
    return mask


def _polygon_mask(points: str, shape) -> np.ndarray:
    from pycocotools import mask as mask_utils

    flat = [float(v) for pair in points.split(";") for v in pair.split(",")]
    if len(flat) < 6:
        return np.zeros(shape, bool)
    rle = mask_utils.frPyObjects([flat], shape[0], shape[1])
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def _shape_mask(element, shape) -> np.ndarray:
    if element.tag == "mask":
        runs = [int(v) for v in element.get("rle", "").split(",") if v.strip()]
        return cvat_mask(
            runs,
            int(float(element.get("left"))),
            int(float(element.get("top"))),
            int(float(element.get("width"))),
            int(float(element.get("height"))),
            shape,
        )
    if element.tag == "polygon":
        return _polygon_mask(element.get("points", ""), shape)
    raise ValueError(f"a <{element.tag}> shape has no mask (masks and polygons are read)")


def read_cvat_review(root: str, storage_options: dict | None = None) -> ReviewedExport:
    """``<video_id>/annotations.xml`` files (CVAT for video 1.1), read under CVAT's track
    rules: a shape holds on later frames until the track's next shape, ``outside="1"``
    ends it. A track's ``object_id`` attribute names our object; a track without one
    (drawn in CVAT) is a new object. Mask and polygon shapes are read."""
    import xml.etree.ElementTree as ET

    fs, base = url_to_fs(root, storage_options)
    paths = sorted(p for p in fs.glob(posixpath.join(base, "*", ANNOTATIONS_FILE)) if fs.isfile(p))
    if not paths:
        raise FileNotFoundError(f"{root}: no CVAT files (<video_id>/{ANNOTATIONS_FILE})")
    export = ReviewedExport(root)
    for path in paths:
        video_id = posixpath.basename(posixpath.dirname(path))
        with fs.open(path, "rb") as handle:
            try:
                document = ET.parse(handle).getroot()
            except ET.ParseError as error:
                raise ValueError(f"{path}: not valid XML ({error})") from None
        try:
            size = document.find("meta/task/original_size")
            shape = (int(size.findtext("height")), int(size.findtext("width")))
            frames = int(document.findtext("meta/task/size"))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(
                f"{path}: meta/task needs size and original_size (CVAT for video 1.1)"
            ) from None
        for frame in range(frames):
            export.add_frame(video_id, frame, path)
        for track in document.iter("track"):
            _read_track(track, video_id, shape, frames, path, export)
    return export


def _read_track(track, video_id: str, shape, frames: int, path: str, export) -> None:
    label = f"track {track.get('id')}"
    elements = sorted(
        (e for e in track if e.get("frame") is not None), key=lambda e: int(e.get("frame"))
    )
    for i, element in enumerate(elements):
        where = f"{path} {label} frame {element.get('frame')}"
        if element.get("outside") == "1":
            continue
        try:
            mask = _shape_mask(element, shape)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        attribute = element.find(f"attribute[@name='{OBJECT_ID_ATTRIBUTE}']")
        object_id = parse_object_id(None if attribute is None else attribute.text, where)
        start = int(element.get("frame"))
        following = int(elements[i + 1].get("frame")) if i + 1 < len(elements) else frames
        stop = max(min(following, frames), start + 1)  # held within the task; a shape past it stays
        for frame in range(start, stop):
            export.add_mask(video_id, frame, object_id, label, mask, where)
