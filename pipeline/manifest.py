"""Manifests: which videos to label and the prompts for each object, validated into jobs.

A manifest is JSON Lines (one video per line)::

    {"video": "s3://bucket/clips/cups.mp4", "video_id": "cups",
     "objects": [{"object_id": 1, "prompts": [{"frame": 0, "points": [[412, 300]], "labels": [1]}]},
                 {"object_id": 2, "prompts": [{"frame": 0, "box": [100, 120, 300, 400]}]},
                 {"object_id": 3, "prompts": [{"frame": 10, "mask": {"size": [540, 960], "counts": "..."}}]}]}

or, without ``objects``, asks for every object of the video (prompt-free masklets,
:mod:`pipeline.masklets`; an optional ``auto`` tunes its automatic masks as for images), or
names an image instead (``{"image": "s3://bucket/img.jpg", "image_id": "cat", "objects":
[...]}``, prompts on frame 0 or with no frame; no ``objects``: automatic masks, tuned by an
optional ``auto`` object of :class:`~sam2_core.mask_generator.MaskGeneratorSettings` fields),
or a folder of images (``{"image": "s3://bucket/imgs/"}``: one job per JPEG/PNG file under it,
sorted, each with automatic masks and the id derived from its URI; listed when the manifest is
read, so a missing or empty folder is a reject). JSON only, not tables. The same content may be
a Parquet/CSV table with one prompt per row (columns ``video, video_id,
object_id, frame, points, labels, box, mask_rle``; in CSV the last four are
JSON text), grouped by video then object. Coordinates are pixels of the
original video. A relative ``video`` path is resolved against the
manifest's folder. A ``.json`` file holds one JSON array of videos or one
video object (a ``.json`` file of JSON Lines is read as such).

Every problem becomes a :class:`Reject` naming the line/row and field; a
video with any problem yields no job (labeling it with some prompts missing
would silently give different masks), and never stops the valid rest. A
manifest with no entries at all raises :class:`EmptyManifestError`.
Coordinates must be finite and within float32 range here; where a check
is also the tracker's (coordinates, labels, which parts a prompt may
combine) it is the rule of :mod:`sam2_core.prompts`, applied to the JSON
values. Whether a prompt's frame and coordinates lie inside the video is
only known after decoding, so the worker checks that with
:func:`fit_prompt_to_frame` and maps each prompt into the tracker's
:class:`~sam2_core.prompts.ObjectPrompt` (``pipeline.labeling``).
File syntax (lines, documents, rows) is read by :mod:`pipeline.manifest_parse`, single
field values are checked by :mod:`pipeline.manifest_fields`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.images import is_image_file, list_images
from pipeline.manifest_fields import (
    apply_rule,
    bad_text,
    check_box,
    check_labels,
    check_mask,
    check_points,
    is_int,
    json_type,
    short,
)
from pipeline.manifest_parse import (
    NO_VALUE,
    Entry,
    csv_rows,
    group_rows,
    json_document_entries,
    jsonl_entries,
    parquet_rows,
)
from pipeline.manifest_parse import Invalid as _Invalid
from pipeline.storage import has_protocol, safe_uri, url_to_fs
from sam2_core.prompts import check_combination, check_pairing, is_coordinate


@dataclass(frozen=True)
class Prompt:
    """Prompts for one object on one frame; coordinates in original-video pixels.

    points: N x (x, y) with labels N x {0: background, 1: foreground};
    box: (x1, y1, x2, y2); mask_rle: {"size": [h, w], "counts": str} (COCO compressed RLE).
    """

    frame: int
    points: tuple[tuple[float, float], ...] | None = None
    labels: tuple[int, ...] | None = None
    box: tuple[float, float, float, float] | None = None
    mask_rle: dict | None = None


@dataclass(frozen=True)
class ObjectSpec:
    """One object to track and its prompts (on one or more frames)."""

    object_id: int
    prompts: tuple[Prompt, ...]


@dataclass(frozen=True)
class VideoJob:
    """A validated video to label; ``location`` says where it came from (e.g. "m.jsonl line 3")."""

    video: str
    video_id: str
    objects: tuple[ObjectSpec, ...]
    location: str
    # ``video`` is one still image, ``video_id`` its image id (a folder until read_manifest lists it)
    image: bool = False
    # an image or video without objects: its automatic-mask settings (MaskGeneratorSettings fields)
    auto: tuple[tuple[str, Any], ...] = ()
    # a video without objects: frames between keyframes where objects are looked for (set by
    # pipeline.plan from --discover-every; 0 until then)
    discover_every: int = 0


@dataclass(frozen=True)
class Reject:
    """One problem with a manifest entry: where, which field, why, and the raw entry text."""

    location: str
    field: str
    reason: str
    raw: str
    video: str | None = None


VIDEO_FIELDS = ("video", "video_id", "objects", "auto")
IMAGE_FIELDS = ("image", "image_id", "objects", "auto")
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
OBJECT_FIELDS = ("object_id", "prompts")
PROMPT_FIELDS = ("frame", "points", "labels", "box", "mask")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
MAX_ID = 2**63 - 1
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class EmptyManifestError(ValueError):
    """The manifest holds no entries at all (an empty file, only blank lines, no rows, ``[]``)."""


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


def read_manifest(
    uri: str, storage_options: dict | None = None
) -> tuple[list[VideoJob], list[Reject]]:
    """Read and validate a JSONL / Parquet / CSV manifest (chosen by extension) at a path or fsspec URL.

    Returns the valid jobs in manifest order and one Reject per problem found
    (every non-blank line or row ends up in a job or in at least one Reject).
    Raises FileNotFoundError if the manifest is missing or unreadable,
    EmptyManifestError if it has no entries, and ValueError for an unknown
    extension or a table whose columns are wrong.
    """
    fs, path = url_to_fs(uri, storage_options)
    name = posixpath.basename(path)
    lowered = name.lower()
    base = _manifest_base(uri)
    try:
        if lowered.endswith(JSONL_SUFFIXES):
            with fs.open(path, "rb") as handle:
                data = handle.read()
            if lowered.endswith(".json"):
                entries = json_document_entries(data, name)
            else:
                entries = jsonl_entries(data, name)
        elif lowered.endswith(PARQUET_SUFFIXES):
            with fs.open(path, "rb") as handle:
                table = pq.read_table(handle)
            entries = None
        elif lowered.endswith(CSV_SUFFIXES):
            with fs.open(path, "rb") as handle:
                data = handle.read()
            table = None
        else:
            raise ValueError(
                f"manifest {uri}: unknown extension (expected one of "
                f"{', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES)})"
            )
    except FileNotFoundError as error:
        raise FileNotFoundError(f"manifest not found: {uri}") from error
    except (PermissionError, IsADirectoryError) as error:
        raise FileNotFoundError(f"manifest unreadable: {uri} ({error})") from error
    except pa.ArrowInvalid as error:
        raise ValueError(f"manifest {uri}: not a readable Parquet file ({error})") from error

    if not lowered.endswith(JSONL_SUFFIXES):
        rows = csv_rows(data, name) if lowered.endswith(CSV_SUFFIXES) else parquet_rows(table, name)
        entries = group_rows(rows)
    if not entries:
        raise EmptyManifestError(
            f"manifest {uri} is empty: no videos to label (only blank lines, no rows or [])"
        )
    jobs, rejects = _validate_entries(entries, base)
    return _expand_image_folders(jobs, rejects, storage_options)


# ---------------------------------------------------------------- paths


def _manifest_base(uri: str) -> str:
    """Folder of the manifest, for resolving relative video paths."""
    if has_protocol(uri):
        return uri.rsplit("/", 1)[0]
    _, path = url_to_fs(uri)
    return posixpath.dirname(path)


def _resolve_video(video: str, base: str) -> str:
    """A relative video path joined to the manifest's folder (local or URL); others unchanged."""
    if has_protocol(video) or video.startswith("/"):
        return video
    if "://" in base:
        protocol, folder = base.split("://", 1)
        return f"{protocol}://{posixpath.normpath(posixpath.join(folder, video))}"
    return posixpath.normpath(posixpath.join(base, video))


# ---------------------------------------------------------------- validation


def _validate_entries(entries: Iterable[Entry], base: str) -> tuple[list[VideoJob], list[Reject]]:
    jobs: list[VideoJob] = []
    rejects: list[Reject] = []
    seen_ids: dict[str, str] = {}
    for entry in entries:
        problems = list(entry.problems)
        job = None
        video = None
        if entry.value is not NO_VALUE:
            video, video_id, job, found = _validate_video(entry, base)
            problems.extend(found)
            if video_id is not None:
                if video_id in seen_ids:
                    field = "image_id" if "image" in entry.value else "video_id"
                    problems.append(
                        _Invalid(field, f"{video_id!r} already used by {seen_ids[video_id]}")
                    )
                else:
                    seen_ids[video_id] = entry.location
        if problems:
            for problem in problems:
                field = problem.field if entry.locations is None else _column_for(problem.field)
                location = problem.location or entry.location
                raw = (entry.row_raws or {}).get(location, entry.raw)
                rejects.append(Reject(location, field, problem.reason, raw, video))
        elif job is not None:
            jobs.append(job)
    return jobs, rejects


def _column_for(field: str) -> str:
    """Table column behind a JSONL-style field path ("objects[0].prompts[2].box[1]" -> "box")."""
    column = re.sub(r"\[\d+\]", "", field.rsplit(".", 1)[-1])
    return {"mask": "mask_rle", "prompts": "frame", "objects": "object_id"}.get(column, column)


def _validate_video(
    entry: Entry, base: str
) -> tuple[str | None, str | None, VideoJob | None, list[_Invalid]]:
    value = entry.value
    problems: list[_Invalid] = []
    if not isinstance(value, dict):
        return (
            None,
            None,
            None,
            [_Invalid("line", f"expected a JSON object, got {json_type(value)}")],
        )
    if "image" in value:
        return _validate_image(entry, base)
    for key in value:
        if key not in VIDEO_FIELDS:
            problems.append(_Invalid(key, f"unknown field (allowed: {', '.join(VIDEO_FIELDS)})"))

    video = _location_field(value, "video", base, problems)
    video_id = _id_field(value, "video_id", video, problems)

    objects = value.get("objects")
    specs: list[ObjectSpec] = []
    auto: tuple[tuple[str, Any], ...] = ()
    if objects is None and entry.locations is None:  # no objects: find every object
        if value.get("auto") is not None:
            auto = _check_auto(value["auto"], problems)
    elif not isinstance(objects, list) or not objects:
        if not entry.problems:  # a table video whose only rows were unusable has no objects left
            problems.append(
                _Invalid(
                    "objects",
                    f"must be a non-empty list (or left out to find every object), got {short(objects)}",
                )
            )
    else:
        seen_objects: set[int] = set()
        for index, obj in enumerate(objects):
            spec, found = _validate_object(obj, f"objects[{index}]", index, entry)
            problems.extend(found)
            if spec is None:
                continue
            if spec.object_id in seen_objects:
                problems.append(
                    _Invalid(
                        f"objects[{index}].object_id",
                        f"duplicate object id {spec.object_id} in this video",
                    )
                )
            seen_objects.add(spec.object_id)
            specs.append(spec)
    if objects is not None and value.get("auto") is not None:
        problems.append(
            _Invalid("auto", "automatic-mask settings apply to a video without objects only")
        )
    job = None
    if not problems and video is not None and video_id is not None:
        job = VideoJob(
            video=video,
            video_id=video_id,
            objects=tuple(specs),
            location=entry.location,
            auto=auto,
        )
    return video, video_id, job, problems


def _location_field(value: dict, field: str, base: str, problems: list[_Invalid]) -> str | None:
    """``value[field]``, a video or image path/URL, resolved against the manifest's folder."""
    location = value.get(field)
    if not isinstance(location, str) or not location.strip():
        problems.append(_Invalid(field, f"must be a non-empty path or URL, got {short(location)}"))
        return None
    if bad_text(location):
        problems.append(_Invalid(field, f"{bad_text(location)}: {location!r:.80}"))
        return None
    return _resolve_video(location.strip(), base)


def _id_field(
    value: dict, field: str, location: str | None, problems: list[_Invalid]
) -> str | None:
    """``value[field]`` (a video or image id) checked, or the id derived from ``location``."""
    given = value.get(field)
    if given is None:
        return default_video_id(location) if location else None
    if not isinstance(given, str) or not given.strip() or given != given.strip():
        problems.append(
            _Invalid(field, f"must be a non-empty string without surrounding spaces, got {given!r}")
        )
        return None
    if bad_text(given):
        problems.append(_Invalid(field, f"{bad_text(given)}: {given!r:.80}"))
        return None
    return given


def _validate_image(
    entry: Entry, base: str
) -> tuple[str | None, str | None, VideoJob | None, list[_Invalid]]:
    """An image line: one image with prompted objects, one without objects (automatic
    masks), or a folder of images (automatic masks only; listed by read_manifest)."""
    value = entry.value
    problems: list[_Invalid] = []
    for key in value:
        if key not in IMAGE_FIELDS:
            problems.append(
                _Invalid(key, f"unknown field for an image (allowed: {', '.join(IMAGE_FIELDS)})")
            )
    image = _location_field(value, "image", base, problems)
    folder = image is not None and not is_image_file(image)
    image_id = None
    if folder and value.get("image_id") is not None:
        problems.append(
            _Invalid(
                "image_id",
                "a folder of images takes no image_id: each image's id is derived from its URI",
            )
        )
    elif not folder:
        image_id = _id_field(value, "image_id", image, problems)
    objects = value.get("objects")
    specs: list[ObjectSpec] = []
    if objects is not None and folder:
        problems.append(
            _Invalid(
                "objects",
                "a folder of images takes no objects (its images get automatic masks); "
                "give prompted images one line each",
            )
        )
    elif objects is not None and (not isinstance(objects, list) or not objects):
        problems.append(
            _Invalid(
                "objects",
                f"must be a non-empty list (or left out for automatic masks), got {short(objects)}",
            )
        )
    elif objects is not None:
        seen_objects: set[int] = set()
        for index, obj in enumerate(objects):
            spec, found = _validate_object(obj, f"objects[{index}]", index, entry, image=True)
            problems.extend(found)
            if spec is not None and spec.object_id in seen_objects:
                problems.append(
                    _Invalid(
                        f"objects[{index}].object_id",
                        f"duplicate object id {spec.object_id} in this image",
                    )
                )
            elif spec is not None:
                seen_objects.add(spec.object_id)
                specs.append(spec)
    auto: tuple[tuple[str, Any], ...] = ()
    if value.get("auto") is not None:
        if objects is not None:
            problems.append(
                _Invalid("auto", "automatic-mask settings apply to an image without objects only")
            )
        else:
            auto = _check_auto(value["auto"], problems)
    job = None
    if not problems and image is not None and (image_id is not None or folder):
        job = VideoJob(image, image_id or "", tuple(specs), entry.location, image=True, auto=auto)
    return image, image_id, job, problems


def _check_auto(value: Any, problems: list[_Invalid]) -> tuple[tuple[str, Any], ...]:
    """An image's or video's ``auto`` object: MaskGeneratorSettings fields and values (sorted)."""
    if not isinstance(value, dict):
        problems.append(_Invalid("auto", f"must be an object of settings, got {short(value)}"))
        return ()
    settings = {}
    for key, item in value.items():
        kind = AUTO_FIELDS.get(key)
        if kind is None:
            problems.append(
                _Invalid(f"auto.{key}", f"unknown setting (allowed: {', '.join(AUTO_FIELDS)})")
            )
        elif (
            (kind == "integer" and not is_int(item))
            or (kind == "boolean" and not isinstance(item, bool))
            or (kind == "number" and not (is_coordinate(item) and not isinstance(item, bool)))
        ):
            problems.append(_Invalid(f"auto.{key}", f"must be a finite {kind}, got {short(item)}"))
        else:
            settings[key] = float(item) if kind == "number" else item
    if len(settings) == len(value):
        from sam2_core.mask_generator import MaskGeneratorSettings

        try:
            MaskGeneratorSettings(**settings)
        except ValueError as error:
            problems.append(_Invalid("auto", str(error)))
    return tuple(sorted(settings.items()))


def _validate_object(
    obj: Any, where: str, object_index: int, entry: Entry, image: bool = False
) -> tuple[ObjectSpec | None, list[_Invalid]]:
    if not isinstance(obj, dict):
        return None, [_Invalid(where, f"must be an object, got {short(obj)}")]
    problems: list[_Invalid] = []
    for key in obj:
        if key not in OBJECT_FIELDS:
            problems.append(
                _Invalid(f"{where}.{key}", f"unknown field (allowed: {', '.join(OBJECT_FIELDS)})")
            )
    object_id = obj.get("object_id")
    if not is_int(object_id) or not 0 <= object_id <= MAX_ID:
        problems.append(
            _Invalid(
                f"{where}.object_id",
                f"must be a non-negative integer, got {short(object_id)}",
                location=(entry.locations or {}).get((object_index, 0)),
            )
        )
        object_id = None
    prompts = obj.get("prompts")
    parsed: list[Prompt] = []
    if not isinstance(prompts, list) or not prompts:
        problems.append(
            _Invalid(f"{where}.prompts", f"must be a non-empty list, got {short(prompts)}")
        )
    else:
        frames: dict[int, int] = {}
        for index, raw_prompt in enumerate(prompts):
            prompt_where = f"{where}.prompts[{index}]"
            row_location = (entry.locations or {}).get((object_index, index))
            try:
                prompt = _validate_prompt(raw_prompt, prompt_where, image)
            except _Invalid as problem:
                problem.location = problem.location or row_location
                problems.append(problem)
                continue
            if prompt.frame in frames:
                problem = _Invalid(
                    f"{prompt_where}.frame",
                    f"second prompt on frame {prompt.frame} for this object (first is prompts[{frames[prompt.frame]}]); "
                    "put all clicks of one frame in one prompt",
                )
                problem.location = problem.location or row_location
                problems.append(problem)
                continue
            frames[prompt.frame] = index
            parsed.append(prompt)
    if problems or object_id is None:
        return None, problems
    return ObjectSpec(object_id=object_id, prompts=tuple(parsed)), []


def _validate_prompt(raw: Any, where: str, image: bool = False) -> Prompt:
    """One prompt; on an image (``image``) the frame may be left out and must be 0."""
    if not isinstance(raw, dict):
        raise _Invalid(where, f"must be an object, got {short(raw)}")
    for key in raw:
        if key not in PROMPT_FIELDS:
            raise _Invalid(f"{where}.{key}", f"unknown field (allowed: {', '.join(PROMPT_FIELDS)})")
    frame = raw.get("frame", 0 if image else None)
    if frame is None:
        raise _Invalid(f"{where}.frame", "missing")
    if not is_int(frame) or not 0 <= frame <= MAX_ID:
        raise _Invalid(f"{where}.frame", f"must be a non-negative integer, got {short(frame)}")
    if image and frame != 0:
        raise _Invalid(f"{where}.frame", f"an image has frame 0 only, got {frame}")

    points = labels = box = mask = None
    has_points = raw.get("points") is not None
    apply_rule(where, check_pairing, has_points, raw.get("labels") is not None)
    if has_points:
        points = check_points(raw["points"], f"{where}.points")
        labels = check_labels(raw["labels"], where, len(points))
    if raw.get("box") is not None:
        box = check_box(raw["box"], f"{where}.box")
    has_mask = raw.get("mask") is not None
    apply_rule(where, check_combination, points is not None, box is not None, has_mask)
    if has_mask:
        mask = check_mask(raw["mask"], f"{where}.mask")
    return Prompt(frame=frame, points=points, labels=labels, box=box, mask_rle=mask)


def _expand_image_folders(
    jobs: list[VideoJob], rejects: list[Reject], storage_options: dict | None
) -> tuple[list[VideoJob], list[Reject]]:
    """Folder lines listed into one job per image (:func:`pipeline.images.list_images`); a
    missing or empty folder, or an image id already used by an earlier job, is a reject."""
    if not any(job.image and not is_image_file(job.video) for job in jobs):
        return jobs, rejects
    out: list[VideoJob] = []
    rejects = list(rejects)
    owners: dict[str, str] = {}
    for job in jobs:
        expanded = [job]
        if job.image and not is_image_file(job.video):
            try:
                uris = list_images(job.video, storage_options)
                if not uris:
                    raise FileNotFoundError(f"no JPEG/PNG images under {safe_uri(job.video)}")
            except FileNotFoundError as error:
                rejects.append(Reject(job.location, "image", str(error), "", job.video))
                continue
            expanded = [
                dataclasses.replace(job, video=uri, video_id=default_video_id(uri)) for uri in uris
            ]
        for one in expanded:
            where = one.location if one is job else f"{one.location} ({safe_uri(one.video)})"
            if one.video_id in owners:
                reason = f"{one.video_id!r} already used by {owners[one.video_id]}"
                rejects.append(
                    Reject(where, "image_id" if one.image else "video_id", reason, "", one.video)
                )
                continue
            owners[one.video_id] = where
            out.append(one)
    return out, rejects


# ---------------------------------------------------------------- against the video


def fit_prompt_to_frame(prompt: Prompt, height: int, width: int) -> Prompt:
    """``prompt`` checked against a height x width frame, a partly-outside box clipped to it.

    A point must lie in [0, width] x [0, height]; a box must overlap the frame.
    Otherwise the prompt points at nothing in the video, yet the model would still
    return a mask for it, so this raises ValueError naming the field and value
    ("points[1] (5000, -300) is outside ..."). Callers (the worker, once the video is
    open) add the manifest location, object and prompt. Mask prompts pass unchanged.
    """
    for index, (x, y) in enumerate(prompt.points or ()):
        if not (0 <= x <= width and 0 <= y <= height):
            raise ValueError(
                f"points[{index}] ({x:g}, {y:g}) is outside the {width} x {height} frame "
                f"(x must be in 0..{width}, y in 0..{height})"
            )
    if prompt.box is None:
        return prompt
    x1, y1, x2, y2 = prompt.box
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(
            f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies wholly outside the {width} x {height} frame"
        )
    return prompt if clipped == prompt.box else dataclasses.replace(prompt, box=clipped)
