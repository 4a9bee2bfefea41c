"""Image lines of a manifest: one image with prompted objects, one without objects (automatic
masks), or a folder of images listed into one job per image (read by :mod:`pipeline.manifest`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.images import is_image_file, list_images
from pipeline.manifest_fields import check_auto, default_video_id, id_field, location_field, short
from pipeline.manifest_objects import ObjectSpec, validate_objects
from pipeline.manifest_parse import Entry, Invalid
from pipeline.manifest_records import Reject, VideoJob
from pipeline.storage import safe_uri

IMAGE_FIELDS = ("image", "image_id", "objects", "auto")


def validate_image(
    entry: Entry, base: str
) -> tuple[str | None, str | None, VideoJob | None, list[Invalid]]:
    """An image line: one image with prompted objects, one without objects (automatic
    masks), or a folder of images (automatic masks only; listed by read_manifest)."""
    value = entry.value
    problems: list[Invalid] = []
    for key in value:
        if key not in IMAGE_FIELDS:
            problems.append(
                Invalid(key, f"unknown field for an image (allowed: {', '.join(IMAGE_FIELDS)})")
            )
    image = location_field(value, "image", base, problems)
    folder = image is not None and not is_image_file(image)
    image_id = None
    if folder and value.get("image_id") is not None:
        problems.append(
            Invalid(
                "image_id",
                "a folder of images takes no image_id: each image's id is derived from its URI",
            )
        )
    elif not folder:
        image_id = id_field(value, "image_id", image, problems)
    objects = value.get("objects")
    specs: list[ObjectSpec] = []
    if objects is not None and folder:
        problems.append(
            Invalid(
                "objects",
                "a folder of images takes no objects (its images get automatic masks); "
                "give prompted images one line each",
            )
        )
    elif objects is not None and (not isinstance(objects, list) or not objects):
        problems.append(
            Invalid(
                "objects",
                f"must be a non-empty list (or left out for automatic masks), got {short(objects)}",
            )
        )
    elif objects is not None:
        specs, found = validate_objects(objects, entry, image=True)
        problems.extend(found)
    auto: tuple[tuple[str, Any], ...] = ()
    if value.get("auto") is not None:
        if objects is not None:
            problems.append(
                Invalid("auto", "automatic-mask settings apply to an image without objects only")
            )
        else:
            auto = check_auto(value["auto"], problems)
    job = None
    if not problems and image is not None and (image_id is not None or folder):
        job = VideoJob(image, image_id or "", tuple(specs), entry.location, image=True, auto=auto)
    return image, image_id, job, problems


def expand_image_folders(
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
