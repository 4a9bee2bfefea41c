"""The records a manifest is validated into: a :class:`VideoJob` per video or image to label,
a :class:`Reject` per problem found (read by :mod:`pipeline.manifest`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.detections import GivenDetection
from pipeline.detectors import DetectorSpec
from pipeline.manifest_objects import ObjectSpec


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
    # a video without objects: its precomputed detections (pipeline.detections; None: none
    # given), and the file they came from ("" when given inline or not yet read)
    detections: tuple[GivenDetection, ...] | None = None
    detections_from: str = ""
    # a video without objects or detections, with --detector: the run's detector (set by
    # pipeline.plan, with this line's categories when it names them in ``text``)
    detector: DetectorSpec | None = None
    # a video without objects: the categories its ``text`` names for the run's detector (()
    # when it names none)
    text: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reject:
    """One problem with a manifest entry: where, which field, why, and the raw entry text."""

    location: str
    field: str
    reason: str
    raw: str
    video: str | None = None
