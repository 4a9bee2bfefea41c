"""Precomputed detections: boxes from any detector, given in the manifest, start objects.

A video line without ``objects`` may carry ``"detections"``: the URL or path (relative to the
manifest) of a detections JSON file, or the list itself. The file is read when the manifest is
read (so its content is hashed into the unit id and a bad file is a reject of its line); it
holds either a list of detections (a COCO results file) or an object::

    {"video": "street.mp4",                        # optional: the video's file name or video_id
     "categories": [{"id": 1, "name": "person"}],  # optional: names for category_id
     "detections": [{"frame_index": 0, "bbox": [x, y, w, h], "score": 0.93, "category": "person"},
                    {"image_id": 30, "bbox": [...], "category_id": 1}]}

Each detection: ``frame_index`` (or ``image_id``, COCO's name), the frame in decode order from
0; ``bbox`` [x, y, width, height] in pixels of the original video (COCO's box; or ``box``
[x1, y1, x2, y2] as in prompts); optional ``score`` (a finite number) and ``category`` (text)
or ``category_id`` (an integer, named through ``categories`` when given). COCO's ``id``,
``area``, ``iscrowd`` and ``segmentation`` are ignored; any other field is refused. A file
whose ``video`` names another video is refused.

In a Parquet or CSV manifest, a row with ``object_id`` empty and a ``score`` is one detection of
its video: ``frame``, ``box`` (x1, y1, x2, y2), ``score`` and an optional ``category`` column
(:mod:`pipeline.manifest_parse`); a video's rows are all detections or all prompts.

Every frame with detections is a keyframe (:class:`sam2_core.proposals.BoxProposals`): its
boxes that no object tracked there covers start new objects (box prompts on that frame). On
the first such frame nothing is tracked yet, so its boxes give exactly the box prompts of the
same boxes written as ``objects`` (ids 1, 2, ... by score, then box). A frame past the video's
end or a box wholly off the frame fails the unit for good, naming the line and the field
(``detections[3].bbox``); a box partly off the frame is clipped to it. An empty list is a video
where nothing was found: a committed unit with no rows.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, replace
from typing import Any

from pipeline.manifest_fields import is_int, short
from pipeline.manifest_objects import Prompt, fit_prompt_to_frame
from pipeline.manifest_parse import Invalid
from sam2_core.prompts import is_coordinate
from sam2_core.proposals import Detection

DETECTION_FIELDS = ("frame_index", "image_id", "bbox", "box", "score", "category", "category_id")
IGNORED_COCO_FIELDS = ("id", "area", "iscrowd", "segmentation")
FILE_FIELDS = ("video", "categories", "detections")


@dataclass(frozen=True)
class GivenDetection:
    """One precomputed detection: its frame, the detection (box as x1, y1, x2, y2) and where it
    was given (``detections[3]``, for messages)."""

    frame: int
    detection: Detection
    field: str
    row: str = ""  # the table row it came from ("p.parquet row 4"), if any

    def where(self) -> str:
        return f"{self.field} ({self.row})" if self.row else self.field

    def record(self) -> list:
        """Plain JSON values, hashed into a unit id."""
        d = self.detection
        return [self.frame, list(d.box), d.score, d.category]


def parse_detections(value: Any, where: str = "detections") -> tuple[GivenDetection, ...]:
    """A detections file's parsed JSON (or a line's inline list) as records, in the order given.

    Raises Invalid naming the field (``detections[3].bbox``) for the first problem."""
    categories: dict[int, str] = {}
    if isinstance(value, dict):
        for key in value:
            if key not in FILE_FIELDS:
                raise Invalid(key, f"unknown field (allowed: {', '.join(FILE_FIELDS)})")
        categories = _categories(value.get("categories"))
        value = value.get("detections")
    if not isinstance(value, list):
        raise Invalid(where, f"must be a list of detections, got {short(value)}")
    return tuple(
        _detection(item, f"{where}[{index}]", categories) for index, item in enumerate(value)
    )


def file_video(value: Any) -> str | None:
    """The ``video`` a detections file says it belongs to, or None."""
    return value.get("video") if isinstance(value, dict) else None


def check_file_video(named: Any, video: str, video_id: str, source: str) -> None:
    """Raise Invalid("detections", ...) when the file's ``video`` is neither the line's video
    file name nor its video_id (a detections file for another video)."""
    if named is None:
        return
    if not isinstance(named, str):
        raise Invalid("detections", f"{source}: video must be a string, got {short(named)}")
    if named in (video, video_id) or _file_name(named) == _file_name(video):
        return
    raise Invalid(
        "detections",
        f"{source} holds detections of video {named!r}, not of this line's "
        f"{_file_name(video)!r} (video_id {video_id!r})",
    )


def read_detections_file(
    uri: str, storage_options: dict | None = None
) -> tuple[Any, tuple[GivenDetection, ...]]:
    """The JSON of a detections file and its detections. Raises Invalid("detections", ...)
    naming the file for a missing or malformed one, and for any bad detection in it."""
    from pipeline.storage import safe_uri, url_to_fs

    name = safe_uri(uri)
    try:
        fs, path = url_to_fs(uri, storage_options)
        with fs.open(path, "rb") as handle:
            value = json.loads(handle.read())
    except (OSError, ValueError, ImportError) as error:
        raise Invalid("detections", f"cannot read detections file {name}: {error}") from None
    try:
        return value, parse_detections(value)
    except Invalid as problem:
        raise Invalid(problem.field, f"in {name}: {problem.reason}") from None


def fit_detections(
    given: tuple[GivenDetection, ...], num_frames: int, height: int, width: int
) -> dict[int, list[Detection]]:
    """Detections by frame, checked against the video: a frame past its end or a box wholly
    off the frame raises ValueError naming the field; boxes partly off it are clipped."""
    by_frame: dict[int, list[Detection]] = {}
    for g in given:
        if g.frame >= num_frames:
            raise ValueError(
                f"{g.where()}.frame_index {g.frame} is past the end of the video ({num_frames} "
                f"frames, last index {num_frames - 1})"
            )
        try:
            box = fit_prompt_to_frame(Prompt(g.frame, box=g.detection.box), height, width).box
        except ValueError as error:
            raise ValueError(f"{g.where()}.bbox: {error}") from None
        d = g.detection
        by_frame.setdefault(g.frame, []).append(Detection(box, d.score, d.category))
    return by_frame


def clip_detections(detections, height: int, width: int) -> list[Detection]:
    """A live detector's boxes clipped to the frame; boxes with no area inside it dropped."""
    out = []
    for d in detections:
        try:
            box = fit_prompt_to_frame(Prompt(0, box=d.box), height, width).box
        except ValueError:
            continue
        out.append(replace(d, box=box))
    return out


def _detection(item: Any, where: str, categories: dict[int, str]) -> GivenDetection:
    if not isinstance(item, dict):
        raise Invalid(where, f"must be an object, got {short(item)}")
    for key in item:
        if key not in DETECTION_FIELDS + IGNORED_COCO_FIELDS:
            raise Invalid(
                f"{where}.{key}", f"unknown field (allowed: {', '.join(DETECTION_FIELDS)})"
            )
    if ("frame_index" in item) == ("image_id" in item):
        raise Invalid(
            f"{where}.frame_index", "give the frame as frame_index or image_id (one of them)"
        )
    key = "frame_index" if "frame_index" in item else "image_id"
    frame = item[key]
    if not is_int(frame) or frame < 0:
        raise Invalid(f"{where}.{key}", f"must be a non-negative integer, got {short(frame)}")
    box = _box(item, where)
    score = item.get("score")
    if score is not None and not (is_coordinate(score) and not isinstance(score, bool)):
        raise Invalid(f"{where}.score", f"must be a finite number, got {short(score)}")
    category = _category(item, where, categories)
    return GivenDetection(
        frame, Detection(box, None if score is None else float(score), category), where
    )


def _box(item: dict, where: str) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) from COCO's ``bbox`` [x, y, w, h] or a prompt-style ``box``."""
    if ("bbox" in item) == ("box" in item):
        raise Invalid(f"{where}.bbox", "give bbox [x, y, width, height] (or box [x1, y1, x2, y2])")
    key = "bbox" if "bbox" in item else "box"
    value = item[key]
    if not isinstance(value, list) or len(value) != 4 or not all(is_coordinate(v) for v in value):
        layout = "[x, y, width, height]" if key == "bbox" else "[x1, y1, x2, y2]"
        raise Invalid(f"{where}.{key}", f"must be {layout} numbers, got {short(value)}")
    a, b, c, d = (float(v) for v in value)
    box = (a, b, a + c, b + d) if key == "bbox" else (a, b, c, d)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise Invalid(f"{where}.{key}", f"needs a positive width and height, got {value}")
    return box


def _category(item: dict, where: str, categories: dict[int, str]) -> str | None:
    if "category" in item and "category_id" in item:
        raise Invalid(f"{where}.category_id", "give category or category_id, not both")
    if item.get("category") is not None:
        if not isinstance(item["category"], str) or not item["category"].strip():
            raise Invalid(
                f"{where}.category", f"must be a non-empty string, got {short(item['category'])}"
            )
        return item["category"].strip()
    number = item.get("category_id")
    if number is None:
        return None
    if not is_int(number):
        raise Invalid(f"{where}.category_id", f"must be an integer, got {short(number)}")
    if categories and number not in categories:
        raise Invalid(f"{where}.category_id", f"{number} is not among the file's categories")
    return categories.get(number, str(number))


def _categories(value: Any) -> dict[int, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise Invalid("categories", f"must be a list of {{id, name}}, got {short(value)}")
    names = {}
    for index, item in enumerate(value):
        if (
            not isinstance(item, dict)
            or not is_int(item.get("id"))
            or not isinstance(item.get("name"), str)
        ):
            raise Invalid(
                f"categories[{index}]", f"must be {{id: integer, name: text}}, got {short(item)}"
            )
        names[item["id"]] = item["name"]
    return names


def _file_name(uri: str) -> str:
    return posixpath.basename(uri.replace("\\", "/").rstrip("/"))
