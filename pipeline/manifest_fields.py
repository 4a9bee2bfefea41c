"""Checks of single field values in a manifest entry: points, labels, box, mask, ids, text, auto,
locations (resolved against the manifest's folder) and the id a video or image gets by default.

Each check returns the value in its typed form or raises ``Invalid`` naming the field path it
was given (``objects[0].prompts[1].box``) and why, with the offending value shortened
(:func:`check_auto`, :func:`check_text`, :func:`location_field` and :func:`id_field` append
their problems to a list instead).
:mod:`pipeline.manifest` assembles entries from these into jobs.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import unicodedata
from typing import Any

from pipeline.detectors import parse_labels
from pipeline.manifest_parse import Invalid
from pipeline.masks import validate_rle
from pipeline.storage import has_protocol
from sam2_core.prompts import (
    BOX_RULE,
    LABEL_RULE,
    POINT_RULE,
    PromptError,
    is_coordinate,
    label_array,
)

_CONTROL = re.compile(r"[\x00-\x1f]")

# The MaskGeneratorSettings fields an image line's "auto" may set, with their JSON types.
AUTO_FIELDS = {
    **dict.fromkeys(
        (
            "points_per_side",
            "points_per_batch",
            "crop_n_layers",
            "crop_n_points_downscale_factor",
            "min_mask_region_area",
        ),
        "integer",
    ),
    **dict.fromkeys(
        (
            "pred_iou_thresh",
            "stability_score_thresh",
            "stability_score_offset",
            "mask_threshold",
            "box_nms_thresh",
            "crop_nms_thresh",
            "crop_overlap_ratio",
        ),
        "number",
    ),
    **dict.fromkeys(("use_m2m", "multimask_output"), "boolean"),
}


def apply_rule(where: str, check, *args):
    """``check(*args)``, a rule of :mod:`sam2_core.prompts`, its PromptError as an Invalid at
    ``where`` (the tracker and the manifest refuse by the same rule, in the same words)."""
    try:
        return check(*args)
    except PromptError as error:
        raise Invalid(f"{where}.{error.part}" if error.part else where, error.reason) from None


def check_points(value: Any, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(where, f"must be a non-empty list of [x, y] pairs, got {short(value)}")
    points = []
    for index, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2 or not all(is_coordinate(v) for v in pair):
            raise Invalid(f"{where}[{index}]", f"{POINT_RULE}, got {short(pair)}")
        points.append((float(pair[0]), float(pair[1])))
    return tuple(points)


def check_labels(value: Any, where: str, count: int) -> tuple[int, ...]:
    """``where``: the prompt's path; the rule names "labels" or "labels[i]" under it."""
    if not isinstance(value, list):
        raise Invalid(f"{where}.labels", f"must be a list of 0/1 labels, got {short(value)}")
    if len(value) == count:  # a wrong count is label_array's to report
        for index, label in enumerate(value):
            if not is_int(label):  # JSON: no true/false, no 1.0
                raise Invalid(f"{where}.labels[{index}]", f"{LABEL_RULE}, got {short(label)}")
    return tuple(int(label) for label in apply_rule(where, label_array, value, count))


def check_box(value: Any, where: str) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4 or not all(is_coordinate(v) for v in value):
        raise Invalid(where, f"{BOX_RULE}, got {short(value)}")
    x1, y1, x2, y2 = (float(v) for v in value)
    if x2 <= x1 or y2 <= y1:
        raise Invalid(where, f"needs x2 > x1 and y2 > y1, got {value}")
    return (x1, y1, x2, y2)


def check_mask(value: Any, where: str) -> dict:
    if not isinstance(value, dict) or set(value) != {"size", "counts"}:
        raise Invalid(
            where, f'must be {{"size": [h, w], "counts": "<COCO RLE>"}}, got {short(value)}'
        )
    size = value["size"]
    if not isinstance(size, list) or len(size) != 2 or not all(is_int(v) and v > 0 for v in size):
        raise Invalid(
            f"{where}.size", f"must be [height, width] with positive integers, got {short(size)}"
        )
    counts = value["counts"]
    if not isinstance(counts, str):
        raise Invalid(
            f"{where}.counts",
            "must be COCO compressed RLE text (uncompressed lists are not accepted)",
        )
    try:
        validate_rle(counts, size[0], size[1])
    except ValueError as error:
        raise Invalid(f"{where}.counts", str(error)) from None
    return {"size": [int(size[0]), int(size[1])], "counts": counts}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_CATEGORY = 200  # characters of an object's category


def check_category(value: Any, where: str) -> str:
    """An object's class name: a string of 1..MAX_CATEGORY characters, without surrounding
    spaces or control characters (it becomes a category name in exports)."""
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise Invalid(
            where, f"must be a non-empty string without surrounding spaces, got {short(value)}"
        )
    if len(value) > MAX_CATEGORY:
        raise Invalid(where, f"must be at most {MAX_CATEGORY} characters, got {len(value)}")
    if any(unicodedata.category(char) == "Cc" for char in value) or bad_text(value):
        raise Invalid(where, f"{bad_text(value) or 'contains control characters'}: {value!r:.80}")
    return value


def json_type(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    names = {dict: "an object", list: "an array", str: "a string", int: "a number"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "a number")


def bad_text(text: str) -> str | None:
    """Why a path or id string cannot be used (control characters, not encodable as UTF-8), or None."""
    if _CONTROL.search(text):
        return "contains control characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate escape such as \\ud800)"
    return None


def short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_auto(value: Any, problems: list[Invalid]) -> tuple[tuple[str, Any], ...]:
    """An image's or video's ``auto`` object: MaskGeneratorSettings fields and values (sorted)."""
    if not isinstance(value, dict):
        problems.append(Invalid("auto", f"must be an object of settings, got {short(value)}"))
        return ()
    settings = {}
    for key, item in value.items():
        kind = AUTO_FIELDS.get(key)
        if kind is None:
            problems.append(
                Invalid(f"auto.{key}", f"unknown setting (allowed: {', '.join(AUTO_FIELDS)})")
            )
        elif (
            (kind == "integer" and not is_int(item))
            or (kind == "boolean" and not isinstance(item, bool))
            or (kind == "number" and not (is_coordinate(item) and not isinstance(item, bool)))
        ):
            problems.append(Invalid(f"auto.{key}", f"must be a finite {kind}, got {short(item)}"))
        else:
            settings[key] = float(item) if kind == "number" else item
    if len(settings) == len(value):
        from sam2_core.mask_generator import MaskGeneratorSettings

        try:
            MaskGeneratorSettings(**settings)
        except ValueError as error:
            problems.append(Invalid("auto", str(error)))
    return tuple(sorted(settings.items()))


def check_text(value: Any, problems: list[Invalid]) -> tuple[str, ...]:
    """A video line's ``text``: the categories the run's detector looks for in this video,
    comma-separated as ``--text`` (blanks and repeats dropped)."""
    if not isinstance(value, str):
        problems.append(Invalid("text", f'must be text such as "person, dog", got {short(value)}'))
        return ()
    if bad_text(value):
        problems.append(Invalid("text", f"{bad_text(value)}: {value!r:.80}"))
        return ()
    labels = parse_labels(value)
    if not labels:
        problems.append(Invalid("text", f"names no category: {value!r:.80}"))
    return labels


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_video_id(uri: str) -> str:
    """Stable id for a video URI: its file/folder name (made safe) plus a short hash of the URI.

    The hash keeps ids distinct for equal names in different folders; the name keeps them readable.
    """
    normalized = uri.rstrip("/") or uri
    stem = posixpath.basename(normalized.replace("\\", "/"))
    for suffix in (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = _ID_UNSAFE.sub("_", stem).strip("._-") or "video"
    digest = hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:10]
    return f"{stem[:64]}-{digest}"


def resolve_location(video: str, base: str) -> str:
    """A relative video path joined to the manifest's folder (local or URL); others unchanged."""
    if has_protocol(video) or video.startswith("/"):
        return video
    if "://" in base:
        protocol, folder = base.split("://", 1)
        return f"{protocol}://{posixpath.normpath(posixpath.join(folder, video))}"
    return posixpath.normpath(posixpath.join(base, video))


def location_field(value: dict, field: str, base: str, problems: list[Invalid]) -> str | None:
    """``value[field]``, a video or image path/URL, resolved against the manifest's folder."""
    location = value.get(field)
    if not isinstance(location, str) or not location.strip():
        problems.append(Invalid(field, f"must be a non-empty path or URL, got {short(location)}"))
        return None
    if bad_text(location):
        problems.append(Invalid(field, f"{bad_text(location)}: {location!r:.80}"))
        return None
    return resolve_location(location.strip(), base)


def id_field(value: dict, field: str, location: str | None, problems: list[Invalid]) -> str | None:
    """``value[field]`` (a video or image id) checked, or the id derived from ``location``."""
    given = value.get(field)
    if given is None:
        return default_video_id(location) if location else None
    if not isinstance(given, str) or not given.strip() or given != given.strip():
        problems.append(
            Invalid(field, f"must be a non-empty string without surrounding spaces, got {given!r}")
        )
        return None
    if bad_text(given):
        problems.append(Invalid(field, f"{bad_text(given)}: {given!r:.80}"))
        return None
    return given
