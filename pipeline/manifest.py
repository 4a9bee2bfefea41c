"""Manifests: which videos to label and the prompts for each object, validated into jobs.

A manifest is JSON Lines (one video per line)::

    {"video": "s3://bucket/clips/cups.mp4", "video_id": "cups",
     "objects": [{"object_id": 1, "prompts": [{"frame": 0, "points": [[412, 300]], "labels": [1]}]},
                 {"object_id": 2, "prompts": [{"frame": 0, "box": [100, 120, 300, 400]}]},
                 {"object_id": 3, "prompts": [{"frame": 10, "mask": {"size": [540, 960], "counts": "..."}}]}]}

(an object may name its class: ``"category": "cup"``, written on its rows),

or, without ``objects``, asks for every object of the video (prompt-free masklets,
:mod:`pipeline.masklets`; an optional ``auto`` tunes its automatic masks as for images), or
names an image instead (``{"image": "s3://bucket/img.jpg", "image_id": "cat", "objects":
[...]}``, prompts on frame 0 or with no frame; no ``objects``: automatic masks, tuned by an
optional ``auto`` object of :class:`~sam2_core.mask_generator.MaskGeneratorSettings` fields),
or names the categories the run's detector looks for in a video without objects (``"text":
"person, dog"``, for ``jobs label --detector``, whose ``--text`` is then the default), or a
folder of images (``{"image": "s3://bucket/imgs/"}``: one job per JPEG/PNG file under it,
sorted, each with automatic masks and the id derived from its URI; listed when the manifest is
read, so a missing or empty folder is a reject). JSON only, not tables. The same content may be
a Parquet/CSV table with one prompt per row (columns ``video, video_id,
object_id, frame, points, labels, box, mask_rle`` and optionally ``category``; in CSV
points, labels, box and mask_rle are JSON text), grouped by video then object; rows with
``object_id`` empty and a ``score`` (and an optional ``category``) are a video's precomputed
detections instead (:mod:`pipeline.detections`, which also reads a line's ``detections``
file). Coordinates are pixels of the
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
field values are checked by :mod:`pipeline.manifest_fields`, an object's prompts by
:mod:`pipeline.manifest_objects`, image lines by :mod:`pipeline.manifest_images`; the records
(:class:`VideoJob`, :class:`Reject`) are :mod:`pipeline.manifest_records`'s.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.detections import GivenDetection, parse_detections
from pipeline.manifest_fields import AUTO_FIELDS as AUTO_FIELDS  # re-exported
from pipeline.manifest_fields import check_auto as _check_auto
from pipeline.manifest_fields import check_text as _check_text
from pipeline.manifest_fields import default_video_id as default_video_id
from pipeline.manifest_fields import id_field, json_type, location_field, short
from pipeline.manifest_images import IMAGE_FIELDS as IMAGE_FIELDS
from pipeline.manifest_images import expand_image_folders, validate_image
from pipeline.manifest_objects import MAX_ID as MAX_ID  # re-exported: callers import these here
from pipeline.manifest_objects import OBJECT_FIELDS as OBJECT_FIELDS
from pipeline.manifest_objects import PROMPT_FIELDS as PROMPT_FIELDS
from pipeline.manifest_objects import ObjectSpec as ObjectSpec
from pipeline.manifest_objects import Prompt as Prompt
from pipeline.manifest_objects import fit_prompt_to_frame as fit_prompt_to_frame
from pipeline.manifest_objects import validate_objects
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
from pipeline.manifest_records import Reject as Reject
from pipeline.manifest_records import VideoJob as VideoJob
from pipeline.storage import has_protocol, safe_uri, url_to_fs

VIDEO_FIELDS = ("video", "video_id", "objects", "auto", "detections", "text")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)


class EmptyManifestError(ValueError):
    """The manifest holds no entries at all (an empty file, only blank lines, no rows, ``[]``)."""


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
    jobs, rejects = _read_detection_files(jobs, rejects, storage_options)
    return expand_image_folders(jobs, rejects, storage_options)


# ---------------------------------------------------------------- paths


def _manifest_base(uri: str) -> str:
    """Folder of the manifest, for resolving relative video paths."""
    if has_protocol(uri):
        return uri.rsplit("/", 1)[0]
    _, path = url_to_fs(uri)
    return posixpath.dirname(path)


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
    return {
        "mask": "mask_rle",
        "prompts": "frame",
        "objects": "object_id",
        "frame_index": "frame",
        "detections": "score",
    }.get(column, column)


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
        return validate_image(entry, base)
    for key in value:
        if key not in VIDEO_FIELDS:
            problems.append(_Invalid(key, f"unknown field (allowed: {', '.join(VIDEO_FIELDS)})"))

    video = location_field(value, "video", base, problems)
    video_id = id_field(value, "video_id", video, problems)

    objects = value.get("objects")
    specs: list[ObjectSpec] = []
    auto: tuple[tuple[str, Any], ...] = ()
    if objects is None and (entry.locations is None or "detections" in value):  # find every object
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
        specs, found = validate_objects(objects, entry)
        problems.extend(found)
    if objects is not None and value.get("auto") is not None:
        problems.append(
            _Invalid("auto", "automatic-mask settings apply to a video without objects only")
        )
    detections, detections_from = _detections_field(value, base, problems, entry)
    text: tuple[str, ...] = ()
    if value.get("text") is not None:
        if objects is not None or value.get("auto") is not None or "detections" in value:
            problems.append(
                _Invalid(
                    "text",
                    "detector categories apply to a video without objects, auto or detections",
                )
            )
        else:
            text = _check_text(value["text"], problems)
    job = None
    if not problems and video is not None and video_id is not None:
        job = VideoJob(
            video=video,
            video_id=video_id,
            objects=tuple(specs),
            location=entry.location,
            auto=auto,
            detections=detections,
            detections_from=detections_from,
            text=text,
        )
    return video, video_id, job, problems


def _detections_field(
    value: dict, base: str, problems: list[_Invalid], entry: Entry
) -> tuple[tuple[GivenDetection, ...] | None, str]:
    """A video line's ``detections``: the list given inline (or by a table's detection rows),
    or the file's resolved location (read by :func:`_read_detection_files`); (None, "") when
    absent."""
    given = value.get("detections")
    if given is None:
        return None, ""
    if value.get("objects") is not None or value.get("auto") is not None:
        problems.append(
            _Invalid("detections", "detections apply to a video without objects or auto")
        )
        return None, ""
    if isinstance(given, str):
        location = location_field(value, "detections", base, problems)
        return None, location or ""
    rows = entry.locations or {}
    try:
        parsed = parse_detections(given)
    except _Invalid as problem:
        index = re.match(r"detections\[(\d+)\]", problem.field)
        problem.location = index and rows.get(("detections", int(index.group(1))))
        problems.append(problem)
        return None, ""
    if rows:
        rows = [rows[("detections", k)] for k in range(len(parsed))]
        parsed = tuple(dataclasses.replace(g, row=row) for g, row in zip(parsed, rows))
    return parsed, ""


def _read_detection_files(
    jobs: list[VideoJob], rejects: list[Reject], storage_options: dict | None
) -> tuple[list[VideoJob], list[Reject]]:
    """Jobs whose detections are in a file, with the file read and checked (it must belong to
    the line's video); a missing or bad file is a reject of its line naming the field."""
    from pipeline.detections import check_file_video, file_video, read_detections_file

    if not any(job.detections_from for job in jobs):
        return jobs, rejects
    kept, rejects = [], list(rejects)
    for job in jobs:
        if job.detections_from and job.detections is None:
            try:
                value, detections = read_detections_file(job.detections_from, storage_options)
                check_file_video(
                    file_video(value), job.video, job.video_id, safe_uri(job.detections_from)
                )
            except _Invalid as problem:
                rejects.append(Reject(job.location, problem.field, problem.reason, "", job.video))
                continue
            job = dataclasses.replace(job, detections=detections)
        kept.append(job)
    return kept, rejects
