"""The tracker's prompt record and the rules every prompt is checked by.

An :class:`ObjectPrompt` is what one object gets on one frame: clicks (points with labels),
a box, clicks and a box together, or a mask, in pixels of the original video. It is
checked once, when made, and the tracker takes it as is. Manifests
(``pipeline.manifest``) check their JSON values by the same rules
(:func:`is_coordinate`, :func:`check_pairing`, :func:`label_array`,
:func:`check_combination`) and map each validated entry straight into an
ObjectPrompt once the video is open. A broken rule raises :class:`PromptError`,
whose ``part`` names the offending piece ("labels[2]", "box", ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT32_MAX = 3.4028234663852886e38  # coordinates go to the model as float32
POINT_RULE = "must be [x, y] with two finite numbers within float32 range"
BOX_RULE = "must be [x1, y1, x2, y2] with four finite numbers within float32 range"
LABEL_RULE = "must be 0 (background) or 1 (foreground)"


class PromptError(ValueError):
    """A prompt that breaks a rule; ``part`` names the piece ("points[1]", "labels", "mask", or
    "" for the prompt as a whole) so callers can prefix their own location."""

    def __init__(self, part: str, reason: str):
        super().__init__(f"{part}: {reason}" if part else reason)
        self.part = part
        self.reason = reason


def is_coordinate(value: Any) -> bool:
    """A real number (not a bool) that is finite and within float32 range; huge ints are
    compared, never converted (a 400-digit int would overflow)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        return False
    if isinstance(value, (int, np.integer)):
        return abs(int(value)) <= FLOAT32_MAX
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def check_object_id(object_id: Any) -> int:
    """An object id as int; ids must be integers (not bools)."""
    if isinstance(object_id, (bool, np.bool_)) or not isinstance(object_id, (int, np.integer)):
        raise PromptError("object_id", f"object ids must be integers, got {object_id!r}")
    return int(object_id)


def check_pairing(has_points: bool, has_labels: bool) -> None:
    """Points and labels come together; ``part`` names the missing one."""
    if has_points != has_labels:
        missing, given = ("labels", "points") if has_points else ("points", "labels")
        raise PromptError(
            missing,
            f"missing: {given} given without {missing} (points and labels must be given together)",
        )


def check_combination(has_points: bool, has_box: bool, has_mask: bool) -> None:
    """A prompt needs something, and a mask prompt stands alone."""
    if has_mask and (has_points or has_box):
        raise PromptError("mask", "a mask prompt stands alone: give it without points or box")
    if not (has_points or has_box or has_mask):
        raise PromptError("", "needs points (with labels), a box, or a mask")


def point_array(points: Any) -> np.ndarray:
    """N x 2 (x, y) pixels as a float32 array; every coordinate :func:`is_coordinate`."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise PromptError("points", f"{POINT_RULE} per point, got {points!r:.80}") from None
    if array.ndim != 2 or array.shape[1] != 2:
        raise PromptError("points", f"points must be N x 2 (x, y), got shape {array.shape}")
    for index, pair in enumerate(array):
        if not all(is_coordinate(v) for v in pair):
            raise PromptError(f"points[{index}]", f"{POINT_RULE}, got {pair.tolist()}")
    return array.astype(np.float32)


def label_array(labels: Any, count: int) -> np.ndarray:
    """One label per point (1 foreground, 0 background) as an int32 array."""
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError):  # ragged nesting such as [1, [1, 2]]
        raise PromptError(
            "labels", f"labels must have one entry per point: {count} points, got {labels!r:.80}"
        ) from None
    if array.ndim != 1:
        raise PromptError(
            "labels",
            f"labels must have one entry per point: {count} points, labels shape {array.shape}",
        )
    if array.shape[0] != count:
        raise PromptError(
            "labels",
            f"has {array.shape[0]} labels for {count} points (labels must have one entry per point)",
        )
    for index, label in enumerate(array.tolist()):
        if label not in (0, 1):
            raise PromptError(f"labels[{index}]", f"{LABEL_RULE}, got {label!r}")
    return array.astype(np.int32)


def box_array(box: Any) -> np.ndarray:
    """(x1, y1, x2, y2) pixels as a float32 array of 4; every value :func:`is_coordinate`."""
    try:
        array = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is None or array.size != 4 or not all(is_coordinate(v) for v in array):
        raise PromptError("box", f"{BOX_RULE}, got {box!r:.80}")
    return array.astype(np.float32)


def mask_array(mask: Any) -> np.ndarray:
    """An H x W mask as bool (nonzero = inside)."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise PromptError("mask", f"mask must be a 2-D H x W array, got shape {array.shape}")
    return array.astype(bool)


def _frozen(array: np.ndarray | None) -> np.ndarray | None:
    if array is not None:
        array = np.array(array, copy=True)  # the caller may reuse theirs
        array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ObjectPrompt:
    """A checked prompt for one object on one frame, in pixels of the original video.

    points: N x 2 float32 (x, y) with labels: N int32 (1 foreground, 0 background); box: 4
    float32 (x1, y1, x2, y2); mask: H x W bool. Points and a box may come together; a mask
    stands alone. Any array-like is accepted and stored as a read-only array of those
    types; a broken rule raises :class:`PromptError`.
    """

    object_id: int
    frame: int
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        object_id = check_object_id(self.object_id)
        frame = self.frame
        if (
            isinstance(frame, (bool, np.bool_))
            or not isinstance(frame, (int, np.integer))
            or frame < 0
        ):
            raise PromptError("frame", f"frame must be a non-negative integer, got {frame!r}")
        check_pairing(self.points is not None, self.labels is not None)
        points = labels = box = mask = None
        if self.points is not None:
            points = point_array(self.points)
            labels = label_array(self.labels, len(points))
        if self.box is not None:
            box = box_array(self.box)
        if self.mask is not None:
            mask = mask_array(self.mask)
        check_combination(points is not None, box is not None, mask is not None)
        for name, value in (
            ("object_id", object_id),
            ("frame", int(frame)),
            ("points", _frozen(points)),
            ("labels", _frozen(labels)),
            ("box", _frozen(box)),
            ("mask", _frozen(mask)),
        ):
            object.__setattr__(self, name, value)

    @property
    def num_points(self) -> int:
        return 0 if self.points is None else len(self.points)

    def with_points_of(self, other: ObjectPrompt) -> ObjectPrompt:
        """This prompt with ``other``'s points appended (and its box, if this one has none)."""
        if other.points is None:
            points, labels = self.points, self.labels
        elif self.points is None:
            points, labels = other.points, other.labels
        else:
            points = np.concatenate([self.points, other.points])
            labels = np.concatenate([self.labels, other.labels])
        box = self.box if self.box is not None else other.box
        return ObjectPrompt(self.object_id, self.frame, points, labels, box)
