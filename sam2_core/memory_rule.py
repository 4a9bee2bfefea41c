"""The memory rule: which stored frames a frame being tracked attends to.

This is SAM 2's rule, written once, used by interactive sessions and batch
tracking alike:

- Every conditioning frame (a frame with prompts) of the object is a spatial
  memory, at temporal slot 0 (unless ``max_cond_frames_in_attn`` limits them
  to the closest ones; the others then count as ordinary frames).
- The ``num_maskmem - 1`` frames just before the current one (just after it
  when tracking in reverse), spaced by ``memory_temporal_stride_for_eval``
  beyond the nearest, are spatial memories at slots 1..num_maskmem-1, where
  stored.
- Object pointers come from the conditioning frames in the past (in the
  direction of travel) and from up to ``max_obj_ptrs_in_encoder - 1`` frames
  just before the current one, each tagged with its signed temporal distance.

``reach`` says how far back a pass ever looks, and ``retention`` what of a
stored frame a streaming pass must therefore keep, so it may drop the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from .config import TrackingConfig


@dataclass(frozen=True)
class MemorySelection:
    """Spatial memories as (frame, slot, conditioning) with slot 0 for conditioning frames;
    object pointers as (frame, temporal position, conditioning). ``conditioning`` says the
    memory is a selected conditioning frame's; otherwise it is the frame's ordinary output
    (or, failing that, an unselected conditioning output)."""

    spatial: tuple[tuple[int, int, bool], ...]
    pointers: tuple[tuple[int, int, bool], ...]


def split_conditioning(
    frame: int, cond_frames: Sequence[int], max_cond: int
) -> tuple[list[int], list[int]]:
    """(selected, unselected) conditioning frames: all of them, or the ``max_cond`` closest
    (always keeping the nearest one before and the nearest one at/after ``frame``)."""
    cond = sorted(cond_frames)
    if max_cond == -1 or len(cond) <= max_cond:
        return cond, []
    if max_cond < 2:
        raise ValueError(f"max_cond_frames_in_attn must be -1 or >= 2, got {max_cond}")
    chosen: list[int] = []
    before = [t for t in cond if t < frame]
    after = [t for t in cond if t >= frame]
    if before:
        chosen.append(before[-1])
    if after:
        chosen.append(after[0])
    rest = sorted((t for t in cond if t not in chosen), key=lambda t: abs(t - frame))
    chosen += rest[: max_cond - len(chosen)]
    return chosen, [t for t in cond if t not in chosen]


def select_memory(
    frame: int,
    cond_frames: Sequence[int],
    has_other: Callable[[int], bool],
    num_frames: int,
    reverse: bool,
    cfg: TrackingConfig,
) -> MemorySelection:
    """The memories frame ``frame`` attends to when it is not a first conditioning frame.

    ``has_other(t)``: whether a non-conditioning output is stored for frame t.
    """
    selected, unselected = split_conditioning(frame, cond_frames, cfg.max_cond_frames_in_attn)
    unselected_set = set(unselected)

    def stored(t: int) -> bool:
        return has_other(t) or t in unselected_set

    step = -1 if reverse else 1  # direction of travel; memories lie behind it
    spatial = [(t, 0, True) for t in selected]
    stride = cfg.memory_temporal_stride_for_eval
    for slot in range(1, cfg.num_maskmem):
        back = cfg.num_maskmem - slot  # how many steps behind the current frame
        if back == 1:
            t = frame - step
        elif not reverse:
            t = ((frame - 2) // stride) * stride - (back - 2) * stride
        else:
            t = -(-(frame + 2) // stride) * stride + (back - 2) * stride
        if stored(t):
            spatial.append((t, slot, False))

    pointers: list[tuple[int, int, bool]] = []
    if cfg.use_obj_ptrs_in_encoder:
        max_ptrs = min(num_frames, cfg.max_obj_ptrs_in_encoder)
        if cfg.only_obj_ptrs_in_the_past_for_eval:
            past = [t for t in selected if (t >= frame if reverse else t <= frame)]
        else:
            past = list(selected)
        for t in past:
            dist = (frame - t) * step if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame - t)
            pointers.append((t, dist, True))
        for dist in range(1, max_ptrs):
            t = frame - dist * step
            if t < 0 or t >= num_frames:
                break
            if stored(t):
                pointers.append((t, dist, False))
    return MemorySelection(tuple(spatial), tuple(pointers))


def reach(cfg: TrackingConfig) -> tuple[int, int]:
    """How many frames behind the current one a pass may still read (spatial, pointers)."""
    spatial = (
        1
        + max(cfg.num_maskmem - 2, 0) * cfg.memory_temporal_stride_for_eval
        + cfg.memory_temporal_stride_for_eval
    )
    pointers = cfg.max_obj_ptrs_in_encoder - 1 if cfg.use_obj_ptrs_in_encoder else 0
    return spatial, pointers


class Keep(Enum):
    """What of a stored ordinary (non-conditioning) frame output a streaming pass keeps."""

    ALL = "all"  # the memory features, the output and the object pointer
    POINTER = "pointer"  # the object pointer (and scores) only
    NOTHING = "nothing"


def retention(
    frame: int, current: int, reverse: bool, cfg: TrackingConfig, reverse_from: int | None = None
) -> Keep:
    """What of ``frame``'s ordinary output a pass now at ``current`` must keep for the frames it
    has still to track, by ``reach``.

    A frame up to the spatial reach behind the current one (in the direction of travel) is
    kept whole; one further back but within the pointer reach keeps only its pointer; the
    rest, and frames ahead of the pass, are dropped. ``reverse_from``: a reverse pass still to
    come starts there, and its memories are the frames just after it: while a forward pass
    runs, ``reverse_from`` up to the larger reach beyond it are kept whole.
    """
    spatial, pointers = reach(cfg)
    behind = (frame - current) if reverse else (current - frame)
    seed = (
        not reverse
        and reverse_from is not None
        and reverse_from <= frame <= reverse_from + max(spatial, pointers)
    )
    if seed or 0 <= behind <= spatial:
        return Keep.ALL
    if 0 <= behind <= pointers:
        return Keep.POINTER
    return Keep.NOTHING
