"""The batch path: tracking every prompted object through a whole video.

:func:`track_video` is the batch path the pipeline uses: all prompts are
known up front, so it streams frames and drops whatever the memory rule says
no later frame can read, keeping its state bounded whatever the video's
length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from .frames import FrameSource
from .modeling.sam2 import ImageFeatures, SAM2Model
from .prompts import ObjectPrompt
from .tracker_records import FrameResult, TrackerOptions

if TYPE_CHECKING:
    from .tracker import VideoSession


def _merge_prompts(prompts: Sequence[ObjectPrompt], num_frames: int) -> list[ObjectPrompt]:
    """One prompt per (object, frame), points of several prompts joined in the order given;
    sorted by frame, then object. Checks each frame lies in the video and how prompts combine."""
    merged: dict[tuple[int, int], ObjectPrompt] = {}
    for i, p in enumerate(prompts):
        where = f"prompt {i} (object {p.object_id}, frame {p.frame})"
        if p.frame >= num_frames:
            raise ValueError(
                f"{where}: frame {p.frame} is past the video's end ({num_frames} frames)"
            )
        key = (p.object_id, p.frame)
        earlier = merged.get(key)
        if earlier is None:
            merged[key] = p
            continue
        if p.mask is not None:
            raise ValueError(
                f"{where}: a mask prompt cannot be combined with other prompts on the same frame"
            )
        if p.box is not None and (earlier.box is not None or earlier.mask is not None):
            raise ValueError(f"{where}: more than one box (or a box and a mask) on the same frame")
        if earlier.mask is not None:
            raise ValueError(
                f"{where}: a mask prompt cannot be combined with points on the same frame"
            )
        merged[key] = earlier.with_points_of(p)
    return [merged[key] for key in sorted(merged, key=lambda k: (k[1], k[0]))]


def track_video(
    model: SAM2Model,
    frames: FrameSource,
    prompts: Sequence[ObjectPrompt],
    options: TrackerOptions | None = None,
    bounded: bool = True,
    encoder: Callable[[torch.Tensor], ImageFeatures] | None = None,
) -> Iterator[FrameResult]:
    """Track every prompted object through the whole video, each frame yielded once.

    All prompts are added first (each prompted frame becomes a conditioning frame, as with the
    official predictor when every prompt is given before propagating); then objects are tracked
    forward from the earliest prompted frame to the end, then in reverse down to frame 0.
    With ``bounded`` the session drops every stored frame the memory rule can no longer reach,
    so its state does not grow with the video's length. ``encoder``: see :class:`VideoSession`.
    """
    if not prompts:
        raise ValueError("no prompts given")
    from .tracker import VideoSession  # not at the top: sam2_core.tracker imports this module

    return track_session(VideoSession(model, frames, options, encoder), prompts, bounded)


def track_session(
    session: VideoSession, prompts: Sequence[ObjectPrompt], bounded: bool = True
) -> Iterator[FrameResult]:
    """track_video on a session the caller made (and may inspect while it runs)."""
    merged = _merge_prompts(prompts, session.num_frames)
    if not merged:
        raise ValueError("no prompts given")
    session.add_all(merged)
    start = merged[0].frame
    reverse_from = (
        start if start > 0 else None
    )  # the reverse pass reads the frames just after start
    for result in session.propagate(start, reverse=False):
        yield result
        if bounded:
            session.forget(result.frame_index, reverse=False, reverse_from=reverse_from)
    if start > 0:
        for result in session.propagate(start, reverse=True):
            if result.frame_index != start:
                yield result
            if bounded:
                session.forget(result.frame_index, reverse=True)
