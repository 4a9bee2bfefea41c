"""Prompt-free masklets: find every object of a video and track it through the whole video.

Pass 1 (:func:`discover_objects`) walks the video forward with a
:class:`~sam2_core.tracker.VideoSession`. On each keyframe its proposal source
(:mod:`sam2_core.proposals`: automatic masks on frame 0 and every ``every`` frames by default,
or a detector's boxes) proposes objects, which are compared with the masks its objects were
just tracked to: a proposal one of them covers (mask IoU above ``covered_iou``, or at least
``covered_fraction`` of the proposal's mask inside it) is that object again; so is one that
duplicates a new one proposed before it. The rest start new objects there (a mask prompt on
the keyframe, or the detector's box prompt) and tracking goes on to the next keyframe. Only
what the memory rule still needs is kept, so pass 1's state is bounded on long videos.

Pass 2 is the ordinary batch path (:func:`~sam2_core.tracker.track_video`) over every
discovered object, each prompted with its discovery mask on its keyframe: forward and in
reverse through the whole video, so an object first found on a later keyframe also gets masks
on the frames before it, and the result depends only on the video and the settings (object ids
1, 2, ... in order of discovery: keyframe, then the source's priority order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .frames import FrameSource
from .mask_generator import MaskGeneratorSettings
from .modeling.sam2 import SAM2Model
from .prompts import ObjectPrompt
from .proposals import AutomaticMasks, Proposal, ProposalSource
from .tracker import FrameResult, TrackerOptions, VideoSession, track_video

DEFAULT_DISCOVER_EVERY = 15
"""Frames between keyframes: half a second at 30 fps (0.6 s at 24 fps), short enough that an
object entering the view is found soon after, long enough that automatic masks (the costly
part) run on one frame in fifteen."""


@dataclass(frozen=True)
class DiscoverySettings:
    """How objects are found.

    every: frames between keyframes (frame 0, every, 2 * every, ...); covered_iou: mask IoU
    above which a keyframe mask is an object already tracked there (or another new mask);
    covered_fraction: share of a keyframe mask lying inside one such mask above which it is
    that object too (a part of it); min_area: keyframe masks with fewer pixels are ignored;
    generator: the automatic-mask settings.
    """

    every: int = DEFAULT_DISCOVER_EVERY
    covered_iou: float = 0.5
    covered_fraction: float = 0.6
    min_area: int = 16
    generator: MaskGeneratorSettings = field(default_factory=MaskGeneratorSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.every, (int, np.integer)) or self.every < 1:
            raise ValueError(
                f"discover every must be a positive number of frames, got {self.every!r}"
            )
        for name in ("covered_iou", "covered_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"DiscoverySettings.{name} must be in (0, 1], got {value}")
        if self.min_area < 0:
            raise ValueError(f"DiscoverySettings.min_area must be >= 0, got {self.min_area}")

    def keyframes(self, num_frames: int) -> range:
        return range(0, num_frames, self.every)


@dataclass(frozen=True)
class Discovered:
    """An object found on a keyframe: its id, the keyframe and its mask there (H x W bool).

    box: the detector's box it starts from (then its prompt is that box, and ``mask`` only
    what its coverage was judged by); score, category: the detection's (None for automatic
    masks)."""

    object_id: int
    frame: int
    mask: np.ndarray
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    category: str | None = None

    def prompt(self) -> ObjectPrompt:
        if self.box is not None:
            return ObjectPrompt(self.object_id, self.frame, box=self.box)
        return ObjectPrompt(self.object_id, self.frame, mask=self.mask)


def discover_objects(
    model: SAM2Model,
    frames: FrameSource,
    settings: DiscoverySettings | None = None,
    options: TrackerOptions | None = None,
    encoder: Callable | None = None,
    on_frame: Callable[[int], None] | None = None,
    source: ProposalSource | None = None,
) -> list[Discovered]:
    """Pass 1: every object found on the keyframes, in id order (see the module docstring).

    ``options`` and ``encoder`` as for :class:`~sam2_core.tracker.VideoSession`; ``on_frame(f)``
    is called after each frame tracked (keyframes are tracked twice: when reached, and again
    when the next stretch starts from them with the new objects). ``source``: where proposals
    come from (default: automatic masks with ``settings.generator`` every ``settings.every``
    frames); ``settings`` still decides coverage."""
    settings = settings or DiscoverySettings()
    if source is None:
        source = AutomaticMasks(model, settings.every, settings.generator, settings.min_area)
    session = VideoSession(model, frames, options, encoder)
    found: list[Discovered] = []
    tracked: torch.Tensor | None = None  # masks of the objects so far on the current keyframe
    keyframes = list(source.keyframes(len(frames)))
    with torch.inference_mode():
        for number, key in enumerate(keyframes):
            for p in _new_proposals(source.propose(key, frames[key]), tracked, settings):
                found.append(Discovered(len(found) + 1, key, p.mask, p.box, p.score, p.category))
                session.add(found[-1].prompt())
            if not found or number + 1 == len(keyframes):
                continue  # after the last keyframe nothing more is compared: pass 2 tracks on
            stop = keyframes[number + 1]
            tracked = None
            for result in session.propagate(key, max_frames=stop - key):
                if result.frame_index == stop and stop != key:
                    tracked = _present_masks(result)
                elif result.frame_index < stop:
                    # keep what re-tracking `stop` (next stretch's start) reads
                    session.forget(result.frame_index, reverse=False)
                if on_frame is not None:
                    on_frame(result.frame_index)
    return found


def track_discovered(
    model: SAM2Model,
    frames: FrameSource,
    found: list[Discovered],
    options: TrackerOptions | None = None,
    encoder: Callable | None = None,
) -> Iterator[FrameResult]:
    """Pass 2: the discovered objects through the whole video (:func:`track_video`)."""
    return track_video(model, frames, [d.prompt() for d in found], options, encoder=encoder)


def _present_masks(result: FrameResult) -> torch.Tensor:
    """N x H x W booleans of the objects the model judges present on the frame."""
    present = (result.object_score_logits.reshape(-1) > 0).cpu()
    return (result.mask_logits > 0).cpu()[present]


def _new_proposals(
    proposals: list[Proposal], tracked: torch.Tensor | None, settings: DiscoverySettings
) -> list[Proposal]:
    """The proposals (in the source's priority order) that no tracked object covers and that
    duplicate no proposal kept before them."""
    kept: list[Proposal] = []
    covering = [] if tracked is None else [t.numpy() for t in tracked]
    for proposal in proposals:
        if any(_covers(other, proposal.mask, settings) for other in covering):
            continue
        if any(_covers(other.mask, proposal.mask, settings) for other in kept):
            continue
        kept.append(proposal)
    return kept


def _covers(other: np.ndarray, mask: np.ndarray, settings: DiscoverySettings) -> bool:
    inter = np.logical_and(other, mask).sum()
    if inter == 0:
        return False
    union = np.logical_or(other, mask).sum()
    return inter / union > settings.covered_iou or inter / mask.sum() >= settings.covered_fraction
