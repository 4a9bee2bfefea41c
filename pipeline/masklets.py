"""Prompt-free masklets for a video job without objects: the pipeline side of
:mod:`sam2_core.discovery`.

:func:`label_masklets` opens the video, finds its objects (pass 1) and tracks them through the
whole video (pass 2), writing rows exactly as a prompted video's (``prompted`` is false: no
person prompted them; ``source`` is "auto" or "detector"). Objects are proposed by automatic masks, or by boxes: the job's
precomputed detections (:mod:`pipeline.detections`) or the run's detector
(:mod:`pipeline.detectors`). A video where nothing is found gives an empty table, committed
like any other. :func:`discovery_record` is what a unit id hashes of the settings, so the same
video and settings always make the same unit and the same rows. :func:`masklet_scores` scores
masklets against ground truth (synthetic videos): best-matching masklet per object and
duplicates.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from pipeline.detections import clip_detections, fit_detections
from pipeline.errors import InputError
from pipeline.labeling import LabelStats, _TimedFrames, label_prompts
from pipeline.manifest import VideoJob
from pipeline.masks import MASK_SCHEMA, ObjectOrigin
from pipeline.storage import safe_uri
from pipeline.video import open_video
from sam2_core.discovery import DEFAULT_DISCOVER_EVERY, DiscoverySettings, discover_objects
from sam2_core.mask_generator import MaskGeneratorSettings
from sam2_core.proposals import (
    AutomaticMasks,
    BoxProposals,
    Detection,
    Proposal,
    ProposalSource,
)


def discovery_settings(job: VideoJob) -> DiscoverySettings:
    """The settings a job without objects is labeled with: its ``auto`` automatic-mask
    settings and its keyframe spacing (``discover_every``, set when planned)."""
    return DiscoverySettings(
        every=job.discover_every or DEFAULT_DISCOVER_EVERY,
        generator=MaskGeneratorSettings(**dict(job.auto)),
    )


def discovery_record(job: VideoJob) -> dict:
    """The discovery settings of a job as plain JSON values (hashed into its unit id)."""
    settings = discovery_settings(job)
    record = {k: v for k, v in dataclasses.asdict(settings).items() if k != "generator"}
    record["auto"] = dict(job.auto)
    if job.detections is not None:
        record["detections"] = [given.record() for given in job.detections]
    elif job.detector is not None:
        record["detector"] = job.detector.record()
    return record


def proposal_source(
    model, job: VideoJob, frames, detector=None, storage_options: dict | None = None
) -> ProposalSource | None:
    """Where ``job``'s objects are proposed: its precomputed detections (each frame with some
    is a keyframe), the run's detector on every ``discover_every``-th frame (``detector``: the
    worker's loaded one; loaded here when None, its weights read with ``storage_options``), or
    None for automatic masks. Raises InputError naming the line and field for detections that
    do not fit the video."""
    n, h, w = len(frames), frames.height, frames.width
    if job.detections is not None:
        try:
            by_frame = fit_detections(job.detections, n, h, w)
        except ValueError as error:
            source = f" ({safe_uri(job.detections_from)})" if job.detections_from else ""
            raise InputError(f"{job.location}{source}: {error}") from None
        return BoxProposals(model, sorted(by_frame), lambda f, _image: by_frame.get(f, []))
    if job.detector is None:
        return None
    if detector is None:
        from pipeline.detectors import load_spec

        detector = load_spec(job.detector, str(getattr(model, "device", "cpu")), storage_options)
    labels = job.detector.labels

    def detect(_frame: int, image: np.ndarray) -> list[Detection]:
        return clip_detections(detector.detect(image, labels), h, w)

    return BoxProposals(model, discovery_settings(job).keyframes(n), detect)


def label_masklets(
    model,
    job: VideoJob,
    *,
    run_id: str,
    model_name: str,
    storage_options: dict | None = None,
    tracker_options=None,
    on_frame: Callable[[int, int], None] | None = None,
    encoder=None,
    detector=None,
) -> tuple[pa.Table, LabelStats]:
    """Every object of ``job.video`` found and tracked; one row per (object, frame).

    ``on_frame(done, total)`` counts pass 1's frames, then pass 2's (total: twice the frames).
    ``detector``: the loaded detector of ``job.detector`` (:func:`proposal_source`).
    """
    started = time.perf_counter()
    settings = discovery_settings(job)
    with open_video(job.video, storage_options=storage_options) as source:
        frames = _TimedFrames(source)
        n = len(frames)
        seen = 0

        def pass_one(_frame: int) -> None:
            nonlocal seen
            seen += 1
            if on_frame is not None:
                on_frame(min(seen, n), 2 * n)

        source = _TimedProposals(
            proposal_source(model, job, frames, detector, storage_options)
            or AutomaticMasks(model, settings.every, settings.generator, settings.min_area)
        )
        found = discover_objects(
            model, frames, settings, tracker_options, encoder, pass_one, source
        )
        discover_s = time.perf_counter() - started
        if not found:
            stats = LabelStats(
                frames=n,
                rows=0,
                objects=0,
                height=frames.height,
                width=frames.width,
                wall_s=discover_s,
                decode_s=frames.seconds,
                discover_s=discover_s,
                propose_s=source.seconds,
            )
            return MASK_SCHEMA.empty_table(), stats
        origins = {
            d.object_id: ObjectOrigin("auto" if d.box is None else "detector", d.category, d.score)
            for d in found
        }
        table, stats = label_prompts(
            model,
            frames,
            [d.prompt() for d in found],
            video_id=job.video_id,
            run_id=run_id,
            model_name=model_name,
            tracker_options=tracker_options,
            on_frame=None if on_frame is None else lambda done, total: on_frame(n + done, 2 * n),
            encoder=encoder,
            prompted=False,
            origins=origins,
            started=started,
        )
        return table, dataclasses.replace(stats, discover_s=discover_s, propose_s=source.seconds)


class _TimedProposals:
    """A proposal source that adds up the seconds its proposals take (``seconds``)."""

    def __init__(self, source: ProposalSource):
        self.source = source
        self.seconds = 0.0

    def keyframes(self, num_frames: int) -> Sequence[int]:
        return self.source.keyframes(num_frames)

    def propose(self, frame_index: int, image: np.ndarray) -> list[Proposal]:
        started = time.perf_counter()
        try:
            return self.source.propose(frame_index, image)
        finally:
            self.seconds += time.perf_counter() - started


@dataclasses.dataclass(frozen=True)
class MaskletScores:
    """How masklets match ground truth on one or more videos.

    best_j: per ground-truth object, the mean J (mask IoU; 1 where both are empty) over the
    frames it is present of its best-matching masklet; first_frame: the frame it first shows;
    masklets: how many there are; duplicates: how many duplicate an earlier one (mask IoU above
    0.8 on more than half the frames both are present).
    """

    best_j: tuple[float, ...]
    first_frame: tuple[int, ...]
    masklets: int
    duplicates: int


def masklet_scores(
    predicted: Mapping[int, np.ndarray], truth: Mapping[int, np.ndarray]
) -> MaskletScores:
    """Score one video: ``predicted`` and ``truth`` map object id -> T x H x W bool."""
    best, first = [], []
    for track in truth.values():
        present = track.any(axis=(1, 2))
        first.append(int(np.argmax(present)))
        score = 0.0
        for masklet in predicted.values():
            inter = (masklet[present] & track[present]).sum(axis=(1, 2))
            union = (masklet[present] | track[present]).sum(axis=(1, 2))
            score = max(score, float(np.mean(inter / union)))
        best.append(score)
    ids = sorted(predicted)
    duplicates = 0
    for k, b in enumerate(ids):
        for a in ids[:k]:
            both = predicted[a].any(axis=(1, 2)) & predicted[b].any(axis=(1, 2))
            if not both.any():
                continue
            inter = (predicted[a][both] & predicted[b][both]).sum(axis=(1, 2))
            union = (predicted[a][both] | predicted[b][both]).sum(axis=(1, 2))
            if (inter / union > 0.8).sum() > both.sum() / 2:
                duplicates += 1
                break
    return MaskletScores(tuple(best), tuple(first), len(ids), duplicates)
