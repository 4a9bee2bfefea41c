"""Turn validated video jobs into units of work with deterministic ids.

A unit is one video with all of its objects, or a group of at most
``max_objects_per_unit`` of them. Its ``unit_id`` hashes everything that
decides its output -- the video URI and id, the video's identity (size plus
ETag, version or modification time: ``pipeline.video_identity.video_identities``,
gathered once on the driver while planning), the object ids, their
prompts and categories (when given), the model and the checkpoint digest -- so the
same inputs always give the same id. That is what makes retries and resumed runs safe: a unit already
committed under its id is skipped, and a re-run writes the same names again.
A video replaced at the same path gets new unit ids, so its stale masks are
never taken for finished work.

A video job without objects (find every object: :mod:`pipeline.masklets`) is one unit whose id
hashes its discovery settings in place of objects (with its precomputed detections, or the
run's detector settings); it writes objects it finds as it goes, so it
claims its video whole (object :data:`WHOLE_VIDEO`).

Image jobs (``VideoJob.image``) are batched instead: up to ``images_per_unit`` images per
unit, in manifest order, their job an :class:`ImageBatch`. Such a unit's id hashes each
image's URI, id, identity, objects and prompts or automatic-mask settings, with the model and
checkpoint digest. An image is written whole by one unit: its claim (``Unit.claim_keys``) and
the unit's ``object_ids`` name object :data:`WHOLE_IMAGE`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.manifest import ObjectSpec, Reject, VideoJob
from pipeline.storage import safe_uri

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
DEFAULT_IMAGES_PER_UNIT = 16
WHOLE_IMAGE = -1  # the object id under which an image unit claims each of its images
WHOLE_VIDEO = WHOLE_IMAGE  # ... and a unit that finds a video's objects claims its video


@dataclass(frozen=True)
class ImageBatch:
    """The images one image unit labels in one worker call (:mod:`pipeline.image_labeling`).

    Stands where a unit's VideoJob stands: ``video`` and ``video_id`` (what commit records and
    ``failures/`` show) are its first image's, ``location`` lists its manifest lines.
    """

    images: tuple[VideoJob, ...]

    @property
    def video(self) -> str:
        return self.images[0].video

    @property
    def video_id(self) -> str:
        return self.images[0].video_id

    @property
    def location(self) -> str:
        return ", ".join(dict.fromkeys(image.location for image in self.images))

    @property
    def objects(self) -> tuple[ObjectSpec, ...]:
        return ()


@dataclass(frozen=True)
class Unit:
    """One schedulable piece of work: a video and the objects to track in it."""

    unit_id: str
    job: VideoJob | ImageBatch
    object_ids: tuple[int, ...]
    video_identity: str = (
        ""  # the video's identity when planned (pipeline.video_identity.video_identities)
    )

    @property
    def video_id(self) -> str:
        return self.job.video_id

    @property
    def objects(self) -> tuple[ObjectSpec, ...]:
        """The job's objects that belong to this unit, in manifest order."""
        wanted = set(self.object_ids)
        return tuple(o for o in self.job.objects if o.object_id in wanted)

    @property
    def num_prompts(self) -> int:
        return sum(len(o.prompts) for o in self.objects)

    @property
    def images(self) -> tuple[VideoJob, ...]:
        """The image jobs of an image unit; empty for a video unit."""
        return self.job.images if isinstance(self.job, ImageBatch) else ()

    @property
    def claim_keys(self) -> tuple[tuple[str, int], ...]:
        """The (video_id, object_id) keys this unit writes, as claimed (pipeline.claims)."""
        if self.images:
            return tuple((image.video_id, WHOLE_IMAGE) for image in self.images)
        return tuple((self.video_id, int(oid)) for oid in self.object_ids)


def _prompt_record(prompt) -> dict:
    record = dataclasses.asdict(prompt)
    # Tuples and lists must hash the same; floats keep their repr.
    return json.loads(json.dumps(record, sort_keys=True))


def _object_record(spec: ObjectSpec) -> dict:
    """What a unit id hashes of one object: its id and prompts, and its category only when
    the manifest gives one (so ids of manifests without categories never change)."""
    record = {
        "object_id": int(spec.object_id),
        "prompts": [_prompt_record(p) for p in spec.prompts],
    }
    if spec.category is not None:
        record["category"] = spec.category
    return record


def unit_id_for(
    job: VideoJob,
    objects: Sequence[ObjectSpec],
    model_id: str,
    checkpoint_digest: str | None,
    video_identity: str,
) -> str:
    """Stable id of a unit: ``<video slug>-<24 hex digits of a sha256>``, safe as a file name."""
    payload = {
        "video": job.video,
        "video_id": job.video_id,
        "video_identity": video_identity,
        "objects": [_object_record(o) for o in sorted(objects, key=lambda o: o.object_id)],
        "model": model_id,
        "checkpoint": checkpoint_digest or "",
    }
    if not objects:
        from pipeline.masklets import discovery_record

        payload["discovery"] = discovery_record(job)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
    slug = _SLUG.sub("_", job.video_id).strip("._")[:48] or "video"
    return f"{slug}-{digest[:24]}"


def image_unit_id(
    images: Sequence[VideoJob],
    model_id: str,
    checkpoint_digest: str | None,
    identities: Mapping[str, str],
) -> str:
    """Stable id of an image unit: ``<first image slug>-<24 hex digits of a sha256>`` over each
    image's URI, id, identity, objects and prompts (or automatic-mask settings), the model and
    the checkpoint digest."""
    payload = {
        "images": [
            {
                "image": image.video,
                "image_id": image.video_id,
                "identity": identities[image.video],
                "objects": [
                    _object_record(o) for o in sorted(image.objects, key=lambda o: o.object_id)
                ],
                "auto": None if image.objects else dict(image.auto),
            }
            for image in images
        ],
        "model": model_id,
        "checkpoint": checkpoint_digest or "",
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
    slug = _SLUG.sub("_", images[0].video_id).strip("._")[:48] or "image"
    return f"{slug}-{digest[:24]}"


def plan_units(
    jobs: Sequence[VideoJob],
    model_id: str,
    checkpoint_digest: str | None,
    max_objects_per_unit: int | None = None,
    *,
    identities: Mapping[str, str],
    images_per_unit: int | None = None,
    discover_every: int | None = None,
    detector=None,
) -> list[Unit]:
    """Split jobs into units (in manifest order).

    Objects are grouped in manifest order, at most ``max_objects_per_unit`` per
    unit (None or 0: all of a video's objects in one unit). Image jobs are grouped
    in manifest order, ``images_per_unit`` per unit (None: DEFAULT_IMAGES_PER_UNIT),
    after the video units. ``identities`` maps every job's video or image URI to its
    identity (``pipeline.video_identity.video_identities``). A video job without objects is
    one unit that finds them, on a keyframe every ``discover_every`` frames (None: the default
    of :mod:`sam2_core.discovery`), by automatic masks or, when given, the run's ``detector``
    (a :class:`pipeline.detectors.DetectorSpec`; jobs with precomputed detections use those,
    jobs with ``auto`` settings automatic masks).
    """
    if max_objects_per_unit is not None and max_objects_per_unit < 0:
        raise ValueError(f"max_objects_per_unit must be >= 1, got {max_objects_per_unit}")
    batch = DEFAULT_IMAGES_PER_UNIT if images_per_unit is None else images_per_unit
    if batch < 1:
        raise ValueError(f"images_per_unit must be >= 1, got {images_per_unit}")
    units: list[Unit] = []
    seen: set[str] = set()
    for job in jobs:
        if job.image:
            continue
        if not job.objects:
            from sam2_core.discovery import DEFAULT_DISCOVER_EVERY

            uses_detector = detector is not None and finds_with_detector(job)
            job = dataclasses.replace(
                job,
                discover_every=discover_every or DEFAULT_DISCOVER_EVERY,
                # a line's own detections or automatic-mask settings come before the run's
                # detector, and its own categories before the run's --text
                detector=(
                    dataclasses.replace(detector, labels=job.text or detector.labels)
                    if uses_detector
                    else None
                ),
            )
            identity = identities[job.video]
            unit_id = unit_id_for(job, (), model_id, checkpoint_digest, identity)
            if unit_id not in seen:
                seen.add(unit_id)
                units.append(Unit(unit_id, job, (WHOLE_VIDEO,), identity))
            continue
        objects = list(job.objects)
        size = max_objects_per_unit or max(1, len(objects))
        for start in range(0, len(objects), size):
            group = objects[start : start + size]
            identity = identities[job.video]
            unit_id = unit_id_for(job, group, model_id, checkpoint_digest, identity)
            if unit_id in seen:  # the very same work listed twice: do it once
                continue
            seen.add(unit_id)
            units.append(Unit(unit_id, job, tuple(int(o.object_id) for o in group), identity))
    images = [job for job in jobs if job.image]
    for start in range(0, len(images), batch):
        group = images[start : start + batch]
        unit_id = image_unit_id(group, model_id, checkpoint_digest, identities)
        listing = repr([identities[image.video] for image in group])
        identity = f"images={len(group)} files={hashlib.sha256(listing.encode()).hexdigest()[:16]}"
        units.append(Unit(unit_id, ImageBatch(tuple(group)), (WHOLE_IMAGE,), identity))
    return units


def why_other_labeling(committed: Mapping, units: Sequence[Unit], model_name: str) -> str:
    """What differs between a committed unit (its commit metadata) and this run's units of
    the same video: the model, the video file (replaced, or another path) or, when neither,
    the prompts or the grouping of objects into units. For the refusal message."""
    mine = next((u for u in units if u.video_id == committed.get("video_id")), None)
    reasons = []
    if committed.get("model") not in (None, model_name):
        reasons.append(f"another model ({committed['model']}; this run: {model_name})")
    if mine is not None and committed.get("video") not in (None, mine.job.video):
        reasons.append(
            f"another video file ({safe_uri(str(committed['video']))}; "
            f"this run: {safe_uri(mine.job.video)})"
        )
    elif mine is not None and committed.get("video_identity") not in (None, mine.video_identity):
        reasons.append(
            f"the video {safe_uri(mine.job.video)} was replaced since it was labeled "
            f"({committed['video_identity']}; now {mine.video_identity})"
        )
    if not reasons and "video_identity" not in committed:
        reasons.append(
            "a unit written by an earlier version of the labeler, whose unit ids did not "
            "include the video's identity, so whether the video changed cannot be told"
        )
    return "; ".join(reasons) or "other prompts, or objects grouped into units differently"


def conflicting_jobs(jobs: Sequence[VideoJob]) -> tuple[list[VideoJob], list[Reject]]:
    """Keep the first job for each (video_id, object_id); reject later jobs that reuse one.

    Two jobs writing rows for the same (video_id, object_id) would put two rows
    per frame into the mask table; the later job is rejected, naming the first.
    """
    owner: dict[tuple[str, int], str] = {}
    kept: list[VideoJob] = []
    rejects: list[Reject] = []
    for job in jobs:
        clash = next(
            (
                (o.object_id, owner[(job.video_id, o.object_id)])
                for o in job.objects
                if (job.video_id, o.object_id) in owner
            ),
            None,
        )
        if clash is not None:
            rejects.append(
                Reject(
                    location=job.location,
                    field="video_id",
                    reason=(
                        f"video_id {job.video_id!r} object {clash[0]} is already labeled by "
                        f"{clash[1]}; use a distinct video_id or object_id"
                    ),
                    raw="",
                    video=job.video,
                )
            )
            continue
        for o in job.objects:
            owner[(job.video_id, o.object_id)] = job.location
        kept.append(job)
    return kept, rejects


def finds_with_detector(job: VideoJob) -> bool:
    """Whether a run's detector, if it has one, finds ``job``'s objects: a video without
    objects, precomputed detections or automatic-mask settings (those come first)."""
    return not job.image and not job.objects and job.detections is None and not job.auto


def detector_category_rejects(
    jobs: Sequence[VideoJob], detector
) -> tuple[list[VideoJob], list[Reject]]:
    """Reject the video jobs whose detector categories cannot be honoured: a line naming
    categories (``text``) in a run without a ``detector`` (nothing would look for them), and,
    when the run's detector has no categories of its own (no ``--text``), a line that would use
    it without naming any."""
    kept: list[VideoJob] = []
    rejects: list[Reject] = []
    for job in jobs:
        reason = None
        if detector is None and job.text:
            reason = (
                f"categories {', '.join(job.text)!r} need a detector: run with "
                "--detector owlv2|grounding-dino"
            )
        elif (
            detector is not None
            and not detector.labels
            and not job.text
            and finds_with_detector(job)
        ):
            reason = (
                'no categories for the detector: give this line a "text" (e.g. "person, dog") '
                "or run with --text"
            )
        if reason is None:
            kept.append(job)
        else:
            rejects.append(Reject(job.location, "text", reason, raw="", video=job.video))
    return kept, rejects
